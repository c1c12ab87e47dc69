"""The producer that rides out outages (kafka/producer.py), and the sink's outage news, against fakes.

The real broker's side of it is tests/test_outage.py (an outage of 75 s)
and tests/test_faults.py (a renewal after a refused message).
"""

from __future__ import annotations

import asyncio
import math
import socket

import aiokafka.client
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError, OutOfOrderSequenceNumber
from aiokafka.structs import BrokerMetadata
from test_kafka_sink import FakeProducer, records_of

from pt_collector.kafka.client import KafkaUnavailable
from pt_collector.kafka.producer import RESEND_LIMIT, Backoff, BackoffClient, RenewingProducer, outage_proof
from pt_collector.kafka.sink import KafkaSink, OutageLog
from pt_collector.pipeline.batch import Batcher


class Broker:
    """What the fake producers answer: message value -> error (None: acknowledged), per producer generation."""

    def __init__(self, answers: dict[int, dict[bytes, type[Exception]]] | None = None) -> None:
        self.answers = answers or {}
        self.received: list[tuple[int, bytes]] = []  # (generation, value) in the order each producer got them
        self.producers: list[Generation] = []


class Generation:
    """A fake AIOKafkaProducer: answers each send soon after, by the broker's answers for its generation."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.number = len(broker.producers)
        self.stopped = False
        self.client = object()
        broker.producers.append(self)

    async def send(self, topic, value, key, headers):
        assert not self.stopped
        self.broker.received.append((self.number, value))
        future = asyncio.get_running_loop().create_future()
        error = self.broker.answers.get(self.number, {}).get(value)
        loop = asyncio.get_running_loop()
        loop.call_soon(future.set_exception, error()) if error else loop.call_soon(future.set_result, self.number)
        return future

    async def flush(self):
        await asyncio.sleep(0.01)

    async def stop(self):
        self.stopped = True


def renewing(broker: Broker, said: list) -> RenewingProducer:
    async def start():
        return Generation(broker)

    return RenewingProducer(Generation(broker), start, lambda *line: said.append(line))


async def send_all(producer: RenewingProducer, values: list[bytes]) -> list[asyncio.Future]:
    return [await producer.send("t", value, b"k", []) for value in values]


def outcome(future: asyncio.Future) -> object:
    return type(future.exception()).__name__ if future.exception() else future.result()


def test_a_producer_whose_sequence_is_lost_is_renewed_and_sends_again_what_was_refused_for_it():
    # generation 0 takes m0 and m1, refuses m2 for good (too large), and so m3..m5 for their sequence
    broker = Broker(
        {0: {b"m2": MessageSizeTooLargeError, **dict.fromkeys([b"m3", b"m4", b"m5"], OutOfOrderSequenceNumber)}}
    )
    values = [b"m0", b"m1", b"m2", b"m3", b"m4", b"m5"]
    said: list = []

    async def run():
        producer = renewing(broker, said)
        first = await send_all(producer, values)
        await asyncio.sleep(0.01)  # the answers come; the renewal starts and new sends wait for it
        later = await send_all(producer, [b"m6", b"m7"])
        await asyncio.wait_for(producer.flush(), 5)
        await producer.stop()
        return producer, [outcome(f) for f in first + later]

    producer, outcomes = asyncio.run(run())
    assert outcomes == [0, 0, "MessageSizeTooLargeError", 1, 1, 1, 1, 1]  # each once: none lost, none twice
    assert broker.received == [(0, v) for v in values] + [(1, v) for v in (b"m3", b"m4", b"m5", b"m6", b"m7")]
    assert producer.renewals == 1 and [p.stopped for p in broker.producers] == [True, True]
    assert any("OutOfOrderSequenceNumber" in message and "renewing the producer" in message for _, message in said)
    assert ("info", "Kafka producer renewed: 3 messages sent again") in said


def test_a_message_refused_for_its_sequence_by_every_producer_fails_at_last():
    broker = Broker({n: {b"m0": OutOfOrderSequenceNumber} for n in range(10)})

    async def run():
        producer = renewing(broker, [])
        [future] = await send_all(producer, [b"m0"])
        await asyncio.wait_for(producer.flush(), 5)
        await producer.stop()
        return producer, outcome(future)

    producer, result = asyncio.run(run())
    assert result == "OutOfOrderSequenceNumber"
    assert len(broker.received) == RESEND_LIMIT and producer.renewals == RESEND_LIMIT - 1


def test_a_producer_that_cannot_be_started_again_is_retried_with_backoff(monkeypatch):
    monkeypatch.setattr("pt_collector.kafka.producer.RENEW_RETRY_MIN_S", 0.01)
    broker = Broker({0: {b"m0": OutOfOrderSequenceNumber}})
    said: list = []
    attempts = []

    async def start():
        attempts.append(asyncio.get_running_loop().time())
        if len(attempts) < 3:
            raise KafkaUnavailable("cannot reach Kafka at nowhere:9092")
        return Generation(broker)

    async def run():
        producer = RenewingProducer(Generation(broker), start, lambda *line: said.append(line))
        [future] = await send_all(producer, [b"m0"])
        await asyncio.wait_for(producer.flush(), 5)
        return outcome(future)

    assert asyncio.run(run()) == 1
    assert len(attempts) == 3 and attempts[2] - attempts[1] > attempts[1] - attempts[0]  # it backs off
    assert sum("cannot reach Kafka at nowhere:9092" in message for _, message in said) == 2


def test_what_waits_to_be_sent_again_fails_at_a_stop():
    broker = Broker({0: {b"m0": OutOfOrderSequenceNumber}})

    async def never():
        await asyncio.sleep(3600)

    async def run():
        producer = RenewingProducer(Generation(broker), never, lambda *line: None)
        [future] = await send_all(producer, [b"m0"])
        await asyncio.sleep(0.1)
        assert producer.renewing
        await asyncio.wait_for(producer.stop(), 5)
        return outcome(future), str(future.exception())

    assert asyncio.run(run()) == ("KafkaError", "KafkaError: not sent again before shutdown")


def test_backoff_doubles_to_its_cap_and_resets():
    backoff = Backoff(0.1, 1.0, floor_s=0.05)
    delays = []
    for _ in range(6):
        backoff.failed(100.0)
        delays.append(backoff.delay_s)
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0] and backoff.wait_s(100.5) == pytest.approx(0.5)
    backoff.succeeded(100.0)
    assert backoff.wait_s(100.0) == pytest.approx(0.05) and backoff.wait_s(100.1) == 0.0


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_outage_proof_producer_never_expires_batches_and_backs_off_every_reconnection(monkeypatch):
    """aiokafka's sender asks for metadata in a loop while a partition has no leader: here, a handful of attempts."""
    attempts = []
    real_create_conn = aiokafka.client.create_conn

    async def counted(*args, **kwargs):
        attempts.append(1)
        return await real_create_conn(*args, **kwargs)

    monkeypatch.setattr(aiokafka.client, "create_conn", counted)

    async def run():
        producer = outage_proof(AIOKafkaProducer(bootstrap_servers="127.0.0.1:1"))
        client = producer.client
        assert isinstance(client, BackoffClient) and producer._message_accumulator._batch_ttl == math.inf
        client.cluster._brokers = {1: BrokerMetadata(1, "127.0.0.1", closed_port(), None)}  # as after a bootstrap
        loop = asyncio.get_running_loop()
        end = loop.time() + 1.0
        while loop.time() < end:  # as the metadata task does when the sender keeps asking, and the sender itself
            assert not await client._metadata_update(client.cluster, set())
            assert not await client.ready(1)
        await client.close()

    asyncio.run(run())
    assert 3 <= len(attempts) <= 6, len(attempts)  # at 0, 0.1, 0.3, 0.7 s (the backoff doubles to 1 s)


