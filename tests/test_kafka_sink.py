"""The Kafka sink against a fake producer: one send per message, counters, block and drop at a full sink."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import KafkaTimeoutError

from pt_collector import Decoder, Record, decode_message
from pt_collector.codec.generate import generate
from pt_collector.codec.wire import LINKTYPE_RAW
from pt_collector.kafka.client import KafkaUnavailable
from pt_collector.kafka.sink import KafkaSink
from pt_collector.pipeline.batch import Batcher


class Rejected(Exception):
    """What the fake broker answers for a message it does not take."""


class FakeProducer:
    """Takes messages like AIOKafkaProducer.send; the test decides when (and whether) each is acknowledged."""

    def __init__(self, *, auto_ack: bool = False, reject: set[int] = frozenset(), raise_on: set[int] = frozenset()):
        self.messages: list[tuple[str, bytes, bytes, list]] = []
        self.waiting: list[asyncio.Future] = []
        self.auto_ack = auto_ack
        self.reject = reject  # message numbers the broker rejects
        self.raise_on = raise_on  # message numbers send() raises for
        self.stopped = False

    async def send(self, topic, value, key, headers):
        number = len(self.messages)
        self.messages.append((topic, key, value, headers))
        if number in self.raise_on:
            raise Rejected(f"send {number} refused")
        future = asyncio.get_running_loop().create_future()
        if number in self.reject:
            future.set_exception(Rejected(f"message {number} rejected"))
        elif self.auto_ack:
            future.set_result(number)
        else:
            self.waiting.append(future)
        return future

    def ack(self, n: int | None = None) -> None:
        for future in self.waiting[:n]:
            future.set_result(None)
        del self.waiting[:n]

    async def stop(self):
        self.stopped = True

    def records(self) -> list[Record]:
        return [r for _, _, value, headers in self.messages for r in decode_message(value, headers)]


def records_of(count: int, sources: int = 1) -> list[Record]:
    decoder = Decoder()
    return [decoder.decode(p, t, LINKTYPE_RAW) for t, p in generate(count, sources=sources)]


def sink_of(producer, *, batch=5, linger_s=10.0, **options) -> KafkaSink:
    return KafkaSink(producer, "probes", Batcher("json", batch, 10**9, linger_s), **options)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_one_send_per_message_and_everything_acknowledged():
    records = records_of(2000, sources=4)

    async def run():
        producer = FakeProducer(auto_ack=True)
        async with sink_of(producer, batch=100) as sink:
            for i in range(0, len(records), 128):
                await sink.write(records[i : i + 128])
            await sink.flush()
        return producer, sink

    producer, sink = asyncio.run(run())
    assert len(producer.messages) == 20  # 500 records per source, 100 per message
    assert {topic for topic, *_ in producer.messages} == {"probes"}
    assert all(key == decode_message(v, h)[0].src.addr.encode() for _, key, v, h in producer.messages)
    assert sorted(producer.records(), key=lambda r: (r.src.addr, r.capture_ns)) == sorted(
        records, key=lambda r: (r.src.addr, r.capture_ns)
    )
    c = sink.counters
    assert (c.sent, c.acked, c.dropped, c.failed, c.messages, c.errors) == (2000, 2000, 0, 0, 20, 0)
    assert producer.stopped and sink.held == 0


def test_block_waits_for_the_broker_and_loses_nothing():
    records = records_of(40)

    async def run():
        producer = FakeProducer()
        sink = sink_of(producer, max_pending=10, when_full="block")
        writer = asyncio.create_task(sink.write(records))
        peak = 0
        while not writer.done():
            await settle()
            peak = max(peak, sink.held)
            assert not writer.done() or sink.held <= 10
            producer.ack(1)
        flushing = asyncio.create_task(sink.flush())
        while not flushing.done():
            await settle()
            producer.ack()
        await sink.close()
        return producer, sink, peak

    producer, sink, peak = asyncio.run(run())
    assert peak == 10
    assert producer.records() == records
    c = sink.counters
    assert (c.sent, c.acked, c.dropped, c.failed) == (40, 40, 0, 0)


def test_a_blocked_writer_does_not_wait_for_linger():
    # 10 pending records in an open batch that is not full: blocking sends it at once
    records = records_of(12)

    async def run():
        producer = FakeProducer(auto_ack=True)
        sink = sink_of(producer, batch=100, max_pending=10, linger_s=3600)
        await asyncio.wait_for(sink.write(records), 5)
        await sink.flush()
        await sink.close()
        return producer

    assert asyncio.run(run()).records() == records


def test_a_full_sink_keeps_filling_open_batches_while_messages_are_in_flight():
    # at the bound with messages in flight, an acknowledgement makes room: the open batch keeps filling to its
    # size rather than going out small at every wait
    records = records_of(400)

    async def run():
        producer = FakeProducer()
        sink = sink_of(producer, batch=40, max_pending=100, when_full="block")

        async def write_all():
            for i in range(0, len(records), 10):
                await sink.write(records[i : i + 10])
            await sink.flush()

        writer = asyncio.create_task(write_all())
        while not writer.done():
            await settle()
            producer.ack(1)
        await sink.close()
        return producer

    producer = asyncio.run(run())
    assert producer.records() == records
    assert [len(decode_message(v, h)) for _, _, v, h in producer.messages] == [40] * 10


def test_drop_keeps_the_oldest_and_counts_the_newest():
    records = records_of(25)

    async def run():
        producer = FakeProducer()
        sink = sink_of(producer, max_pending=10, when_full="drop")
        await sink.write(records)  # returns at once: nothing waits at a full sink
        assert sink.counters.dropped == 15 and sink.held == 10
        await settle()
        producer.ack()
        await settle()
        await sink.write(records[:3])  # room again
        flushing = asyncio.create_task(sink.flush())
        await settle()
        producer.ack()
        await flushing
        await sink.close()
        return producer, sink

    producer, sink = asyncio.run(run())
    assert producer.records() == records[:10] + records[:3]
    c = sink.counters
    assert (c.sent, c.acked, c.dropped, c.failed) == (13, 13, 15, 0)


def test_rejected_and_unsendable_messages_are_counted_not_raised():
    records = records_of(20)

    async def run():
        producer = FakeProducer(auto_ack=True, reject={1}, raise_on={2})
        async with sink_of(producer) as sink:
            await sink.write(records)
            await sink.flush()
        return sink

    c = asyncio.run(run()).counters
    assert (c.sent, c.acked, c.failed, c.errors, c.messages) == (15, 10, 10, 2, 3)
    assert c.last_error in ("Rejected: message 1 rejected", "Rejected: send 2 refused")
    assert "failed          10 (Rejected: " in c.summary()


def test_linger_sends_without_further_writes():
    records = records_of(3)

    async def run():
        producer = FakeProducer(auto_ack=True)
        async with sink_of(producer, batch=100, linger_s=0.05) as sink:
            await sink.write(records)
            await settle()
            assert producer.messages == []
            await asyncio.sleep(0.3)
            sent = list(producer.messages)
            assert sink.held == 0
        return sent

    sent = asyncio.run(run())
    assert len(sent) == 1 and sent[0][3][2] == ("ptc-count", b"3")


def test_close_without_flush_counts_what_was_never_sent():
    records = records_of(3)

    async def run():
        producer = FakeProducer(auto_ack=True)
        sink = sink_of(producer, batch=100)
        await sink.write(records)
        await sink.close()
        return producer, sink

    producer, sink = asyncio.run(run())
    assert producer.messages == [] and producer.stopped
    c = sink.counters
    assert (c.sent, c.acked, c.failed, c.last_error) == (0, 0, 3, "closed before sending")


@pytest.mark.parametrize(("max_pending", "when_full"), [(0, "block"), (10, "wait")])
def test_bad_settings(max_pending, when_full):
    async def run():
        KafkaSink(FakeProducer(), "t", Batcher("json", 1, 10, 0), max_pending=max_pending, when_full=when_full)

    with pytest.raises(ValueError):
        asyncio.run(run())


def test_a_sink_that_starts_before_the_broker(monkeypatch):
    """Records wait (by the policy) while the sink keeps trying to connect; then they go."""
    monkeypatch.setattr("pt_collector.kafka.sink.RETRY_MIN_S", 0.01)
    records = records_of(12)
    producer = FakeProducer(auto_ack=True)
    attempts: list[int] = []
    said: list[tuple[str, str]] = []

    async def connect():
        attempts.append(1)
        if len(attempts) < 3:
            raise KafkaUnavailable("cannot reach Kafka at nowhere:9092")
        return producer

    async def run():
        sink = KafkaSink(
            None, "probes", Batcher("json", 4, 10**9, 10.0), connect=connect, say=lambda *line: said.append(line)
        )
        await sink.write(records)
        assert producer.messages == [] and sink.held == 12 and sink.broker_up is False
        await asyncio.wait_for(sink.flush(), 5)
        await sink.close()
        return sink

    sink = asyncio.run(run())
    assert len(attempts) == 3 and producer.records() == records
    assert sink.counters.acked == 12 and sink.counters.failed == 0
    assert said[0][0] == "error" and "cannot reach Kafka at nowhere:9092" in said[0][1] and "retrying" in said[0][1]
    assert said[-1][0] == "info" and said[-1][1].startswith("connected to Kafka after")


def test_a_send_the_client_refuses_for_now_is_tried_again(monkeypatch):
    """A send that times out (the client's buffer full while the broker is away) was never taken: retried."""
    monkeypatch.setattr("pt_collector.kafka.sink.RETRY_MIN_S", 0.01)

    class Busy(FakeProducer):
        async def send(self, topic, value, key, headers):
            if self.refusals:
                self.refusals -= 1
                raise KafkaTimeoutError()
            return await super().send(topic, value, key, headers)

    producer = Busy(auto_ack=True)
    producer.refusals = 3
    records = records_of(10)

    async def run():
        async with sink_of(producer, batch=5) as sink:
            await sink.write(records)
            await asyncio.wait_for(sink.flush(), 5)
        return sink

    sink = asyncio.run(run())
    assert producer.records() == records  # in order, once
    assert (sink.counters.acked, sink.counters.failed, sink.counters.retries) == (10, 0, 3)


def test_close_gives_up_after_its_timeout_and_counts_the_rest_as_failed():
    class Stuck(FakeProducer):
        async def stop(self):
            await asyncio.sleep(3600)  # the broker is away: it would deliver for ever

    producer = Stuck()
    records = records_of(10)

    async def run():
        sink = sink_of(producer, batch=5)
        await sink.write(records)
        await sink.write([])  # the sender takes the first message
        await settle()
        producer.ack(1)  # 5 acknowledged, 5 in the client
        await settle()
        await asyncio.wait_for(sink.close(0.1), 5)
        producer.ack()  # too late: counted already
        await settle()
        return sink

    sink = asyncio.run(run())
    c = sink.counters
    assert (c.acked, c.failed, sink.held) == (5, 5, 0)
    assert c.last_error == "not acknowledged before shutdown"
