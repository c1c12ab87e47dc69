"""Record batches built by the native engine (kafka/recordbatch.py): a message alone is aiokafka's own batch, to
the byte; several messages are records in order in one batch, within its size limit; the sink gives a batch every
large message waiting for the same partition.

The real broker's side: every Kafka test of the native pass sends through
them (the sink builds the large messages' batches when the engine is built),
tests/test_outage.py takes them through a broker outage, and the last test
here has several messages a batch read back by kcat.
"""

from __future__ import annotations

import asyncio
import json
import random

import pytest
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from test_kafka_sink import FakeProducer as FakeSinkProducer
from test_kafka_sink import records_of

from pt_collector.kafka.message import Message, message_headers
from pt_collector.kafka.recordbatch import (
    BUILT_FROM,
    NATIVE_CODECS,
    PreparedBatch,
    batch_preparer,
    prepare,
    send_built,
)
from pt_collector.kafka.sink import KafkaSink
from pt_collector.pipeline.batch import Batcher
from pt_collector.pipeline.engine import NATIVE

pytestmark = pytest.mark.skipif(not NATIVE, reason="the native engine is not built")

CODEC_BITS = {"none": 0, "snappy": DefaultRecordBatch.CODEC_SNAPPY}
TIMESTAMP_MS = 1_764_000_000_123
LIMIT = 900 * 1024 + 16 * 1024  # ProducerSettings().max_batch_bytes


def aiokafka_batch(message: Message, codec: str, state: tuple[int, int, int] | None = None) -> bytes:
    """What aiokafka's send() puts on the wire for the message alone (its builder, as its BatchBuilder uses it)."""
    builder = DefaultRecordBatchBuilder(2, CODEC_BITS[codec], 0, -1, -1, 0, 1 << 31)
    if state:
        builder.set_producer_state(*state)
    builder.append(0, TIMESTAMP_MS, message.key, message.value, message.headers)
    return bytes(builder.build())


def native_batch(message: Message, codec: str, state: tuple[int, int, int] | None = None) -> bytes:
    from pt_collector import _native

    data, used = _native.record_batch([(message.key, list(message.parts), message.headers)], codec, TIMESTAMP_MS, 0)
    assert used == 1  # the first message always goes in, whatever the limit
    if state:
        PreparedBatch(data, 1)._set_producer_state(*state)
    return bytes(data)


def json_lines(n: int, seed: int) -> bytes:
    rng = random.Random(seed)
    return b"".join(
        b'{"schema":1,"seq":%d,"src":{"addr":"fc00::%x","t_ns":%d},"hops":[%s]}\n'
        % (i, rng.randrange(1 << 16), rng.randrange(1 << 62), b",".join(b"%d" % rng.randrange(4096) for _ in range(5)))
        for i in range(n)
    )


VALUES = {
    "empty": b"",
    "one record": json_lines(1, 1),
    "a message of 1,000 records (many 32 KiB blocks)": json_lines(1000, 2),
    "exactly two blocks": (json_lines(400, 3) * 3)[: 64 * 1024],
    "incompressible": random.Random(4).randbytes(50_000),
}