def test_the_outage_log_says_it_at_once_every_10_s_and_when_it_is_over():
    now = [0.0]
    said: list = []
    log = OutageLog(lambda *line: said.append(line), lambda: now[0])
    held = iter(range(100))
    for t in range(0, 24, 2):
        now[0] = float(t)
        log.update("Kafka unreachable", lambda lasting: f"{next(held)} held")
    now[0] = 24.5
    log.update(None, lambda lasting: "all delivered" if not lasting else "?")
    log.update(None, lambda lasting: "?")
    assert said == [
        ("error", "Kafka unreachable: 0 held"),
        ("error", "Kafka unreachable for 10 s: 1 held"),
        ("error", "Kafka unreachable for 20 s: 2 held"),
        ("info", "Kafka is taking records again after 24.5 s: all delivered"),
    ]


class Client:
    def __init__(self, answers: list[bool]) -> None:
        self.answers = answers

    async def force_metadata_update(self):
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


class Watched(FakeProducer):
    """A producer whose health the sink watches: metadata answers as told, no renewal."""

    def __init__(self, answers: list[bool], **options) -> None:
        super().__init__(**options)
        self.client = Client(answers)
        self.renewing = False


@pytest.mark.parametrize("policy", ["block", "drop"])
def test_the_sink_says_when_kafka_is_away_what_it_holds_and_when_it_is_back(monkeypatch, policy):
    monkeypatch.setattr("pt_collector.kafka.sink.HEALTH_INTERVAL_S", 0.01)
    producer = Watched([True, False, False, False, True])
    said: list = []

    async def run():
        sink = KafkaSink(
            producer, "probes", Batcher("json", 100, 10**9, 10.0), max_pending=5, when_full=policy,
            say=lambda *line: said.append(line),
        )  # fmt: skip
        sink.start()
        if policy == "drop":
            await sink.write(records_of(8))
        await asyncio.sleep(0.02)
        down = sink.broker_up
        await asyncio.sleep(0.2)
        up = sink.broker_up
        await sink.close(0.1)
        return down, up

    down, up = asyncio.run(run())
    assert (down, up) == (False, True)
    assert said[0][0] == "error" and said[0][1].startswith("Kafka unreachable")
    assert len(said) == 2 and said[1][0] == "info" and said[1][1].startswith("Kafka is taking records again after")
    if policy == "drop":  # 3 of the 8 were dropped before it went
        assert said[0][1].endswith(
            "5 records held for topic probes, 0 dropped since (--when-full drop at --max-pending 5)"
        )
        assert said[1][1].endswith("5 records held for topic probes, 0 dropped while it was away (--when-full drop "
                                   "at --max-pending 5)")  # fmt: skip
    else:
        assert said[0][1].endswith("0 records held for topic probes, new records wait (--when-full block at "
                                   "--max-pending 5)")  # fmt: skip
        assert said[1][1].endswith(": no record left held for topic probes")


def test_a_sink_whose_deliveries_stall_is_not_healthy(monkeypatch):
    """The broker answers metadata, but nothing sent is acknowledged (a partition without a leader, say)."""
    monkeypatch.setattr("pt_collector.kafka.sink.HEALTH_INTERVAL_S", 0.01)
    monkeypatch.setattr("pt_collector.kafka.sink.STALL_S", 0.1)
    producer = Watched([True])  # acknowledges nothing until told
    said: list = []

    async def run():
        sink = KafkaSink(producer, "probes", Batcher("json", 2, 10**9, 10.0), say=lambda *line: said.append(line))
        await sink.write(records_of(4))
        await asyncio.sleep(0.05)
        healthy_at_first = sink.broker_up
        await asyncio.sleep(0.2)
        stalled = sink.broker_up
        producer.ack()
        await asyncio.sleep(0.05)
        healthy_again = sink.broker_up
        await sink.close(0.1)
        return healthy_at_first, stalled, healthy_again

    assert asyncio.run(run()) == (True, False, True)
    assert said[0] == ("error", "Kafka not acknowledging: 4 records held for topic probes, new records "
                       "wait (--when-full block at --max-pending 200,000)")  # fmt: skip
