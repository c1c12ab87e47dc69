"""A fleet: several collectors feeding one topic, read by one consumer group (docs/deploy.md, "A fleet").

Two `ptc collect` processes, each on its own veth pair (its own "router"),
send the probes of different source nodes into ONE topic of the real broker
with 4 partitions. A consumer group of two aiokafka consumers, settled
before the probes arrive, then reads the topic: every record must be read
exactly once across the two, each source's records in the order they were
sent, each source in one partition (the one the default partitioner gives
its key, the source address), and both consumers must have had work.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from collections import defaultdict
from dataclasses import dataclass

import msgspec
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import murmur2
from netns import veth_pair
from test_collect_veth import CollectProcess

from pt_collector import Decoder, decode_message
from pt_collector.codec.encode import ethernet
from pt_collector.codec.generate import generate
from pt_collector.codec.record import Record

PARTITIONS = 4
SOURCES = 8  # 2001:db8:1::1 .. 2001:db8:8::1; their keys hash onto all 4 partitions
PER_SOURCE = 60
GROUP_SETTLE_S = 30.0
READ_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Read:
    consumer: int
    partition: int
    offset: int
    key: bytes
    records: tuple[Record, ...]


def plain(record: Record) -> Record:
    return msgspec.structs.replace(record, capture_ns=0)


def probes_by_collector() -> tuple[list[bytes], list[bytes]]:
    """Frames for collector A (sources 1..4) and B (sources 5..8), in the order each source sent them."""
    a, b = [], []
    for i, (_, packet) in enumerate(generate(SOURCES * PER_SOURCE, sources=SOURCES, seed=21)):
        (a if i % SOURCES < SOURCES // 2 else b).append(ethernet(packet))
    return a, b


def by_source(records: list[Record]) -> dict[str, list[Record]]:
    grouped: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        grouped[record.src.addr].append(plain(record))
    return dict(grouped)


async def create_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    finally:
        await admin.close()


class Group:
    """Two consumers of one group: settle, then read until `total` records or the timeout."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        group_id = f"fleet-readers-{uuid.uuid4().hex[:8]}"
        options = dict(bootstrap_servers=bootstrap, group_id=group_id, auto_offset_reset="earliest")
        self.consumers = [AIOKafkaConsumer(topic, client_id=f"reader-{n}", **options) for n in range(2)]
        self.reads: list[Read] = []

    async def start(self) -> None:
        for consumer in self.consumers:
            await consumer.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GROUP_SETTLE_S
        settled = 0
        while settled < 5:  # both members in, every partition held by exactly one of them, for half a second
            # a member keeps its old assignment until it has seen the rebalance, so overlaps come and go
            assigned = [{tp.partition for tp in c.assignment()} for c in self.consumers]
            split = all(assigned) and not assigned[0] & assigned[1]
            settled = settled + 1 if split and sorted(assigned[0] | assigned[1]) == list(range(PARTITIONS)) else 0
            assert loop.time() < deadline, f"the group did not settle: {assigned}"
            await asyncio.sleep(0.1)

    async def read(self, total: int) -> None:
        def keep(n: int, batches: dict) -> None:
            for tp, messages in batches.items():
                for m in messages:
                    self.reads.append(Read(n, tp.partition, m.offset, m.key, tuple(decode_message(m.value, m.headers))))

        async def drain(n: int, consumer: AIOKafkaConsumer) -> None:
            while sum(len(r.records) for r in self.reads) < total:
                keep(n, await consumer.getmany(timeout_ms=200))

        await asyncio.wait_for(asyncio.gather(*(drain(n, c) for n, c in enumerate(self.consumers))), READ_TIMEOUT_S)
        for n, consumer in enumerate(self.consumers):  # a second above the count: a duplicate would show now
            keep(n, await consumer.getmany(timeout_ms=1000))

    async def stop(self) -> None:
        for consumer in self.consumers:
            await consumer.stop()


def collector(iface: str, bootstrap: str, topic: str) -> CollectProcess:
    return CollectProcess(
        [sys.executable, "-m", "pt_collector.cli.main", "collect", "--iface", iface, "--topic", topic,
         "--brokers", bootstrap, "--stats-interval", "0.2", "--linger-ms", "20", "--batch-size", "16"],
    )  # fmt: skip


def test_two_collectors_one_topic_one_consumer_group_every_record_exactly_once(veth, kafka_broker):
    topic = f"fleet-{uuid.uuid4().hex[:8]}"
    frames_a, frames_b = probes_by_collector()
    decoder = Decoder()
    expected = by_source([decoder.decode(frame) for frame in frames_a + frames_b])
    assert len(expected) == SOURCES
    total = SOURCES * PER_SOURCE

    async def run() -> Group:
        await create_topic(kafka_broker, topic)
        group = Group(kafka_broker, topic)
        await group.start()
        try:
            with veth_pair() as second:
                routers = [(veth, frames_a), (second, frames_b)]
                collectors = [collector(pair.rx_iface, kafka_broker, topic) for pair, _ in routers]
                try:
                    # in threads: the consumers' heartbeats go on meanwhile, so the group stays as it is
                    await asyncio.gather(
                        *(
                            asyncio.to_thread(proc.wait_capturing, pair.rx_iface)
                            for (pair, _), proc in zip(routers, collectors, strict=True)
                        )
                    )
                    # both routers' probes at once, as a fleet sends them
                    await asyncio.gather(*(asyncio.to_thread(pair.send, frames) for pair, frames in routers))
                    await group.read(total)
                finally:
                    codes = [proc.stop(signal.SIGTERM) for proc in collectors]
                assert codes == [0, 0], [proc.lines[-3:] for proc in collectors]
        finally:
            await group.stop()
        return group

    group = asyncio.run(run())
    reads = group.reads

    # exactly once: no message read twice, no record missing or extra
    positions = [(r.partition, r.offset) for r in reads]
    assert len(positions) == len(set(positions)), "a message was read twice"
    assert sum(len(r.records) for r in reads) == total

    # each source in one partition, the one its key (the source address) hashes to
    partitions: dict[str, set[int]] = defaultdict(set)
    for r in reads:
        for record in r.records:
            assert record.src.addr.encode() == r.key  # one source per message, keyed by it
            partitions[record.src.addr].add(r.partition)
    for source, found in partitions.items():
        assert found == {(murmur2(source.encode()) & 0x7FFFFFFF) % PARTITIONS}, source

    # each source's records in the order sent: by offset within its partition
    in_offset_order = [rec for r in sorted(reads, key=lambda r: (r.partition, r.offset)) for rec in r.records]
    assert by_source(in_offset_order) == expected

    # the group shared the work: each consumer read partitions of its own
    readers = {n: {r.partition for r in reads if r.consumer == n} for n in (0, 1)}
    assert readers[0] and readers[1] and not readers[0] & readers[1], readers
