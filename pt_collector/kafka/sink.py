"""The Kafka sink: batches of records to a producer, with bounded memory and counters.

Same Sink protocol as JsonLinesSink (`write`, `flush`) plus `close`. Records
are grouped per source node (batch.py); one task hands the finished
messages to the producer in order, one `send` per message, or for large
ones one `send_batch` of a record batch holding every large message
waiting for the same partition, built by the native engine on a worker
thread (kafka/recordbatch.py), and the delivery futures settle the
counters. At most `max_pending` records are held between `write` and the
broker's acknowledgement; when that is reached, `when_full` decides:
"block" (write waits, nothing is lost) or "drop" (the newest records are
dropped and counted).

Faults: a send the client refuses for a while (its buffer full while the
broker is away) is retried, never failed; the producer itself keeps what
it was handed for as long as the broker is away (kafka/producer.py). The
sink can also start before the broker is reachable (`connect`, for live
capture): it accepts records, by its policy, while a task keeps trying to
connect with backoff. `close` is bounded: whatever is still
unacknowledged when its time is up is counted as failed, so every
accepted record ends acked, failed or dropped.

Health: `broker_up` is true only while the broker answers metadata, no
delivery has waited STALL_S without any acknowledgement, the producer is
not being renewed, and the last delivery was not refused. When Kafka stops
taking records the sink says so (`say`) within HEALTH_INTERVAL_S, with
what it holds, again every OUTAGE_REPEAT_S while it lasts, and once it is
back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, cast, runtime_checkable

from aiokafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError

from ..capture.pcap import Frame
from ..codec.histogram import BATCH_SIZE_BOUNDS, LATENCY_BOUNDS, Histogram
from ..codec.record import Record
from .client import Cluster, KafkaUnavailable, ProducerSettings, start_producer
from .message import BySource, Message, MessageBatcher
from .options import WHEN_FULL
from .recordbatch import BUILT_FROM, PreparedBatch, Preparer, batch_preparer, builder

HEALTH_INTERVAL_S = 2.0
HEALTH_TIMEOUT_S = 5.0
STALL_S = 10.0  # messages in flight and no acknowledgement for this long: Kafka is not taking records
OUTAGE_REPEAT_S = 10.0  # while Kafka is not taking records, what is held is said again this often
CLOSE_TIMEOUT_S = 5.0  # closing the producer: after a flush it has nothing left; interrupted, it may never deliver
RETRY_MIN_S, RETRY_MAX_S = 0.5, 30.0  # backoff between attempts to connect, or to hand a message over
MAX_BATCH_MESSAGES = 64  # messages looked at for one built record batch (its size limit decides how many go in)

# (level, message): what the sink has to say about the broker, for the operator's log
Say = Callable[[str, str], None]


class Producer(Protocol):
    """What the sink needs of aiokafka's AIOKafkaProducer."""

    async def send(
        self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[object]: ...

    async def stop(self) -> None: ...


class BatchProducer(Producer, Protocol):
    """A producer that takes messages built as record batches: producer.RenewingProducer, routing.SharedProducer."""

    def partition(self, topic: str, key: bytes) -> int | None: ...

    async def send_batch(self, topic: str, key: bytes, batch: PreparedBatch) -> asyncio.Future[object]: ...


@runtime_checkable
class WatchedProducer(Producer, Protocol):
    """A producer whose health the sink can watch: producer.RenewingProducer, routing.SharedProducer."""

    @property
    def client(self) -> Any: ...  # aiokafka's client: force_metadata_update() asks the cluster

    @property
    def renewing(self) -> bool: ...  # replacing a producer whose sequence state was lost


class OutageLog:
    """Says when Kafka stops taking records (at once, then every OUTAGE_REPEAT_S while it lasts) and when it is back."""

    def __init__(self, say: Say, clock: Callable[[], float]) -> None:
        self._say, self._clock = say, clock
        self.since: float | None = None
        self._next_at = 0.0

    def update(self, trouble: str | None, holding: Callable[[bool], str]) -> None:
        """`trouble`: what is wrong now (None: nothing); `holding(lasting)`: what the sink holds, said with it."""
        now = self._clock()
        if trouble is None:
            if self.since is not None:
                self._say("info", f"Kafka is taking records again after {now - self.since:.1f} s: {holding(False)}")
                self.since = None
            return
        if self.since is None:
            self.since = self._next_at = now
        if now >= self._next_at:
            self._next_at = now + OUTAGE_REPEAT_S
            lasting = f" for {now - self.since:.0f} s" if now > self.since else ""
            self._say("error", f"{trouble}{lasting}: {holding(True)}")


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
    retries: int = 0  # sends the client refused for now (its buffer full, the broker away), tried again
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
        producer: Producer | None,
        topic: str,
        batcher: MessageBatcher,
        *,
        max_pending: int = 200_000,
        when_full: str = "block",
        clock: Callable[[], float] = time.monotonic,
        connect: Callable[[], Awaitable[Producer]] | None = None,
        say: Say | None = None,
        prepare: Preparer | None = None,
    ) -> None:
        if max_pending < 1 or when_full not in WHEN_FULL or (producer is None) == (connect is None):
            raise ValueError(f"max_pending must be positive, when_full one of {WHEN_FULL}, one of producer, connect")
        self.counters = DeliveryCounters()
        self.topic = topic
        self.max_pending = max_pending
        self.when_full = when_full
        self._producer = producer
        self._connect = connect
        self._connected = asyncio.Event()
        if producer is not None:
            self._connected.set()
        self._say = say or (lambda level, message: None)
        self._outage = OutageLog(self._say, clock)
        self._dropped_before: int | None = None  # records dropped before the current outage
        self._progress_at = clock()  # the last acknowledgement, or the first send after a quiet time
        self._failing = False  # the last delivery was refused
        self._abandoned = False  # close gave up waiting: late delivery reports change nothing
        self._batcher = batcher
        self._clock = clock
        self._held = 0  # records accepted and not yet settled (acked or failed)
        self._prepare = prepare  # builds large messages' record batch (kafka/recordbatch.py); None: send() each
        self._queue: deque[Message] = deque()  # cut, not yet taken by the send loop
        self._taken: tuple[list[Message], PreparedBatch | None] | None = None  # taken, not yet handed over
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
        """Start the connecting, sending, lingering and health tasks (write and flush do it when needed)."""
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._send_loop()), asyncio.create_task(self._linger_loop())]
            if self._connect is not None:
                self._tasks.append(asyncio.create_task(self._connect_loop(self._connect)))
            elif isinstance(self._producer, WatchedProducer):
                self._tasks.append(asyncio.create_task(self._health_loop()))

    async def _connect_loop(self, connect: Callable[[], Awaitable[Producer]]) -> None:
        """Connect, however long it takes, with backoff; then the health checks take over."""
        started, delay = self._clock(), RETRY_MIN_S
        while True:
            try:
                self._producer = await connect()
                break
            except KafkaUnavailable as exc:
                self.broker_up = False
                self._say("error", f"{exc}: records are kept (up to --max-pending) while retrying, with backoff")
            await asyncio.sleep(delay)
            delay = min(2 * delay, RETRY_MAX_S)
        self._connected.set()
        if self.broker_up is False:
            self._say("info", f"connected to Kafka after {self._clock() - started:.1f} s")
        self.broker_up = True
        if isinstance(self._producer, WatchedProducer):
            await self._health_loop()

    async def _health_loop(self) -> None:
        """Ask the cluster for metadata now and then, and watch the deliveries: is Kafka taking records?"""
        while True:
            trouble = await self._trouble()
            self.broker_up = trouble is None and not self._failing
            self._outage.update(trouble, self._holding)
            await asyncio.sleep(HEALTH_INTERVAL_S)

    async def _trouble(self) -> str | None:
        """Why Kafka is not taking records now, or None."""
        producer: WatchedProducer = self._producer  # type: ignore[assignment]
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_S):  # not wait_for: on 3.11 it can swallow a cancel
                reachable = bool(await producer.client.force_metadata_update())
        except Exception:  # any failure (a timeout too) means not reachable now
            reachable = False
        if not reachable:
            return "Kafka unreachable"
        if producer.renewing:
            return "Kafka producer being renewed"
        if self.counters.in_flight and self._clock() - self._progress_at > STALL_S:
            return "Kafka not acknowledging"
        return None

    def _holding(self, lasting: bool) -> str:
        """What the sink holds, for the outage lines: while it lasts, or once it is over."""
        if self._dropped_before is None:
            self._dropped_before = self.counters.dropped
        dropped = self.counters.dropped - self._dropped_before
        if not lasting:
            self._dropped_before = None
        held = f"{self._held:,} records held for topic {self.topic}"
        if not (lasting or self._held):
            held = f"no record left held for topic {self.topic}"
        if self.when_full == "drop":
            when = "since" if lasting else "while it was away"
            return f"{held}, {dropped:,} dropped {when} (--when-full drop at --max-pending {self.max_pending:,})"
        if lasting:
            return f"{held}, new records wait (--when-full block at --max-pending {self.max_pending:,})"
        return f"{held}, delivering them" if self._held else held

    wants_frames = False  # a raw rule's frames reach Kafka as their own messages, through routing.RoutedSink

    async def write_frames(self, records: Sequence[Record], frames: list[Frame]) -> None:
        await self.write(records)

    async def write(self, records: Sequence[Record]) -> None:
        """Take records; waits while the sink is full (block), or drops the newest (drop).

        Records that come per source node already encoded (the native engine's) are taken so (SourceGroups):
        their messages are cut from those bytes, and a batch taken in part is cut source by source.
        """
        self.start()
        if isinstance(records, BySource):
            records = records.by_source()
        await asyncio.sleep(0)  # let the sender and the Kafka client run between batches of decoding
        start = 0
        while start < len(records):
            room = self.max_pending - self._held
            # blocked, a write waits for room for the rest or a quarter of max_pending: not a cut per settled message
            least = 1 if self.when_full == "drop" else min(len(records) - start, max(1, self.max_pending // 4))
            if room >= least:
                chunk = records if start == 0 and room >= len(records) else records[start : start + room]
                self._accept(chunk)
                start += len(chunk)
            elif self.when_full == "drop":
                self.counters.dropped += len(records) - start
                return
            else:  # wait for room; open batches go out now only if nothing else is on its way to free some
                if self._held == self._batcher.held:  # (draining them at every wait would cut small messages)
                    self._enqueue(self._batcher.drain())
                await self._wait_settled()

    async def flush(self) -> None:
        """Send every open batch and wait until every accepted record is acknowledged or failed."""
        self.start()
        self._enqueue(self._batcher.drain())
        while self._held:
            await self._wait_settled()
        if self._outage.since is not None and self.counters.acked and not self._failing:
            self._outage.update(None, self._holding)  # delivered before the next check: the outage is over

    async def close(self, timeout_s: float | None = None) -> None:
        """Stop the tasks and the producer; whatever was never handed to it counts as failed.

        The producer delivers what it holds; after `timeout_s` (None: no limit)
        the records still unacknowledged count as failed too.
        """
        await _cancel(self._tasks)
        self._tasks = []
        unsent = (self._taken[0] if self._taken else []) + list(self._queue) + self._batcher.drain()
        self._queue.clear()
        self._taken = None
        for message in unsent:
            self._settle(message.count, error="closed before sending")
        if self._producer is not None:
            with contextlib.suppress(TimeoutError, KafkaError, OSError):
                await asyncio.wait_for(self._producer.stop(), timeout_s)  # its futures settle what it delivers
        if self._held:
            self._settle(self._held, error="not acknowledged before shutdown")
            self._abandoned = True

    def _accept(self, records: Sequence[Record]) -> None:
        self._held += len(records)
        now = self._clock()
        self._enqueue(self._batcher.add(records, now))
        self._enqueue(self._batcher.due(now))
        if self._batcher.held:
            self._opened.set()

    def _enqueue(self, messages: list[Message]) -> None:
        """Queue messages to send."""
        if messages:
            self._queue.extend(messages)
            self._queued.set()

    async def _wait_settled(self) -> None:
        self._settled.clear()
        await self._settled.wait()

    async def _send_loop(self) -> None:
        """The one task that hands messages to the producer, in order (per partition, for built batches)."""
        while True:
            while not (self._taken or self._queue):
                self._queued.clear()
                await self._queued.wait()
            await self._connected.wait()
            self._taken = self._taken or await self._take()
            if self._taken is None:  # its batch could not be built: failed
                continue
            messages, built = self._taken
            count = sum(message.count for message in messages)
            try:
                if built is None:
                    [message] = messages
                    delivery = await self._producer.send(  # type: ignore[union-attr]
                        self.topic, value=message.value, key=message.key, headers=message.headers
                    )
                else:
                    producer = cast(BatchProducer, self._producer)  # prepare is set only with one (open_kafka_sink)
                    delivery = await producer.send_batch(self.topic, messages[0].key, built)
            except asyncio.CancelledError:
                raise  # close() counts what was taken
            except KafkaError as exc:
                if not (exc.retriable or isinstance(exc, KafkaTimeoutError)):  # a timeout: it was never taken
                    self._taken = None
                    self._refused(count, len(messages), _describe(exc))
                    continue
                # not taken for now (its buffer stays full while the broker is away): keep it, first in line;
                # the health check says what is going on
                self.counters.retries += 1
                await asyncio.sleep(RETRY_MIN_S)
                continue
            except Exception as exc:  # a send that raises otherwise fails these messages, never the loop
                self._taken = None
                self._refused(count, len(messages), _describe(exc))
                continue
            self._taken = None
            if not self.counters.in_flight:
                self._progress_at = self._clock()
            self.counters.sent += count
            self.counters.messages += len(messages)
            for message in messages:
                self.counters.batch_sizes.observe(message.count)
            delivery.add_done_callback(partial(self._delivered, count, len(messages), self._clock()))

    async def _take(self) -> tuple[list[Message], PreparedBatch | None] | None:
        """The next messages to hand over: the first in line alone (through send()); or, when it is built into a
        record batch, with it every large message waiting for the same partition (up to the batch's size, and
        never past a small one of that partition: its order stays), the batch built on the builder thread while
        the event loop goes on. The more the broker takes to answer, the more wait, the larger the batch."""
        first = self._queue.popleft()
        if self._prepare is None or first.nbytes < BUILT_FROM:
            return [first], None
        producer = cast(BatchProducer, self._producer)
        partition = producer.partition(self.topic, first.key)
        same, others = [first], []
        for _ in range(min(len(self._queue), MAX_BATCH_MESSAGES) if partition is not None else 0):
            message = self._queue.popleft()
            if producer.partition(self.topic, message.key) != partition:
                others.append(message)
            elif message.nbytes < BUILT_FROM:
                self._queue.appendleft(message)
                break
            else:
                same.append(message)
        self._queue.extendleft(reversed(others))  # they keep their places, first in line
        try:
            built = await asyncio.get_running_loop().run_in_executor(builder(), self._prepare, same)
        except asyncio.CancelledError:
            self._queue.extendleft(reversed(same))  # for close() to count
            raise
        except Exception as exc:  # never the loop
            self._refused(sum(m.count for m in same), len(same), f"its record batch could not be built: {exc}")
            return None
        used = built.record_count()
        self._queue.extendleft(reversed(same[used:]))  # those that did not fit: the next batch's
        return same[:used], built

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

    def _delivered(self, count: int, messages: int, sent_at: float, delivery: asyncio.Future[object]) -> None:
        if self._abandoned:  # already counted as failed at close
            return
        if delivery.cancelled():
            self._settle(count, messages, "delivery cancelled")
        elif delivery.exception() is not None:
            self._refused(count, messages, _describe(delivery.exception()))
        else:
            self.counters.acked_messages += messages
            self._progress_at = self._clock()
            self._failing = False
            self.counters.latency.observe(self._clock() - sent_at)
            self._settle(count)

    def _refused(self, count: int, messages: int, error: str) -> None:
        """Records of messages the client or the broker refused: failed, and said (rate-limited upstream)."""
        self._failing = True
        self._say("error", f"Kafka refused a message: {error}")
        self._settle(count, messages, error)

    def _settle(self, count: int, messages: int = 1, error: str | None = None) -> None:
        """`count` records of `messages` messages acknowledged, or failed (`error`)."""
        if error is None:
            self.counters.acked += count
        else:
            self.counters.failed += count
            self.counters.errors += messages
            self.counters.last_error = error
        self._held -= count
        self._settled.set()


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the tasks and wait until they are done, asking again if one goes on.

    On Python 3.11, asyncio.wait_for (which aiokafka uses) can swallow a
    cancellation that comes just as what it waits for completes.
    """
    for task in tasks:
        task.cancel()
    while pending := [task for task in tasks if not task.done()]:
        await asyncio.wait(pending, timeout=0.1)
        for task in pending:
            task.cancel()


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, MessageSizeTooLargeError):
        text += " (keep --batch-bytes 16 KiB under the broker's message.max.bytes)"
    return text


@contextlib.asynccontextmanager
async def open_kafka_sink(
    cluster: Cluster,
    settings: ProducerSettings,
    topic: str,
    batcher: MessageBatcher,
    *,
    max_pending: int = 200_000,
    when_full: str = "block",
    wait_for_broker: bool = False,
    say: Say | None = None,
    close_timeout_s: float = CLOSE_TIMEOUT_S,
) -> AsyncIterator[KafkaSink]:
    """A KafkaSink on a started producer.

    KafkaUnavailable when the cluster cannot be reached, unless
    `wait_for_broker`: then the sink starts at once and connects when it can.
    """
    options = dict(
        max_pending=max_pending,
        when_full=when_full,
        say=say,
        prepare=batch_preparer(settings.compression, settings.max_batch_bytes, settings.native_batches),
    )
    start = partial(start_producer, cluster, settings, topic, say=say)
    if wait_for_broker:
        sink = KafkaSink(None, topic, batcher, connect=start, **options)
    else:
        sink = KafkaSink(await start(), topic, batcher, **options)
    sink.start()  # the health check runs from the start, before any record
    try:
        yield sink
    finally:
        await sink.close(close_timeout_s)
