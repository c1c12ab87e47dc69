"""The Quix Streams application of `ptc analyze`: probe topic in, path histograms and path events out.

    probes (key: source) -> decode, pre-aggregate each message per window (engines.Aggregator.split)
      -> tumbling window per source, event time = the aggregate's latest probe (reduce: Aggregator.merge, RocksDB)
      -> final(): per source, in window order: loss across windows, histograms, events (stateful apply)
      -> --output-topic (histogram messages, kinds.py) and --events-topic (JSON)

Pre-aggregating a message's probes before the window keeps Quix Streams'
per-item cost (a RocksDB read and write) per message and window instead of
per probe; the aggregates are mergeable, so the result is the same. The
per-probe work (parsing the message, the delay sketches) is the compiled
engine's (native/src/analyze.rs) unless PTC_ENGINE=python (engines.py).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from quixstreams import Application, State
from quixstreams.kafka.configuration import ConnectionConfig
from quixstreams.state.rocksdb import RocksDBOptions
from quixstreams.utils.json import dumps as json_dumps
from quixstreams.utils.json import loads as json_loads

from ..codec.record import json_encoder
from ..kafka.client import Cluster
from ..kafka.kinds import HISTOGRAM_KIND, KIND_HEADER
from ..kafka.message import MessageError, message_headers
from . import events as ev
from . import windows
from .connection import librdkafka_settings
from .engines import Aggregator, Item, make_aggregator

log = logging.getLogger("ptc.analyze")


@dataclass
class Settings:
    cluster: Cluster  # brokers, TLS and SASL (the --security-protocol family)
    topic: str
    output_topic: str
    events_topic: str
    group: str
    window_ms: int
    grace_ms: int
    state_dir: str
    thresholds: ev.Thresholds = field(default_factory=ev.Thresholds)
    exactly_once: bool = True
    from_beginning: bool = True
    instance_id: str | None = None  # stable across restarts: transactional id and static group membership
    loglevel: str = "WARNING"  # Quix Streams' own log (-v: INFO)
    close_by: str = "source"  # whose clock closes a source's windows: "source" (its own) or "partition"

    def connection(self) -> dict[str, str]:
        """librdkafka settings of the cluster (connection.py); KafkaConfigError when they do not fit together."""
        return librdkafka_settings(self.cluster)

    def client_configs(self) -> tuple[dict[str, str], dict[str, str]]:
        """librdkafka settings (consumer, producer) that make a restart under the same instance id take over at once.

        Without them a SIGKILLed instance's open transaction pins the last stable offset of every partition it
        wrote (changelogs, outputs) until transaction.timeout.ms, and its partitions stay with the dead member
        until session.timeout.ms: the new owner's changelog recovery waits for both.
        """
        consumer = {"isolation.level": "read_committed"}
        if self.instance_id is None:
            return consumer, {}
        consumer["group.instance.id"] = f"ptc-analyze-{self.group}-{self.instance_id}"
        producer = {"transactional.id": f"ptc-analyze-{self.group}-{self.instance_id}"} if self.exactly_once else {}
        return consumer, producer


@dataclass
class Counters:
    """What one instance saw; every skip and late probe is counted (and said on stderr)."""

    messages: int = 0
    probes: int = 0
    bad_messages: int = 0
    late_probes: int = 0
    windows: int = 0
    histograms: int = 0
    events: int = 0
    on_histograms: list[Callable[[list], None]] = field(default_factory=list)  # metrics and table: observe

    def summary(self) -> str:
        return (
            f"ptc analyze: {self.messages:,} messages, {self.probes:,} probes, {self.windows:,} windows closed, "
            f"{self.histograms:,} path histograms, {self.events:,} events, {self.late_probes:,} late probes, "
            f"{self.bad_messages:,} bad messages skipped"
        )


class Analyzer:
    """The pipeline's steps, each a small function over plain values (windows.py, events.py do the work)."""

    def __init__(self, settings: Settings, counters: Counters, aggregator: Aggregator) -> None:
        self.settings = settings
        self.counters = counters
        self.aggregator = aggregator

    def split(self, value: bytes | None, key: str | None, timestamp: int, headers: Any) -> list[Item]:
        """A message's probes as (latest probe ms, aggregate, probes) per window; a bad message is counted, skipped."""
        self.counters.messages += 1
        try:
            items = self.aggregator.split(value, headers, key, self.settings.window_ms)
        except MessageError as exc:
            return self._bad(f"{exc}")
        self.counters.probes += sum(item[2] for item in items)
        return items

    def reduce(self, aggregate: Any, item: Item) -> Any:
        return self.aggregator.merge(aggregate, item[1])

    def _bad(self, reason: str) -> list:
        self.counters.bad_messages += 1
        print(f"ptc: skipped a message: {reason}", file=sys.stderr)
        return []

    def late(self, value: Any, key: Any, timestamp_ms: int, late_by_ms: int, start: int, end: int, *_: Any) -> bool:
        probes = value[2]
        self.counters.late_probes += probes
        print(
            f"ptc analyze: {probes} late probes of {key} for window {start} ms (closed {late_by_ms} ms before)",
            file=sys.stderr,
        )
        return False

    def close(self, window: dict, key: str, timestamp: int, headers: Any, state: State) -> dict:
        """A closed window of one source: its histogram message and its events (state: events.new_state())."""
        memory = state.get("paths") or ev.new_state()
        start_ms, closed = window["start"], self.aggregator.read(window["value"])
        losses = windows.losses(closed.sessions, memory["sequences"])
        hists = windows.histograms(key, start_ms, self.settings.window_ms, closed.paths, losses)
        width_ns = self.settings.window_ms * windows.NS_PER_MS
        found = ev.on_window(memory, key, start_ms * windows.NS_PER_MS, width_ns, hists, self.settings.thresholds)
        state.set("paths", memory)
        self.counters.windows += 1
        self.counters.histograms += len(hists)
        self.counters.events += len(found)
        for observe in self.counters.on_histograms:
            observe(hists)
        return {"value": json_encoder.encode_lines(hists), "count": len(hists), "events": found}


