"""The broker from scripts/kafka.sh works end to end with aiokafka and kcat."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

# Imported here too so this file also runs with --noconftest; kafka_fixture
# shares one broker with the conftest.py import.
try:
    from kafka_fixture import kafka_broker
except ImportError:  # tests/ is a package
    from tests.kafka_fixture import kafka_broker  # noqa: F401

VALUES = [b"probe-0", b"probe-1", b"probe-2"]


async def _create_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for i, value in enumerate(VALUES):
            await producer.send_and_wait(
                topic,
                key=f"k{i}".encode(),
                value=value,
                headers=[("seq", str(i).encode()), ("source", b"ptc-test")],
            )
    finally:
        await producer.stop()


async def _consume(bootstrap: str, topic: str) -> list:
    # A consumer group exercises the group coordinator (__consumer_offsets).
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"ptc-test-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records = []
    try:
        while len(records) < len(VALUES):
            batches = await consumer.getmany(timeout_ms=1000)
            for batch in batches.values():
                records.extend(batch)
        await consumer.commit()
    finally:
        await consumer.stop()
    return records


async def _roundtrip(bootstrap: str, topic: str) -> list:
    await _create_topic(bootstrap, topic)
    await _produce(bootstrap, topic)
    return await _consume(bootstrap, topic)


def test_aiokafka_and_kcat_roundtrip(kafka_broker):
    topic = f"ptc-test-{uuid.uuid4().hex[:8]}"
    records = asyncio.run(asyncio.wait_for(_roundtrip(kafka_broker, topic), 60))

    assert [r.value for r in records] == VALUES
    assert [r.key for r in records] == [b"k0", b"k1", b"k2"]
    assert [list(r.headers) for r in records] == [[("seq", str(i).encode()), ("source", b"ptc-test")] for i in range(3)]
    assert [r.offset for r in records] == [0, 1, 2]

    kcat = shutil.which("kcat")
    if kcat is None:
        pytest.fail("kcat is not installed (apt-get install -y kcat)", pytrace=False)
    out = subprocess.run(
        [kcat, "-C", "-b", kafka_broker, "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%k %s %h\n"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert out.splitlines() == [f"k{i} probe-{i} seq={i},source=ptc-test" for i in range(3)]
