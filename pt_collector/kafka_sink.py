"""The Kafka sink: batches of records to a producer, with bounded memory and counters.

Same Sink protocol as JsonLinesSink (`write`, `flush`) plus `close`. Records
are grouped per source node (batch.py); one task hands the finished
messages to the producer in order, one `send` per message, and the
delivery futures settle the counters. At most `max_pending` records are
held between `write` and the broker's acknowledgement; when that is
reached, `when_full` decides: "block" (write waits, nothing is lost) or
"drop" (the newest records are dropped and counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from .batch import Batcher
from .histogram import BATCH_SIZE_BOUNDS, LATENCY_BOUNDS, Histogram
from .kafka import Cluster, ProducerSettings, start_producer
from .message import Message
from .record import Record

WHEN_FULL = ("block", "drop")
HEALTH_INTERVAL_S = 2.0
HEALTH_TIMEOUT_S = 5.0


class Producer(Protocol):
    """What the sink needs of aiokafka's AIOKafkaProducer."""

    async def send(
        self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[object]: ...

    async def stop(self) -> None: ...


@dataclass
class DeliveryCounters:
    """Records (and messages) through the sink; every accepted record ends acked or failed."""

    sent: int = 0  # records handed to the Kafka client
    acked: int = 0  # records in messages the broker acknowledged
    dropped: int = 0  # records dropped at a full sink (when_full="drop")
    failed: int = 0  # records in messages that were not delivered
    messages: int = 0  # messages handed to the Kafka client
    acked_messages: int = 0
    errors: int = 0  # messages not delivered
    last_error: str = ""
    batch_sizes: Histogram = field(default_factory=lambda: Histogram(BATCH_SIZE_BOUNDS))  # records per message
    latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BOUNDS))  # send to acknowledgement, s

    @property
    def in_flight(self) -> int:
        """Messages handed to the client and not yet acknowledged or failed."""
        return self.messages - self.acked_messages - self.errors

    def summary(self) -> str:
        width = 16
        lines = [
            f"{'sent to Kafka':<{width}}{self.sent:,} records in {self.messages:,} messages",
            f"{'acknowledged':<{width}}{self.acked:,}",
            f"{'dropped':<{width}}{self.dropped:,}",
            f"{'failed':<{width}}{self.failed:,}" + (f" ({self.last_error})" if self.last_error else ""),
        ]
        return "\n".join(lines)


