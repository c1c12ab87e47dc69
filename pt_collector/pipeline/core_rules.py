"""Flow rules matched in the native engine's core: the rules compiled for it, and its routed batches' outputs.

With rules bound (`bind_rules`), the native engine matches every record as it decodes it (native/src/rules.rs:
the same keys and order as rules.Match, the same keep test as rules.Sample) and its batch says, per rule, how
many probes it matched and kept. The records of `pass` and `sample` rules stay encoded: per output (a topic's
records, a "slot") they are handed on as the batch's bytes, to a JSON lines file whole and to a Kafka sink per
source node (SourceGroups), with no Record object. A `histogram` rule's probes reach its windows as values the
core read from the frame (native/src/path_histogram.rs keeps them, the twin of path_histogram.py; CoreHistograms
makes the records of the windows closed, and adds the probes that come as Record objects), and a `raw` rule takes
its records' frames. functions.RuleEngine does the rest exactly as for the pure engine's records;
tests/test_core_rules.py holds the two byte-equal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..codec.record import (
    HISTOGRAM_SCHEMA_VERSION,
    DelayHistogram,
    PathHistogram,
    PathNode,
    Record,
)  # fmt: skip
from .engine import NativeMsgpackRecords, NativeRecords
from .rules import HistogramSpec, Prefixes, Rule, Sample

if TYPE_CHECKING:
    from .. import _native

try:
    from .. import _native as native_module
except ImportError:  # installed without a Rust toolchain: the pure engine alone
    native_module = None  # type: ignore[assignment]

Nets = list[tuple[int, int]] | None
MS = 1_000_000


@runtime_checkable
class RuleMatching(Protocol):
    """An engine that matches flow rules in its core as it decodes (the native one)."""

    def match_rules(self, rules: _native.Rules | None) -> None:
        """Match `rules` on every record decoded from now on (None: none)."""
        ...


@runtime_checkable
class CoreBatch(Protocol):
    """Records that are one native batch, whole (what the native engine hands on)."""

    @property
    def batch(self) -> _native.Batch: ...


def compile_rules(rules: Sequence[Rule], slot_of: dict[str, int], topic_of: Any, main_topic: str) -> _native.Rules:
    """The rules (in order, without the default) for the core; `slot_of` numbers the records topics."""
    spec = []
    for rule in rules:
        match, function = rule.match, rule.function
        records = function.name in ("pass", "sample")
        spec.append((
            _nets(match.src), _nets(match.sink), _nets(match.dst), _nets(match.segment), match.session_id,
            sorted(match.src_if_id) if match.src_if_id is not None else None, function.name,
            function.one_in if isinstance(function, Sample) else 0, slot_of[topic_of(rule)] if records else None,
        ))  # fmt: skip
    histograms = [
        (rule.index, f.interval_ms * MS, f.grace_ms * MS, list(f.bounds_ns), list(f.hop_bounds_ns))
        for rule in rules
        if isinstance(f := rule.function, HistogramSpec)
    ]
    return native_module.Rules(spec, slot_of[main_topic], histograms)


def _nets(prefixes: Prefixes | None) -> Nets:
    if prefixes is None:
        return None
    return [(int(network.network_address), network.prefixlen) for network in prefixes.networks]


def routed_batch(records: Sequence[Record], rules: _native.Rules | None) -> _native.Batch | None:
    """The native batch behind `records` if these rules routed it whole, else None (match in Python)."""
    if rules is None or not isinstance(records, CoreBatch):
        return None
    batch = records.batch
    return batch if batch.rules_id == rules.id and batch.decoded == len(records) else None


def slot_records(batch: _native.Batch, slot: int, count: int) -> Sequence[Record]:
    """Output `slot`'s records of a routed batch, still encoded (all of them: the batch as it is, no copy)."""
    records = NativeRecords if batch.format == "json" else NativeMsgpackRecords
    if count == batch.decoded:  # a record goes to one output at most: this one has every record, in input order
        return records(batch)
    return records(batch, slot, count)


@runtime_checkable
class RulesInCore(Protocol):
    """A sink whose records go through flow rules that an engine's core can match (routing.RoutedSink)."""

    def core_rules(self) -> _native.Rules | None:
        """The rules compiled for the core (None: the native engine is not built here)."""
        ...


def bind_rules(engine: object, sink: object) -> None:
    """Before decoding into `sink`: an engine that can match rules in its core matches the sink's, or none."""
    if isinstance(engine, RuleMatching):
        engine.match_rules(sink.core_rules() if isinstance(sink, RulesInCore) else None)


class CoreHistograms:
    """A histogram rule's windows kept in the core (path_histogram.rs, PathHistograms' twin): what a routed batch's
    probes were counted into (`made` turns the windows it closed into records), and what the probes that reach the
    rules as Record objects (a batch re-timed, a -c slice) are added to, so that no window is split in two."""

    def __init__(self, rules: _native.Rules, rule: Rule) -> None:
        function = rule.function
        assert isinstance(function, HistogramSpec)
        self._rules, self._index, self.rule = rules, rule.index, rule.key
        self.interval_ns = function.interval_ms * MS
        self.bounds_ns, self.hop_bounds_ns = function.bounds_ns, function.hop_bounds_ns

    @property
    def late(self) -> int:
        return self._rules.hist_late(self._index)

    def add(self, record: Record) -> list[PathHistogram]:
        src, sink = record.src, record.sink
        values = (
            src.addr, sink.addr if sink is not None else None, src.time_ns, sink.time_ns if sink is not None else 0,
            record.capture_ns, record.session_id, record.sequence, record.e2e_ns,
            [(hop.if_id, hop.time_ns) for hop in record.hops],
        )  # fmt: skip
        return self.made(self._rules.hist_add(self._index, values))

    def tick(self, now_ns: int) -> list[PathHistogram]:
        return self.made(self._rules.hist_tick(self._index, now_ns))

    def flush(self) -> list[PathHistogram]:
        return self.made(self._rules.hist_flush(self._index))

    def made(self, closed: list[tuple]) -> list[PathHistogram]:
        """Closed windows (the core's tuples) as path histogram records, as PathHistograms makes them."""
        return [self._record(*window[1:]) for window in closed]

    def _record(self, start, src, sink, hop_if_ids, count, loss, e2e, hops) -> PathHistogram:  # type: ignore[no-untyped-def]
        return PathHistogram(
            HISTOGRAM_SCHEMA_VERSION, self.rule, start, self.interval_ns, PathNode(src),
            PathNode(sink) if sink is not None else None, tuple(hop_if_ids), count, loss, self.bounds_ns,
            _delays(e2e), self.hop_bounds_ns, tuple(map(_delays, hops)),
        )  # fmt: skip


def _delays(found: tuple) -> DelayHistogram:
    count, low, high, total, buckets = found
    return DelayHistogram(count, low, high, total, tuple(buckets))
