"""Routing: decoded probes (and their frames) through the flow rules into one sink per (topic, kind).

The sink that `replay` (and `collect`) write to when the config file has
rules. It runs the rules' functions (functions.py) and writes what they
emit: records to a KafkaSink per topic as today, path histograms to a
KafkaSink per topic whose messages carry `ptc-kind: histogram`, raw frames
to a KafkaSink per topic with one message per frame (kinds.py). One
producer (SharedProducer) serves every topic. With `--output` everything but raw frames
goes to the one JSON lines stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any

from aiokafka.errors import KafkaError

from ..capture.pcap import Frame
from ..codec.histogram import Histogram
from ..codec.record import Record
from ..kafka.client import Cluster, ProducerSettings, start_producer
from ..kafka.kinds import HistogramBatcher, RawBatcher
from ..kafka.message import MessageBatcher
from ..kafka.recordbatch import PreparedBatch, batch_preparer
from ..kafka.sink import CLOSE_TIMEOUT_S, DeliveryCounters, KafkaSink, Say, open_kafka_sink
from .batch import Batcher
from .functions import FRAMES, HISTOGRAMS, Emitted, RuleEngine
from .rules import Ruleset
from .sinks import JsonLinesSink, OutputError

Output = tuple[str, str]  # topic, kind


class Discard:
    """Takes items and keeps none (raw frames when the output is a JSON lines file)."""

    def __init__(self) -> None:
        self.count = 0

    async def write(self, items: Sequence[object]) -> None:
        self.count += len(items)

    async def flush(self) -> None:
        pass


class RoutedSink:
    """A Sink (and replay's FrameSink) that routes records by the rules into per-(topic, kind) sinks.

    With `tick_s`, a task closes histogram windows by the wall clock every
    `tick_s` seconds while no probe comes (live capture; a replay's clock is
    its capture times).
    """

    def __init__(
        self,
        engine: RuleEngine,
        sinks: Mapping[Output, Any],
        *,
        tick_s: float | None = None,
        lines: JsonLinesSink | None = None,
    ) -> None:
        self.engine = engine
        self.lines = lines  # the JSON lines sink of an --output, whose counts tell what was written
        self.sinks = dict(sinks)
        self.written = dict.fromkeys(self.sinks, 0)  # items handed to each output's sink
        self.wants_frames = engine.wants_frames
        self._tick_s = tick_s
        self._ticker: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RoutedSink:
        if self._tick_s is not None:
            self._ticker = asyncio.create_task(self._tick_loop(self._tick_s))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker

    def core_rules(self) -> Any:
        """The rules compiled for the native engine's core (core_rules.bind_rules), None where it is not built."""
        return self.engine.in_core()

    async def write(self, records: Sequence[Record]) -> None:
        await self._send(self.engine.route(records))

    async def write_frames(self, records: Sequence[Record], frames: list[Frame]) -> None:
        await self._send(self.engine.route(records, frames))

    async def tick(self, now_ns: int) -> None:
        """Close the histogram windows the clock has passed (and send them)."""
        await self._send(self.engine.tick(now_ns))

    async def flush(self) -> None:
        """Close every histogram window, then flush every sink (each once)."""
        await self._send(self.engine.flush())
        for sink in {id(sink): sink for sink in self.sinks.values()}.values():
            await sink.flush()

    async def _send(self, emitted: Emitted) -> None:
        for topic, kind, items in emitted.outputs():
            self.written[(topic, kind)] += len(items)
            await self.sinks[(topic, kind)].write(items)

    async def _tick_loop(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.tick(time.time_ns())
            except OutputError:  # counted by the output's sink; the next write of a probe raises it again
                return

    # ------------------------------------------------------------ Kafka delivery, summed (what collect's stats read)

    def kafka_sinks(self) -> dict[Output, KafkaSink]:
        return {output: sink for output, sink in self.sinks.items() if isinstance(sink, KafkaSink)}

    @property
    def counters(self) -> DeliveryCounters:
        """The Kafka sinks' counters added up."""
        total = DeliveryCounters()
        for sink in self.kafka_sinks().values():
            for name, value in vars(sink.counters).items():
                if isinstance(value, Histogram):
                    getattr(total, name).add(value)
                elif isinstance(value, int):
                    setattr(total, name, getattr(total, name) + value)
                elif value:
                    setattr(total, name, value)  # the last error
        return total

    @property
    def held(self) -> int:
        return sum(sink.held for sink in self.kafka_sinks().values())

    @property
    def broker_up(self) -> bool | None:
        first = next(iter(self.kafka_sinks().values()), None)
        return None if first is None else first.broker_up

    def delivered(self) -> bool:
        """Whether every item handed to a Kafka sink was acknowledged (after `flush`)."""
        return all(sink.counters.acked == self.written[output] for output, sink in self.kafka_sinks().items())

    def summary(self) -> str:
        """What each rule did, then what each output took (and, into Kafka, what the broker acknowledged)."""
        lines = ["rules (first match wins)", *("  " + line for line in self.engine.summary().splitlines())]
        lines.append("outputs")
        width = max(len(f"{topic} {kind}") for topic, kind in self.sinks) + 2
        for (topic, kind), sink in self.sinks.items():
            what = f"{self.written[(topic, kind)]:,}"
            if isinstance(sink, KafkaSink):
                c = sink.counters
                what += (
                    f" in {c.messages:,} messages, {c.acked:,} acknowledged, {c.dropped:,} dropped, {c.failed:,} failed"
                )
            elif isinstance(sink, Discard):
                what += " not written (--output writes JSON lines)"
            else:
                what += " written"
            lines.append(f"  {f'{topic} {kind}':<{width}}{what}")
        return "\n".join(lines)

    async def close(self, timeout_s: float | None = None) -> None:
        """Close the Kafka sinks, each within `timeout_s` (what is unacknowledged by then counts as failed)."""
        for sink in self.kafka_sinks().values():
            await sink.close(timeout_s)


def file_routes(engine: RuleEngine, lines: JsonLinesSink, *, tick_s: float | None = None) -> RoutedSink:
    """Everything to one JSON lines sink (histograms are lines with "kind": "histogram"); raw frames nowhere."""
    discard = Discard()
    sinks = {(topic, kind): discard if kind == FRAMES else lines for topic, kind in engine.outputs()}
    return RoutedSink(engine, sinks, tick_s=tick_s, lines=lines)


class SharedProducer:
    """One producer for every sink: started once, when the first sink asks; a sink's `close` only flushes it.

    `close` stops it, once every sink is closed.
    """

    def __init__(self, start: Callable[[], Awaitable[Any]]) -> None:
        self._start = start
        self._lock = asyncio.Lock()
        self.producer: Any = None

    async def connect(self) -> SharedProducer:
        """Itself, once the producer is started (KafkaUnavailable when it cannot be, this time)."""
        async with self._lock:
            if self.producer is None:
                self.producer = await self._start()
        return self

    @property
    def client(self) -> Any:  # KafkaSink's health check asks it for metadata
        return self.producer.client

    @property
    def renewing(self) -> bool:  # and whether it is replacing a producer whose sequence state was lost
        return bool(self.producer.renewing)

    async def send(self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> Any:
        return await self.producer.send(topic, value=value, key=key, headers=headers)

    def partition(self, topic: str, key: bytes) -> int | None:
        return self.producer.partition(topic, key)  # type: ignore[no-any-return]

    async def send_batch(self, topic: str, key: bytes, batch: PreparedBatch) -> Any:
        return await self.producer.send_batch(topic, key, batch)

    async def stop(self) -> None:
        await self.producer.flush()  # what the sink handed over is delivered, as stop() would do

    async def close(self, timeout_s: float | None = None) -> None:
        if self.producer is not None:
            with contextlib.suppress(TimeoutError, KafkaError, OSError):
                await asyncio.wait_for(self.producer.stop(), timeout_s)


@contextlib.asynccontextmanager
async def open_kafka_routes(
    engine: RuleEngine,
    cluster: Cluster,
    settings: ProducerSettings,
    records_batcher: Callable[[], Batcher],
    *,
    max_pending: int = 200_000,
    when_full: str = "block",
    tick_s: float | None = None,
    wait_for_broker: bool = False,
    say: Say | None = None,
    close_timeout_s: float | None = CLOSE_TIMEOUT_S,
) -> AsyncIterator[RoutedSink]:
    """A RoutedSink into Kafka: one producer for a KafkaSink per (topic, kind).

    KafkaUnavailable when the cluster or a rule's topic cannot be reached,
    unless `wait_for_broker`: then the sinks start at once and connect when
    they can (as open_kafka_sink's). `records_batcher` makes a fresh Batcher
    (--format, the batch limits); histogram messages are batched the same
    way, raw frames are not. `close_timeout_s` bounds each sink's close.
    """
    topics = list(dict.fromkeys(topic for topic, _ in engine.outputs()))
    shared = SharedProducer(partial(start_producer, cluster, settings, *topics, say=say))
    prepare = batch_preparer(settings.compression, settings.max_batch_bytes, settings.native_batches)
    if not wait_for_broker:
        await shared.connect()
    sinks = {}
    for topic, kind in engine.outputs():
        batcher: MessageBatcher = RawBatcher() if kind == FRAMES else records_batcher()
        batcher = HistogramBatcher(batcher) if kind == HISTOGRAMS else batcher
        options: dict[str, Any] = {"max_pending": max_pending, "when_full": when_full, "say": say, "prepare": prepare}
        if wait_for_broker:
            sink = KafkaSink(None, topic, batcher, connect=shared.connect, **options)  # type: ignore[arg-type]
        else:
            sink = KafkaSink(shared, topic, batcher, **options)  # type: ignore[arg-type]
        sink.start()
        sinks[(topic, kind)] = sink
    routed = RoutedSink(engine, sinks, tick_s=tick_s)
    try:
        async with routed:
            yield routed
    finally:
        await routed.close(close_timeout_s)
        await shared.close(close_timeout_s)


def open_kafka_output(
    rules: Ruleset,
    main_topic: str,
    cluster: Cluster,
    settings: ProducerSettings,
    records_batcher: Callable[[], Batcher],
    *,
    tick_s: float | None = None,
    **options: Any,
) -> contextlib.AbstractAsyncContextManager[KafkaSink | RoutedSink]:
    """Into Kafka: a RoutedSink through the rules, or without rules one KafkaSink on the main topic.

    `options` are open_kafka_sink's (max_pending, when_full, wait_for_broker, say).
    """
    if rules:
        engine = RuleEngine(rules, main_topic)
        return open_kafka_routes(engine, cluster, settings, records_batcher, tick_s=tick_s, **options)
    return open_kafka_sink(cluster, settings, main_topic, records_batcher(), **options)
