"""Record batches built by the native engine (kafka/recordbatch.py) are aiokafka's own, to the byte.

The real broker's side: every Kafka test of the native pass sends through
them (the sink builds each message's batch when the engine is built), and
tests/test_outage.py takes them through a broker outage.
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


def aiokafka_batch(message: Message, codec: str, state: tuple[int, int, int] | None = None) -> bytes:
    """What aiokafka's send() puts on the wire for the message alone (its builder, as its BatchBuilder uses it)."""
    builder = DefaultRecordBatchBuilder(2, CODEC_BITS[codec], 0, -1, -1, 0, 1 << 31)
    if state:
        builder.set_producer_state(*state)
    builder.append(0, TIMESTAMP_MS, message.key, message.value, message.headers)
    return bytes(builder.build())


def native_batch(message: Message, codec: str, state: tuple[int, int, int] | None = None) -> bytes:
    from pt_collector import _native

    data = _native.record_batch(message.key, list(message.parts), message.headers, codec, TIMESTAMP_MS)
    if state:
        PreparedBatch(data)._set_producer_state(*state)
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


def test_which_settings_build_batches() -> None:
    assert batch_preparer("snappy") is not None
    assert NATIVE_CODECS == ("snappy",)  # the engine builds none too (above), but aiokafka's own is faster there
    assert batch_preparer("none") is None
    assert batch_preparer("zstd") is None  # through send(), aiokafka compresses
    assert batch_preparer("snappy", native=False) is None  # PTC_ENGINE=python


def test_a_renewed_producer_writes_its_own_state_in() -> None:
    message = Message(b"k", json_lines(50, 6), message_headers("json", 50), 50)
    prepared = prepare(message, "snappy")
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
        built = MessageBatch(TopicPartition("t", 0), prepare(Message(b"k", b"x\n", [], 1), "snappy"), 30.0, 0.0)
        return built.append(b"k", b"y\n", None, headers=[])

    assert asyncio.run(run()) is None


class FakeProducer:
    """aiokafka's producer as send_built sees it: metadata, its partitioner, send_batch."""

    def __init__(self, partitions: int) -> None:
        self.client = self
        self.partitions = partitions
        self.sent: list[tuple[str, int]] = []

    async def _wait_on_metadata(self, topic: str) -> None:
        await asyncio.sleep(0)

    def _partition(self, topic, partition, key, value, serialized_key, serialized_value) -> int:
        return sum(serialized_key) % self.partitions

    async def send_batch(self, batch: PreparedBatch, topic: str, *, partition: int) -> str:
        self.sent.append((topic, partition))
        return "future"


def test_a_built_batch_goes_to_its_keys_partition() -> None:
    producer = FakeProducer(4)
    batch = prepare(Message(b"\x01\x02", b"x\n", [], 1), "none")
    assert asyncio.run(send_built(producer, "t", b"\x01\x02", batch)) == "future"
    assert producer.sent == [("t", 3)]


class BatchTakingProducer(FakeSinkProducer):
    """The sink's producer that also takes built batches: what it got, in order, and how."""

    async def send_batch(self, topic: str, key: bytes, batch: PreparedBatch) -> asyncio.Future:
        record = next(iter(DefaultRecordBatch(bytes(batch._build()))))
        return await self.send(topic, ("built", record.value), key, record.headers)


def test_the_sink_builds_the_large_messages_and_sends_the_small_ones_in_order() -> None:
    records = records_of(1200, sources=2)  # two sources: messages of 400 records (about 270 KB), then what is left

    async def run() -> list:
        producer = BatchTakingProducer(auto_ack=True)
        sink = KafkaSink(producer, "probes", Batcher("json", 400, 10**9, 10.0), prepare=batch_preparer("snappy"))
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
    got: dict[bytes, list[int]] = {}
    for _, key, value, _ in sent:
        lines = (value[1] if isinstance(value, tuple) else value).splitlines()
        got.setdefault(key, []).extend(json.loads(line)["sequence"] for line in lines)
    want: dict[bytes, list[int]] = {}
    for r in records:
        want.setdefault(r.src.addr.encode(), []).append(r.sequence)
    assert got == want  # every record, in its source's order
