"""The producer ptc sends with: aiokafka's, made to ride out a broker outage of any length.

aiokafka (0.13, 0.14) does three things on its own that an outage longer
than its request timeout (40 s) turns into loss, or into a connection storm:

- It fails a batch that waited longer than `request_timeout_ms` while its
  partition had no known leader, and it does so after the batch took its
  sequence numbers. A broker that shuts down tells its clients "no leader"
  on its way out, so after 40 s every held batch fails, the idempotent
  producer's sequence has a gap, and the broker answers every later batch
  with OutOfOrderSequenceNumber. `outage_proof` makes batches never
  expire: a batch is retried, as the same batch with the same producer id
  and sequence numbers, until the broker takes it; the broker writes a
  batch it already has once (DuplicateSequenceNumber is taken for success).
- While the leader is unknown its sender asks for metadata in a tight
  loop, and each request opens a new connection: thousands a second.
  `outage_proof` backs off every reconnection to a broker (from 0.1 s,
  doubling to 1 s) and every metadata request after a failed one (the same
  steps; 0.1 s apart at least otherwise).
- Its sequence state cannot always be saved: a batch the broker refused
  for good (too large, say) leaves a gap, and a broker can lose the
  producer's state (UnknownProducerId). Then every later batch fails.
  `RenewingProducer` replaces such a producer with a new one (a new
  producer id, sequences from 0) and sends again, in their order, the
  messages the broker refused for their sequence number. The broker wrote
  none of those (it checks the sequence before writing), so sending them
  again duplicates nothing; messages refused for any other reason fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.client import AIOKafkaClient, ConnectionGroup
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    KafkaTimeoutError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)

from .recordbatch import PreparedBatch, partition_of, send_built

RECONNECT_MIN_S, RECONNECT_MAX_S = 0.1, 1.0  # backoff between connection attempts to a broker, and metadata requests
RESEND_LIMIT = 3  # a message refused for its sequence this often, each time by a fresh producer, fails
RENEW_RETRY_MIN_S, RENEW_RETRY_MAX_S = 0.5, 10.0  # backoff between attempts to start the replacing producer
STOP_TIMEOUT_S = 5.0
POLL_S = 0.05  # how often a renewal looks whether the old producer has settled everything
SEQUENCE_ERRORS = (OutOfOrderSequenceNumber, UnknownProducerId, InvalidProducerEpoch, ProducerFenced)

Say = Callable[[str, str], None]


class Backoff:
    """When the next attempt may be made: `first_s` after a failure, doubling to `max_s`; `floor_s` after a success."""

    def __init__(self, first_s: float, max_s: float, floor_s: float = 0.0) -> None:
        self.first_s, self.max_s, self.floor_s = first_s, max_s, floor_s
        self.delay_s = 0.0
        self.not_before = 0.0

    def wait_s(self, now: float) -> float:
        return max(0.0, self.not_before - now)

    def failed(self, now: float) -> None:
        self.delay_s = min(self.max_s, max(self.first_s, 2 * self.delay_s))
        self.not_before = now + self.delay_s

    def succeeded(self, now: float) -> None:
        self.delay_s = 0.0
        self.not_before = now + self.floor_s


class BackoffClient(AIOKafkaClient):
    """AIOKafkaClient whose reconnections and metadata requests back off (installed by `outage_proof`)."""

    _reconnects: dict[object, Backoff]
    _metadata_backoff: Backoff

    async def _get_conn(self, node_id: Any, *, group: Any = ConnectionGroup.DEFAULT, no_hint: bool = False) -> Any:
        conn = self._conns.get((node_id, group))
        if conn is not None and conn.connected():
            return conn
        backoff = self._reconnects.setdefault(node_id, Backoff(RECONNECT_MIN_S, RECONNECT_MAX_S))
        if backoff.wait_s(time.monotonic()) > 0:
            return None  # as aiokafka answers for a connection that failed: its callers wait and retry
        conn = await super()._get_conn(node_id, group=group, no_hint=no_hint)
        (backoff.failed if conn is None else backoff.succeeded)(time.monotonic())
        return conn

    async def _metadata_update(self, cluster_metadata: Any, topics: Any) -> bool:
        wait_s = self._metadata_backoff.wait_s(time.monotonic())
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        updated = await super()._metadata_update(cluster_metadata, topics)
        (self._metadata_backoff.succeeded if updated else self._metadata_backoff.failed)(time.monotonic())
        return bool(updated)


def outage_proof(producer: AIOKafkaProducer) -> AIOKafkaProducer:
    """The producer, its batches never expiring and its client backing off (see the module's docstring)."""
    client, accumulator = producer.client, getattr(producer, "_message_accumulator", None)
    if type(client) is not AIOKafkaClient or not hasattr(accumulator, "_batch_ttl"):
        raise RuntimeError("this aiokafka is not one ptc knows how to keep through outages (0.13 or 0.14)")
    client.__class__ = BackoffClient
    client._reconnects = {}  # type: ignore[attr-defined]
    client._metadata_backoff = Backoff(RECONNECT_MIN_S, RECONNECT_MAX_S, floor_s=RECONNECT_MIN_S)  # type: ignore[attr-defined]
    accumulator._batch_ttl = math.inf  # type: ignore[union-attr]
    return producer


@dataclass(eq=False)
class _Message:
    number: int  # in the order sent: what is sent again goes in this order
    topic: str
    value: bytes
    key: bytes
    headers: list[tuple[str, bytes]]
    delivered: asyncio.Future[Any] = field(repr=False)  # what the caller waits on
    attempts: int = 0
    batch: PreparedBatch | None = None  # the message built as a record batch (then value and headers are unused)


class RenewingProducer:
    """An AIOKafkaProducer that is replaced when its sequence state is lost; same `send`, `flush`, `stop`, `client`.

    `start` makes a started producer (retrying for a while; KafkaUnavailable
    when it cannot), as the first one was made.
    """

    def __init__(self, producer: AIOKafkaProducer, start: Callable[[], Awaitable[AIOKafkaProducer]], say: Say) -> None:
        self._producer = producer
        self._start = start
        self._say = say
        self._numbers = itertools.count()
        self._unsettled: dict[int, _Message] = {}  # handed to the producer, not yet acknowledged or failed
        self._handing = 0  # sends inside the producer's send() now
        self._again: list[_Message] = []  # refused for their sequence: to send again through a new producer
        self._ready = asyncio.Event()  # not renewing
        self._ready.set()
        self._renewal: asyncio.Task[None] | None = None
        self.renewals = 0

    @property
    def client(self) -> AIOKafkaClient:
        return self._producer.client

    @property
    def renewing(self) -> bool:
        return self._renewal is not None

    async def send(self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> asyncio.Future[Any]:
        """The message to its topic; the future settles with the broker's answer (as AIOKafkaProducer.send's)."""
        return await self._send(topic, value, key, headers)

    def partition(self, topic: str, key: bytes) -> int | None:
        """The partition `send_batch` sends `key` to now, or None while the topic's partitions are not known."""
        return partition_of(self._producer, topic, key)

    async def send_batch(self, topic: str, key: bytes, batch: PreparedBatch) -> asyncio.Future[Any]:
        """Messages built as one record batch, to the key's partition: kept, retried and sent again as `send`'s."""
        return await self._send(topic, b"", key, [], batch)

    async def _send(
        self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]], batch: PreparedBatch | None = None
    ) -> asyncio.Future[Any]:
        await self._ready.wait()
        future = asyncio.get_running_loop().create_future()
        message = _Message(next(self._numbers), topic, value, key, headers, future, batch=batch)
        await self._hand_over(message)
        return message.delivered

    async def flush(self) -> None:
        """Until everything sent is acknowledged or failed, through any renewal."""
        while True:
            await self._ready.wait()
            await self._producer.flush()
            if not (self._unsettled or self._again or self._renewal):
                return
            await asyncio.sleep(POLL_S)  # the delivery callbacks run, or a renewal starts

    async def stop(self) -> None:
        """Stop renewing, fail what waits to be sent again, and stop the producer (it delivers what it has)."""
        if self._renewal is not None:
            self._renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewal
        for message in self._again:
            _settle(message.delivered, error=KafkaError("not sent again before shutdown"))
        self._again = []
        await self._producer.stop()

    async def _hand_over(self, message: _Message) -> None:
        """Into the producer's buffer; its errors go to the caller, except a producer that failed for good."""
        producer = self._producer
        self._handing += 1
        try:
            if message.batch is None:
                delivery = await producer.send(
                    message.topic, value=message.value, key=message.key, headers=message.headers
                )
            else:
                delivery = await send_built(producer, message.topic, message.key, message.batch)
        except SEQUENCE_ERRORS as exc:  # its sender stopped on a sequence error: every send raises it now
            self._refused(message, exc)
            return
        finally:
            self._handing -= 1
        message.attempts += 1
        self._unsettled[message.number] = message
        delivery.add_done_callback(partial(self._answered, message))

    def _answered(self, message: _Message, delivery: asyncio.Future[Any]) -> None:
        self._unsettled.pop(message.number, None)
        error = None if delivery.cancelled() else delivery.exception()
        if isinstance(error, SEQUENCE_ERRORS) and message.attempts < RESEND_LIMIT:
            self._refused(message, error)
        elif delivery.cancelled():
            message.delivered.cancel()
        else:
            _settle(message.delivered, delivery.result() if error is None else None, error)

    def _refused(self, message: _Message, error: BaseException) -> None:
        """Refused for its sequence number: the broker did not write it; it goes again through a new producer."""
        self._again.append(message)
        if self._renewal is None:
            self._ready.clear()
            why = type(error).__name__
            self._say("error", f"Kafka refused a message for its sequence number ({why}): renewing the producer")
            self._renewal = asyncio.create_task(self._renew())

    async def _renew(self) -> None:
        """Wait for the old producer's last answers, start a new one, send the refused messages again, in order."""
        while self._again:
            while self._unsettled or self._handing:
                await asyncio.sleep(POLL_S)
            with contextlib.suppress(TimeoutError, KafkaError, OSError):
                await asyncio.wait_for(self._producer.stop(), STOP_TIMEOUT_S)
            self._producer = await self._restart()
            self.renewals += 1
            again, self._again = sorted(self._again, key=lambda m: m.number), []
            for message in again:
                await self._hand_over_again(message)
            self._say("info", f"Kafka producer renewed: {len(again):,} messages sent again")
        self._renewal = None
        self._ready.set()

    async def _restart(self) -> AIOKafkaProducer:
        backoff = Backoff(RENEW_RETRY_MIN_S, RENEW_RETRY_MAX_S)
        while True:
            try:
                return await self._start()
            except Exception as exc:  # KafkaUnavailable, in one line: the broker may come back
                self._say("error", f"{exc}: retrying, with backoff, to renew the producer")
            backoff.failed(time.monotonic())
            await asyncio.sleep(backoff.delay_s)

    async def _hand_over_again(self, message: _Message) -> None:
        while True:
            try:
                await self._hand_over(message)
                return
            except KafkaTimeoutError:  # its buffer is full for now: wait for room, as the sink does
                await asyncio.sleep(RENEW_RETRY_MIN_S)
            except Exception as exc:  # refused for good: the caller sees it as this message's answer
                _settle(message.delivered, error=exc)
                return


def _settle(future: asyncio.Future[Any], result: Any = None, error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)
