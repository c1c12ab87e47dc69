"""The flow rules' functions at work: decoded probes in, per topic what they emit out (pure).

Each probe gets the function of the first rule it matches (rules.py):
`pass` emits its record, `sample` its record 1 in N, `histogram` feeds
the rule's per-path aggregator (path_histogram.py), which emits a
PathHistogram per path and closed window, `drop` only counts it, `raw`
emits its frame. Every probe is counted under its rule. Time here is
the probes' own: the latest capture time seen is the clock that closes
histogram windows, or a `tick` when no probe comes.

On the native engine the matching and the sample test run in its core as
it decodes, and the histogram windows are kept there, fed with values it
read off the frames (core_rules.py, `in_core`); a batch it routed is taken
whole here (`_route_routed`): the same outputs and counters as the records
would give.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from typing import Any

from ..capture.pcap import Frame
from ..codec.record import PathHistogram, Record
from .core_rules import CoreHistograms, compile_rules, native_module, routed_batch, slot_records
from .path_histogram import PathHistograms
from .rules import DEFAULT, Drop, HistogramSpec, Pass, Raw, Rule, Ruleset, Sample

RECORDS, HISTOGRAMS, FRAMES = "records", "histograms", "raw"  # the kinds of output, each to its own sink per topic


@dataclass
class RuleCounters:
    """What one rule did with the probes it matched."""

    probes: int = 0  # matched
    records: int = 0  # emitted as records (pass, sample)
    sampled_out: int = 0
    dropped: int = 0
    histograms: int = 0  # histogram records emitted
    late: int = 0  # probes of a histogram window already emitted (left out)
    frames: int = 0  # raw frames emitted
    no_frame: int = 0  # raw, but the frame was not at hand (a sink that takes records only)


@dataclass
class Emitted:
    """Output by topic, one list per kind."""

    records: dict[str, list[Record]] = field(default_factory=dict)
    histograms: dict[str, list[PathHistogram]] = field(default_factory=dict)
    frames: dict[str, list[Frame]] = field(default_factory=dict)

    def outputs(self) -> Iterator[tuple[str, str, list]]:  # type: ignore[type-arg]
        """(topic, kind, items) for every output that has items."""
        for kind, by_topic in ((RECORDS, self.records), (HISTOGRAMS, self.histograms), (FRAMES, self.frames)):
            for topic, items in by_topic.items():
                if items:
                    yield topic, kind, items

    def __len__(self) -> int:
        return sum(len(items) for _, _, items in self.outputs())


Action = Callable[[Record, "Frame | None", Emitted], None]


class RuleEngine:
    """The rules' functions, their state (histogram windows) and counters; output grouped by topic."""

    def __init__(self, ruleset: Ruleset, main_topic: str) -> None:
        self.ruleset = ruleset
        self.main_topic = main_topic
        self.rules = (*ruleset, DEFAULT)
        self._by_index = {rule.index: rule for rule in self.rules}
        self.counters = {rule.index: RuleCounters() for rule in self.rules}
        self.aggregators: dict[int, PathHistograms | CoreHistograms] = {}
        self.wants_frames = any(isinstance(rule.function, Raw) for rule in self.rules)
        self._topics = {kind: [t for t, k in self.outputs() if k == kind] for kind in (RECORDS, HISTOGRAMS, FRAMES)}
        self.clock_ns = 0  # the latest capture time (or tick) seen
        self._slots = {topic: slot for slot, topic in enumerate(self._topics[RECORDS])}
        self._raw = {r.index for r in self.rules if isinstance(r.function, Raw)}
        # the same rules compiled for the native engine's core (core_rules.py), which matches them as it decodes
        # once an engine is bound to them (in_core): then the histogram rules' windows are kept there too
        compiled = None if native_module is None else compile_rules(ruleset, self._slots, self.topic, main_topic)
        self.native_rules = compiled
        self._in_core = False
        self._actions: dict[int, Action] = {rule.index: self._action(rule) for rule in self.rules}

    def in_core(self) -> Any:
        """The rules compiled for the native engine's core, which from now on keeps the histogram windows too;
        None where the core is not built, or once a probe was counted here (windows are never split)."""
        if self.native_rules is None or (not self._in_core and any(c.probes for c in self.counters.values())):
            return None
        if not self._in_core:
            self._in_core = True
            self._actions = {rule.index: self._action(rule) for rule in self.rules}
        return self.native_rules

    def topic(self, rule: Rule) -> str:
        return rule.topic or self.main_topic

    def outputs(self) -> list[tuple[str, str]]:
        """(topic, kind) of every output the rules can emit, the main topic's records first."""
        kinds = {Pass: RECORDS, Sample: RECORDS, HistogramSpec: HISTOGRAMS, Raw: FRAMES}
        found = [(self.main_topic, RECORDS)]
        found += [(self.topic(r), kinds[type(r.function)]) for r in self.rules if type(r.function) in kinds]
        return list(dict.fromkeys(found))

    def emitted(self) -> Emitted:
        """An empty Emitted with a list for each output."""
        records, histograms, frames = (self._topics[kind] for kind in (RECORDS, HISTOGRAMS, FRAMES))
        return Emitted({t: [] for t in records}, {t: [] for t in histograms}, {t: [] for t in frames})

    def match(self, record: Record) -> Rule:
        return self.ruleset.match(record)

    def apply(self, rule: Rule, record: Record, frame: Frame | None, out: Emitted) -> None:
        """The rule's function on one probe (its frame: linktype, capture time, bytes), output into `out`."""
        self._actions[rule.index](record, frame, out)

    def route(self, records: Sequence[Record], frames: Sequence[Frame] | None = None) -> Emitted:
        """Every probe through the first rule it matches; `frames[i]` is the frame of `records[i]`."""
        batch = routed_batch(records, self.native_rules if self._in_core else None)
        if batch is not None:
            return self._route_routed(batch, frames)
        out = self.emitted()
        match, actions = self.ruleset.match, self._actions
        if frames is None:
            for record in records:
                actions[match(record).index](record, None, out)
        else:
            for record, frame in zip(records, frames, strict=True):
                actions[match(record).index](record, frame, out)
        if self.aggregators and records:
            self.tick(max(record.capture_ns for record in records), out)
        return out

    def _route_routed(self, batch: Any, frames: Sequence[Frame] | None) -> Emitted:
        """A native batch the core matched with these rules: counts per rule, each records output still encoded
        (no Record object), the windows its histogram probes closed in the core, and raw rules' frames."""
        out = self.emitted()
        kept_in = [0] * len(self._slots)
        for rule, (probes, kept) in zip((DEFAULT, *self.ruleset), batch.rule_counts(), strict=True):
            if probes and rule.index not in self._raw:
                counted(self.counters[rule.index], rule, probes, kept)
                if isinstance(rule.function, (Pass, Sample)):
                    kept_in[self._slots[self.topic(rule)]] += kept
        for topic, slot in self._slots.items():
            if kept_in[slot]:
                out.records[topic] = slot_records(batch, slot, kept_in[slot])  # type: ignore[assignment]
        for index, histograms in groupby(batch.aggregate(), key=itemgetter(0)):  # the windows the batch closed
            aggregator = self.aggregators[index]
            assert isinstance(aggregator, CoreHistograms)
            self._emit_histograms(index, aggregator.made(list(histograms)), out)
        for at, index in batch.elsewhere():  # raw rules: their frames, in input order
            self._actions[index](None, frames[at] if frames is not None else None, out)  # type: ignore[arg-type]
        if self.aggregators and batch.decoded:
            self.tick(batch.latest_ns, out)
        return out

    def tick(self, now_ns: int, out: Emitted | None = None) -> Emitted:
        """The histograms of the windows the clock has closed by `now_ns` (it never goes back)."""
        out = out if out is not None else self.emitted()
        self.clock_ns = max(self.clock_ns, now_ns)
        for index, aggregator in self.aggregators.items():
            self._emit_histograms(index, aggregator.tick(self.clock_ns), out)
        return out

    def flush(self) -> Emitted:
        """The histograms of every open window (at the end of a replay, or a stop)."""
        out = self.emitted()
        for index, aggregator in self.aggregators.items():
            self._emit_histograms(index, aggregator.flush(), out)
        return out

    def rule_counters(self) -> list[tuple[Rule, RuleCounters]]:
        """Each rule (the default last) and its counters, up to date."""
        for index, aggregator in self.aggregators.items():
            self.counters[index].late = aggregator.late
        return [(rule, self.counters[rule.index]) for rule in self.rules]

    def summary(self) -> str:
        """One line per rule that matched anything (the default always): what it did."""
        shown = [(rule, c) for rule, c in self.rule_counters() if c.probes or rule is DEFAULT]
        width = max(16, *(len(rule.label) + 1 for rule, _ in shown))
        return "\n".join(f"{rule.label:<{width}}{self.describe(rule)}: {outcome(rule, c)}" for rule, c in shown)

    def describe(self, rule: Rule) -> str:
        """The rule's function and topic: `sample 1/10 -> pt-probes`, `drop`."""
        function = rule.function
        what = f"sample 1/{function.one_in}" if isinstance(function, Sample) else function.name
        if isinstance(function, HistogramSpec):
            what += f" {function.interval_ms} ms"
        return what if isinstance(function, Drop) else f"{what} -> {self.topic(rule)}"

    def _emit_histograms(self, index: int, closed: list[PathHistogram], out: Emitted) -> None:
        if closed:
            self.counters[index].histograms += len(closed)
            out.histograms[self.topic(self._by_index[index])].extend(closed)

    def _action(self, rule: Rule) -> Action:
        counters, topic, function = self.counters[rule.index], self.topic(rule), rule.function

        if isinstance(function, Pass):

            def act(record: Record, frame: Frame | None, out: Emitted) -> None:
                counters.probes += 1
                counters.records += 1
                out.records[topic].append(record)

        elif isinstance(function, Sample):
            keeps = function.keeps

            def act(record: Record, frame: Frame | None, out: Emitted) -> None:
                counters.probes += 1
                if keeps(record):
                    counters.records += 1
                    out.records[topic].append(record)
                else:
                    counters.sampled_out += 1

        elif isinstance(function, HistogramSpec):
            aggregator: PathHistograms | CoreHistograms
            if self._in_core and self.native_rules is not None:
                aggregator = CoreHistograms(self.native_rules, rule)
            else:
                aggregator = PathHistograms(
                    rule.key, function.interval_ms, function.bounds_ns, function.hop_bounds_ns, function.grace_ms
                )
            self.aggregators[rule.index] = aggregator
            add, emit, index = aggregator.add, self._emit_histograms, rule.index

            def act(record: Record, frame: Frame | None, out: Emitted) -> None:
                counters.probes += 1
                emit(index, add(record), out)

        elif isinstance(function, Raw):

            def act(record: Record, frame: Frame | None, out: Emitted) -> None:
                counters.probes += 1
                if frame is None:
                    counters.no_frame += 1
                else:
                    counters.frames += 1
                    out.frames[topic].append(frame)

        else:

            def act(record: Record, frame: Frame | None, out: Emitted) -> None:
                counters.probes += 1
                counters.dropped += 1

        return act


def counted(counters: RuleCounters, rule: Rule, probes: int, kept: int) -> None:
    """A pass, sample, drop or histogram rule's counters after it matched `probes` probes and kept `kept` of them
    (a histogram rule's windows count the rest)."""
    counters.probes += probes
    if isinstance(rule.function, Drop):
        counters.dropped += probes
    elif isinstance(rule.function, (Pass, Sample)):
        counters.records += kept
        counters.sampled_out += probes - kept


def outcome(rule: Rule, counters: RuleCounters) -> str:
    """What a rule's counters say, in a few words: `40 probes: 4 records, 36 sampled out`."""
    function = rule.function
    parts = {
        Pass: [f"{counters.records:,} records"],
        Sample: [f"{counters.records:,} records", f"{counters.sampled_out:,} sampled out"],
        HistogramSpec: [f"{counters.histograms:,} histograms", f"{counters.late:,} late"],
        Drop: [f"{counters.dropped:,} dropped"],
        Raw: [f"{counters.frames:,} frames"],
    }[type(function)]
    if counters.no_frame:
        parts.append(f"{counters.no_frame:,} without a frame")
    return f"{counters.probes:,} probes: " + ", ".join(parts)
