"""Record batches built ahead of time (kafka/recordbatch.py): their bytes, their cut, and delivery into the broker.

The sink hands a producer that takes them (RenewingProducer) several ptc
messages at once, in built batches per partition; consumers still read one
Kafka record per ptc message, in order per source node, none doubled.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch
from test_kafka_delivery import new_topic
from test_kafka_sink import records_of

from pt_collector.kafka import recordbatch
from pt_collector.kafka import sink as sink_module
from pt_collector.kafka.client import CODECS, Cluster, ProducerSettings
from pt_collector.kafka.message import Message, build_message, decode_message
from pt_collector.kafka.recordbatch import CODECS as BATCH_CODECS
from pt_collector.kafka.recordbatch import PreparedBatch, prepare_batches
from pt_collector.kafka.sink import open_kafka_sink
from pt_collector.pipeline.batch import Batcher

try:  # also runs with --noconftest; kafka_fixture shares one broker with the conftest.py import
    from kafka_fixture import kafka_broker
except ImportError:  # tests/ is a package
    from tests.kafka_fixture import kafka_broker  # noqa: F401

COMPRESSIONS = ["none"] + [c for c, available in CODECS.items() if available()]


def messages_of(count: int, per_message: int = 10, sources: int = 3) -> list[Message]:
    records = records_of(count, sources=sources)
    by_source = defaultdict(list)
    for record in records:
        by_source[record.src.addr].append(record)
    return [
        build_message(group[i : i + per_message], "json")
        for group in by_source.values()
        for i in range(0, len(group), per_message)
    ]


def parsed(data: bytes) -> list[tuple]:
    return [(r.key, r.value, r.headers) for r in DefaultRecordBatch(data)]


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_a_prepared_batch_is_the_record_batch_aiokafka_builds_with_the_producer_state_written_in(compression):
    messages = messages_of(60)
    batch = PreparedBatch(messages, BATCH_CODECS[compression])
    theirs = BatchBuilder(1 << 30, BATCH_CODECS[compression])
    for m in messages:
        theirs.append(timestamp=None, key=m.key, value=m.value, headers=m.headers)
    theirs._set_producer_state(4711, 3, 120)
    batch._set_producer_state(4711, 3, 120)
    ours, expected = DefaultRecordBatch(batch._build()), DefaultRecordBatch(bytes(theirs._build()))
    assert ours.validate_crc() and expected.validate_crc()
    assert (ours.producer_id, ours.producer_epoch, ours.base_sequence) == (4711, 3, 120)
    assert ours.compression_type == expected.compression_type == BATCH_CODECS[compression]
    assert ours.next_offset == expected.next_offset == len(messages)
    assert parsed(batch._build()) == parsed(bytes(theirs._build()))
    assert [(m.key, m.value, m.headers) for m in messages] == [(k, v, list(h)) for k, v, h in parsed(batch._build())]
    assert batch.record_count() == len(messages) and batch.count == 60
    batch._set_producer_state(4712, 0, 0)  # a renewed producer sends it again: new state, new checksum
    again = DefaultRecordBatch(batch._build())
    assert again.validate_crc() and (again.producer_id, again.producer_epoch, again.base_sequence) == (4712, 0, 0)


def test_batches_that_come_out_too_large_are_built_again_in_halves_in_order():
    messages = messages_of(200, per_message=5)
    one = len(PreparedBatch(messages[:1], 0))
    batches = prepare_batches(messages, 0, 3 * one)
    assert len(batches) > 1 and all(len(b) <= 3 * one for b in batches)
    assert [m for b in batches for m in b.messages] == messages
    assert len(prepare_batches(messages[:1], 0, 10)) == 1  # a single message always goes


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_the_sink_delivers_built_batches_of_messages_in_order_per_source(kafka_broker, monkeypatch, compression):
    built = []

    def spy(messages, codec, max_bytes):
        batches = prepare_batches(messages, codec, max_bytes)
        built.extend(batches)
        return batches

    monkeypatch.setattr(sink_module, "prepare_batches", spy)
    topic = new_topic(kafka_broker, partitions=3)
    records = records_of(3000, sources=8)
    settings = ProducerSettings(compression=compression, max_value_bytes=20_000)

    async def send() -> sink_module.DeliveryCounters:
        batcher = Batcher("json", 25, settings.max_value_bytes, 0.05)
        async with open_kafka_sink(Cluster(kafka_broker), settings, topic, batcher) as sink:
            for i in range(0, len(records), 100):
                await sink.write(records[i : i + 100])
            await sink.flush()
        return sink.counters

    counters = asyncio.run(send())
    assert counters.acked == counters.sent == 3000 and counters.failed == counters.dropped == 0
    assert counters.messages == counters.acked_messages == sum(b.record_count() for b in built)
    assert len(built) < counters.messages  # several messages a batch
    assert all(len(b) <= settings.batch_bytes for b in built)
    read = asyncio.run(consume(kafka_broker, topic, counters.messages))
    assert len(read) == counters.messages
    got = defaultdict(list)
    for message in read:
        got[message.key].extend(decode_message(message.value, message.headers))
    expected = defaultdict(list)
    for record in records:
        expected[record.src.addr.encode()].append(record)
    assert got == expected  # every record once, in order per source node


async def consume(bootstrap: str, topic: str, count: int) -> list:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        read: list = []
        async with asyncio.timeout(60):
            while len(read) < count:
                for messages in (await consumer.getmany(timeout_ms=1000)).values():
                    read.extend(messages)
        return read
    finally:
        await consumer.stop()


def test_recordbatch_codecs_match_the_compression_options():
    assert set(recordbatch.CODECS) == {"none", *CODECS}