CLOSING = {"source": "key", "partition": "partition"}  # --close-by: Quix Streams' closing strategy (keys: sources)


def _first(item: Item) -> Any:
    return item[1]


def state_dumps(value: Any) -> bytes:
    """The state store's serializer: the native engine's aggregates are bytes already (a 0 byte before them, which
    no JSON text starts with); everything else is JSON as Quix Streams writes it."""
    return b"\x00" + value if isinstance(value, bytes) else json_dumps(value)


def state_loads(data: bytes) -> Any:
    return data[1:] if data[:1] == b"\x00" else json_loads(data)


def _histogram_headers(value: dict, key: Any, timestamp: int, headers: Any) -> list[tuple[str, bytes]]:
    """kinds.py's histogram message: JSON lines, ptc-schema (histogram schema 1), ptc-count, ptc-kind."""
    return [*message_headers("json", value["count"]), (KIND_HEADER, HISTOGRAM_KIND.encode())]


def _now_ms(*_: Any) -> int:
    """The wall clock: the Kafka timestamp of what analyze writes (the window's own time is in the record).

    Quix Streams would stamp an output with its window's event time; a broker deletes a segment once its newest
    timestamp is older than retention.ms (7 days by default), so the windows of probes older than that (a replay,
    a backfill, a source with a wrong clock) would vanish at the broker's next retention check.
    """
    return time.time_ns() // 1_000_000


def application(settings: Settings) -> Application:
    """The Quix Streams application with these connection, group, guarantee and state settings (no dataframe)."""
    consumer_config, producer_config = settings.client_configs()
    return Application(
        broker_address=ConnectionConfig.from_librdkafka_dict(settings.connection()),
        consumer_group=settings.group,
        auto_offset_reset="earliest" if settings.from_beginning else "latest",
        processing_guarantee="exactly-once" if settings.exactly_once else "at-least-once",
        state_dir=settings.state_dir,
        commit_interval=1.0,
        loglevel=settings.loglevel,
        consumer_extra_config=consumer_config,
        producer_extra_config=producer_config,
        rocksdb_options=RocksDBOptions(dumps=state_dumps, loads=state_loads),
    )


def build(settings: Settings, counters: Counters) -> Application:
    """The Quix Streams application, ready to run()."""
    app = application(settings)
    steps = Analyzer(settings, counters, make_aggregator())
    probes = app.topic(settings.topic, key_deserializer="str", value_deserializer="bytes")
    output = app.topic(settings.output_topic, key_serializer="str", value_serializer="bytes")
    events = app.topic(settings.events_topic, key_serializer="str", value_serializer="json")
    sdf = app.dataframe(probes)
    sdf = sdf.apply(steps.split, expand=True, metadata=True)
    sdf = sdf.set_timestamp(lambda value, key, timestamp, headers: value[0])
    window = sdf.tumbling_window(settings.window_ms, grace_ms=settings.grace_ms, on_late=steps.late)
    closed = window.reduce(steps.reduce, _first).final(closing_strategy=CLOSING[settings.close_by])
    closed = closed.apply(steps.close, stateful=True, metadata=True).set_timestamp(_now_ms)
    closed.filter(lambda value: value["count"] > 0).set_headers(_histogram_headers).apply(
        lambda value: value["value"]
    ).to_topic(output)
    closed.apply(lambda value: value["events"], expand=True).set_headers(lambda *_: []).to_topic(events)
    return app