class KafkaSink:
    """Records to a Kafka topic in batch messages; `flush` returns once every record is settled."""

    def __init__(
        self,
        producer: Producer,
        topic: str,
        batcher: Batcher,
        *,
        max_pending: int = 200_000,
        when_full: str = "block",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_pending < 1 or when_full not in WHEN_FULL:
            raise ValueError(f"max_pending must be positive and when_full one of {WHEN_FULL}")
        self.counters = DeliveryCounters()
        self.topic = topic
        self.max_pending = max_pending
        self.when_full = when_full
        self._producer = producer
        self._batcher = batcher
        self._clock = clock
        self._held = 0  # records accepted and not yet settled (acked or failed)
        self._queue: deque[Message] = deque()
        self._queued = asyncio.Event()  # the queue has messages
        self._opened = asyncio.Event()  # the batcher has open batches
        self._settled = asyncio.Event()  # some records were settled
        self._tasks: list[asyncio.Task[None]] = []
        self.broker_up: bool | None = None  # None until the first health check

    @property
    def held(self) -> int:
        """Records accepted and not yet acknowledged or failed."""
        return self._held

    async def __aenter__(self) -> KafkaSink:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def start(self) -> None:
        """Start the sending, lingering and health tasks (write and flush do it when needed)."""
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._send_loop()), asyncio.create_task(self._linger_loop())]
            if hasattr(self._producer, "client"):
                self._tasks.append(asyncio.create_task(self._health_loop()))

    async def _health_loop(self) -> None:
        """Ask the cluster for metadata now and then: is the broker there, whether or not we are sending?"""
        client = self._producer.client  # type: ignore[attr-defined]
        while True:
            try:
                self.broker_up = bool(await asyncio.wait_for(client.force_metadata_update(), HEALTH_TIMEOUT_S))
            except Exception:  # any failure (a timeout too) means not reachable now
                self.broker_up = False
            await asyncio.sleep(HEALTH_INTERVAL_S)

    async def write(self, records: Sequence[Record]) -> None:
        """Take records; waits while the sink is full (block), or drops the newest (drop)."""
        self.start()
        await asyncio.sleep(0)  # let the sender and the Kafka client run between batches of decoding
        start = 0
        while start < len(records):
            room = self.max_pending - self._held
            if room > 0:
                chunk = records if start == 0 and room >= len(records) else records[start : start + room]
                self._accept(chunk)
                start += len(chunk)
            elif self.when_full == "drop":
                self.counters.dropped += len(records) - start
                return
            else:
                self._enqueue(self._batcher.drain())  # no more records come until there is room
                await self._wait_settled()

    async def flush(self) -> None:
        """Send every open batch and wait until every accepted record is acknowledged or failed."""
        self.start()
        self._enqueue(self._batcher.drain())
        while self._held:
            await self._wait_settled()

    async def close(self) -> None:
        """Stop the tasks and the producer; whatever was never handed to it counts as failed."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        unsent = list(self._queue) + self._batcher.drain()
        self._queue.clear()
        for message in unsent:
            self._settle(message.count, "closed before sending")
        await self._producer.stop()  # delivers what the client holds; its futures settle the rest

    def _accept(self, records: Sequence[Record]) -> None:
        self._held += len(records)
        now = self._clock()
        self._enqueue(self._batcher.add(records, now))
        self._enqueue(self._batcher.due(now))
        if self._batcher.held:
            self._opened.set()

    def _enqueue(self, messages: list[Message]) -> None:
        if messages:
            self._queue.extend(messages)
            self._queued.set()

    async def _wait_settled(self) -> None:
        self._settled.clear()
        await self._settled.wait()

    async def _send_loop(self) -> None:
        """The one task that hands messages to the producer, in order."""
        while True:
            while not self._queue:
                self._queued.clear()
                await self._queued.wait()
            message = self._queue.popleft()
            try:
                delivery = await self._producer.send(
                    self.topic, value=message.value, key=message.key, headers=message.headers
                )
            except asyncio.CancelledError:
                self._settle(message.count, "closed before sending")
                raise
            except Exception as exc:  # a send that raises fails this message, never the loop
                self._settle(message.count, _describe(exc))
                continue
            self.counters.sent += message.count
            self.counters.messages += 1
            self.counters.batch_sizes.observe(message.count)
            delivery.add_done_callback(partial(self._delivered, message.count, self._clock()))

    async def _linger_loop(self) -> None:
        """Closes batches whose oldest record has waited `linger`, when no write comes to do it."""
        while True:
            due_at = self._batcher.next_due()
            if due_at is None:
                self._opened.clear()
                await self._opened.wait()
                continue
            delay = due_at - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            self._enqueue(self._batcher.due(self._clock()))

    def _delivered(self, count: int, sent_at: float, delivery: asyncio.Future[object]) -> None:
        if delivery.cancelled():
            self._settle(count, "delivery cancelled")
        elif delivery.exception() is not None:
            self._settle(count, _describe(delivery.exception()))
        else:
            self.counters.acked_messages += 1
            self.counters.latency.observe(self._clock() - sent_at)
            self._settle(count)

    def _settle(self, count: int, error: str | None = None) -> None:
        if error is None:
            self.counters.acked += count
        else:
            self.counters.failed += count
            self.counters.errors += 1
            self.counters.last_error = error
        self._held -= count
        self._settled.set()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@contextlib.asynccontextmanager
async def open_kafka_sink(
    cluster: Cluster,
    settings: ProducerSettings,
    topic: str,
    batcher: Batcher,
    *,
    max_pending: int = 200_000,
    when_full: str = "block",
) -> AsyncIterator[KafkaSink]:
    """A KafkaSink on a started producer (KafkaUnavailable when the cluster cannot be reached)."""
    sink = KafkaSink(
        await start_producer(cluster, settings, topic), topic, batcher, max_pending=max_pending, when_full=when_full
    )
    sink.start()  # the health check runs from the start, before any record
    try:
        yield sink
    finally:
        await sink.close()