@pytest.mark.parametrize("codec", CODEC_BITS)
@pytest.mark.parametrize("name", VALUES)
@pytest.mark.parametrize("state", [None, (4242, 3, 1_000_001)])
def test_the_batch_is_aiokafkas_to_the_byte(codec: str, name: str, state: tuple[int, int, int] | None) -> None:
    value = VALUES[name]
    message = Message(b"fc00::1", value, message_headers("json", value.count(b"\n")), value.count(b"\n"))
    assert native_batch(message, codec, state) == aiokafka_batch(message, codec, state)
    view = memoryview(value)  # as the sink cuts a message: views of the engine's bytes, never joined
    parts = [view[:7], b"", view[7 : len(value) // 3], view[len(value) // 3 :]]
    in_parts = Message(message.key, parts, message.headers, message.count)
    assert in_parts.nbytes == len(value) and native_batch(in_parts, codec, state) == native_batch(message, codec, state)
    assert in_parts == message and in_parts.value == value


@pytest.mark.parametrize("codec", CODEC_BITS)
def test_aiokafka_reads_back_the_message(codec: str) -> None:
    value = json_lines(500, 5)
    message = Message(b"fc00::7", value, message_headers("msgpack", 500), 500)
    batch = DefaultRecordBatch(native_batch(message, codec, (9, 0, 17)))
    assert batch.validate_crc()
    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (9, 0, 17)
    assert batch.compression_type == CODEC_BITS[codec]
    (record,) = list(batch)
    assert (record.key, record.value, record.timestamp) == (message.key, value, TIMESTAMP_MS)
    assert record.headers == message.headers


def test_several_messages_are_records_in_order_and_the_batch_keeps_to_its_limit() -> None:
    messages = [
        Message(b"fc00::%d" % (i % 3), json_lines(400, 10 + i), message_headers("json", 400), 400) for i in range(12)
    ]
    whole = prepare(messages, "snappy", 1 << 30)
    assert whole.record_count() == 12
    batch = DefaultRecordBatch(bytes(whole._build()))
    assert batch.validate_crc() and batch.next_offset == 12  # the last offset delta is 11
    read = [(r.offset, r.key, r.value, r.headers) for r in batch]
    assert read == [(i, m.key, m.value, m.headers) for i, m in enumerate(messages)]
    limit = len(whole._build()) // 3  # about four messages' worth, compressed
    cut = prepare(messages, "snappy", limit)
    used = cut.record_count()
    assert 2 <= used < 12 and len(cut._build()) <= limit
    assert [r.value for r in DefaultRecordBatch(bytes(cut._build()))] == [m.value for m in messages[:used]]
    single = prepare(messages, "snappy", 100)  # a first message over the limit still goes, alone
    assert single.record_count() == 1 and single.size() > 100


def test_which_settings_build_batches() -> None:
    assert batch_preparer("snappy", LIMIT) is not None
    assert NATIVE_CODECS == ("snappy",)  # the engine builds none too (above), but aiokafka's own is faster there
    assert batch_preparer("none", LIMIT) is None
    assert batch_preparer("zstd", LIMIT) is None  # through send(), aiokafka compresses
    assert batch_preparer("snappy", LIMIT, native=False) is None  # PTC_ENGINE=python


def test_a_renewed_producer_writes_its_own_state_in() -> None:
    message = Message(b"k", json_lines(50, 6), message_headers("json", 50), 50)
    prepared = prepare([message], "snappy", LIMIT)
    prepared._set_producer_state(1, 0, 10)
    first = bytes(prepared._build())
    prepared._set_producer_state(2, 0, 0)  # sent again through a new producer: new id, sequence from 0
    assert bytes(prepared._build()) != first
    assert DefaultRecordBatch(bytes(prepared._build())).validate_crc()
    assert (prepared.record_count(), prepared.closed()) == (1, True)


def test_a_send_after_a_built_batch_starts_a_batch_of_its_own() -> None:
    """aiokafka appends a send() to the last batch of its partition when it can: never to a built one."""
    from aiokafka.producer.message_accumulator import MessageBatch
    from aiokafka.structs import TopicPartition

    async def run() -> object:
        prepared = prepare([Message(b"k", b"x\n", [], 1)], "snappy", LIMIT)
        built = MessageBatch(TopicPartition("t", 0), prepared, 30.0, 0.0)
        return built.append(b"k", b"y\n", None, headers=[])

    assert asyncio.run(run()) is None


class FakeProducer:
    """aiokafka's producer as send_built sees it: metadata, its partitions, its partitioner, send_batch."""

    def __init__(self, partitions: int) -> None:
        self.client = self._metadata = self
        self.partitions = partitions
        self.sent: list[tuple[str, int]] = []

    async def _wait_on_metadata(self, topic: str) -> None:
        await asyncio.sleep(0)

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    def _partition(self, topic, partition, key, value, serialized_key, serialized_value) -> int:
        return sum(serialized_key) % self.partitions

    async def send_batch(self, batch: PreparedBatch, topic: str, *, partition: int) -> str:
        self.sent.append((topic, partition))
        return "future"


def test_a_built_batch_goes_to_its_keys_partition() -> None:
    producer = FakeProducer(4)
    batch = prepare([Message(b"\x01\x02", b"x\n", [], 1)], "none", LIMIT)
    assert asyncio.run(send_built(producer, "t", b"\x01\x02", batch)) == "future"
    assert producer.sent == [("t", 3)]


class BatchTakingProducer(FakeSinkProducer):
    """The sink's producer that also takes built batches: what it got, in order, and how; a key's partition is
    the sum of its bytes modulo `partitions`."""

    def __init__(self, partitions: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.partitions = partitions
        self.batches: list[list[bytes]] = []  # the keys of each built batch's records

    def partition(self, topic: str, key: bytes) -> int:
        return sum(key) % self.partitions

    async def send_batch(self, topic: str, key: bytes, batch: PreparedBatch) -> asyncio.Future:
        records = list(DefaultRecordBatch(bytes(batch._build())))
        assert len(records) == batch.record_count()
        self.batches.append([record.key for record in records])
        for record in records[:-1]:
            await self.send(topic, ("built", record.value), record.key, record.headers)
        return await self.send(topic, ("built", records[-1].value), records[-1].key, records[-1].headers)


def test_the_sink_builds_the_large_messages_and_sends_the_small_ones_in_order() -> None:
    records = records_of(1200, sources=2)  # two sources: messages of 400 records (about 270 KB), then what is left

    async def run() -> list:
        producer = BatchTakingProducer(auto_ack=True)
        sink = KafkaSink(producer, "probes", Batcher("json", 400, 10**9, 10.0), prepare=batch_preparer("snappy", LIMIT))
        async with sink:
            await sink.write(records[:1000])
            await sink.flush()
            await sink.write(records[1000:])
            await sink.flush()
        assert (sink.counters.acked, sink.counters.messages) == (1200, len(producer.messages))
        return producer.messages

    sent = asyncio.run(run())
    how = [(isinstance(v, tuple), len(v[1] if isinstance(v, tuple) else v) >= BUILT_FROM) for _, _, v, _ in sent]
    assert how == [(True, True)] * 2 + [(False, False)] * 4  # 2 x 400 records built; the rest sent, 100 a message
    assert sent_per_source(sent) == by_source(records)  # every record, in its source's order


def sent_per_source(sent: list) -> dict[bytes, list[int]]:
    got: dict[bytes, list[int]] = {}
    for _, key, value, _ in sent:
        lines = (value[1] if isinstance(value, tuple) else value).splitlines()
        got.setdefault(key, []).extend(json.loads(line)["sequence"] for line in lines)
    return got


def by_source(records) -> dict[bytes, list[int]]:
    want: dict[bytes, list[int]] = {}
    for r in records:
        want.setdefault(r.src.addr.encode(), []).append(r.sequence)
    return want


@pytest.mark.parametrize("partitions", [1, 2])
def test_the_sink_gives_a_batch_every_large_message_waiting_for_its_partition(partitions: int) -> None:
    """Messages cut while the send loop waited go out together: one batch per partition, each source in order;
    a small message of the partition stops the gathering (it would otherwise overtake the large ones)."""
    records = records_of(3600, sources=4)  # 900 records per source: two messages of 400, a small one of 100

    async def run() -> tuple[BatchTakingProducer, KafkaSink]:
        producer = BatchTakingProducer(partitions, auto_ack=True)
        sink = KafkaSink(producer, "probes", Batcher("json", 400, 10**9, 10.0), prepare=batch_preparer("snappy", LIMIT))
        async with sink:
            await sink.write(records)  # every message is cut before the send loop runs
            await sink.flush()
        return producer, sink

    producer, sink = asyncio.run(run())
    assert (sink.counters.acked, sink.counters.messages, sink.counters.in_flight) == (3600, 12, 0)
    assert sum(map(len, producer.batches)) == 8  # the 8 large messages, built; the 4 small ones sent
    assert len(producer.batches) == partitions  # all of a partition's large messages in one batch
    for keys in producer.batches:
        assert len({producer.partition("probes", key) for key in keys}) == 1
    assert sent_per_source(producer.messages) == by_source(records)  # every record, in its source's order


def test_a_batch_the_engine_cannot_build_fails_its_messages_and_the_sink_goes_on() -> None:
    records = records_of(1600, sources=2)
    preparer = batch_preparer("snappy", LIMIT)
    calls = []

    def prepare_once_wrong(messages):
        calls.append(len(messages))
        if len(calls) == 1:
            raise ValueError("no room")
        return preparer(messages)

    async def run() -> KafkaSink:
        producer = BatchTakingProducer(auto_ack=True)
        sink = KafkaSink(producer, "probes", Batcher("json", 400, 10**9, 10.0), prepare=prepare_once_wrong)
        async with sink:
            await sink.write(records[:800])  # two messages of 400, one batch: it fails
            await sink.flush()
            await sink.write(records[800:])
            await sink.flush()
        return sink

    sink = asyncio.run(run())
    assert (sink.counters.failed, sink.counters.errors, sink.counters.acked) == (800, 2, 800)
    assert sink.counters.last_error == "its record batch could not be built: no room"
    assert sink.held == 0 and calls == [2, 2]


def test_the_sink_cuts_batches_at_their_limit() -> None:
    records = records_of(4000, sources=2)

    async def run() -> BatchTakingProducer:
        producer = BatchTakingProducer(auto_ack=True)
        small_limit = 150_000  # two 400-record messages compress to about 100 KB: at most two a batch
        sink = KafkaSink(
            producer, "probes", Batcher("json", 400, 10**9, 10.0), prepare=batch_preparer("snappy", small_limit)
        )
        async with sink:
            await sink.write(records)
            await sink.flush()
        assert sink.counters.acked == 4000
        return producer

    producer = asyncio.run(run())
    assert sum(map(len, producer.batches)) == 10 and max(map(len, producer.batches)) in (2, 3)
    assert len(producer.batches) >= 4
    assert sent_per_source(producer.messages) == by_source(records)


def test_several_messages_a_batch_reach_the_real_broker(kafka_broker) -> None:
    """Into the real broker (acks=all, idempotent): batches of several messages are taken, their sequence
    numbers right (the broker refuses a gap), and kcat (librdkafka) reads back every message in order."""
    from test_kafka_delivery import kcat_messages, new_topic

    from pt_collector.kafka.client import Cluster, ProducerSettings
    from pt_collector.kafka.message import decode_message
    from pt_collector.kafka.sink import open_kafka_sink

    records = records_of(6000, sources=3)
    topic = new_topic(kafka_broker)
    sizes: list[int] = []

    async def run() -> KafkaSink:
        settings = ProducerSettings(compression="snappy")
        async with open_kafka_sink(Cluster(kafka_broker), settings, topic, Batcher("json", 400, 10**9, 10.0)) as sink:
            producer = sink._producer
            send_batch = producer.send_batch

            async def counted(topic: str, key: bytes, batch: PreparedBatch) -> asyncio.Future:
                sizes.append(batch.record_count())
                return await send_batch(topic, key, batch)

            producer.send_batch = counted
            for start in range(0, len(records), 3000):
                await sink.write(records[start : start + 3000])
            await sink.flush()
        return sink

    sink = asyncio.run(run())
    assert (sink.counters.acked, sink.counters.failed, sink.counters.messages) == (6000, 0, 15)
    assert sum(sizes) == 15 and max(sizes) > 1, sizes
    messages = kcat_messages(kafka_broker, topic)
    assert len(messages) == 15
    got: dict[bytes, list[int]] = {}
    for _, key, headers, value in messages:
        got.setdefault(key, []).extend(r.sequence for r in decode_message(value, headers))
    assert got == by_source(records)
