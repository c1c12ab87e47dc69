"""`ptc rules test`: which flow rule each probe of a capture matches and what would be emitted, without Kafka."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import click

from ..capture.pcap import Frame
from ..codec.record import PathHistogram, Record
from ..kafka.kinds import raw_key
from ..ops.config import TTS_SHIFT, effective, engine_for
from ..pipeline.functions import Emitted, RuleCounters, RuleEngine
from ..pipeline.path_histogram import probe_time
from ..pipeline.replay import replay
from ..pipeline.rules import DEFAULT, HistogramSpec, Pass, Raw, Rule, Sample
from ..pipeline.sinks import DirectSink
from .common import EXIT_FAILED, TTS_SHIFT_HELP, echo_or_raise, root_group, run_async, say_error, stdout_report
from .paths import ms

NS_PER_MS = 1_000_000


@click.group("rules", short_help="Flow rules: test the config file's [[rules]] on captures.")
def rules_group() -> None:
    """Flow rules: the config file's [[rules]], which decide per flow (source, sink, prefix, session) what
    happens to the probes: pass, sample 1 in N, histogram per path and interval, drop, or raw frames, each to
    its own topic. `ptc rules test` shows what they would do on a capture, without Kafka."""


@rules_group.command("test", short_help="Show what each rule does with a capture's probes, without Kafka.")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--summary", is_flag=True, help="Only a table of what each rule did, not a line per probe.")
@click.option(
    "--tts-shift", type=TTS_SHIFT, default=None,
    help=TTS_SHIFT_HELP + " [default: replay's, from the config file]",
)  # fmt: skip
@click.pass_context
def rules_test(ctx: click.Context, files: tuple[Path, ...], summary: bool, tts_shift: int | str | None) -> None:
    """Show which rule each probe of the capture FILES matches and what `ptc replay` would emit.

    One line per probe: its source, session and sequence, the rule (the
    first that matches; `default` when none does: pass to the main topic)
    and what comes of it: a record to a topic, sampled out, dropped, into
    a histogram window, a raw frame. Histogram records show as their
    windows close. Nothing is sent anywhere. With --summary, a table of
    counts per rule instead.

    Exit status 0 when every file was read to its end, 1 when one could
    not be, 2 when the config file is not valid.
    """
    path = ctx.find_root().params.get("config_file")
    if path is None:
        raise click.UsageError("no rules to test: give --config FILE (or ptc --config FILE, PTC_CONFIG)")
    config, table = effective(root_group(ctx), path)
    replay_settings = table["replay"]
    shift_setting = replay_settings.get("tts_shift")
    shift = tts_shift if tts_shift is not None else shift_setting.value if shift_setting else None
    topic = replay_settings["topic"]
    engine = RuleEngine(config.rules, topic.value if topic else "pt-probes")
    sink = _TestSink(engine, show=None if summary else echo_or_raise)
    with stdout_report():
        stats = run_async(replay(files, engine_for(shift, config.shift_by_source), sink))
        if summary:
            _summary_table(engine)
        counts = f"{stats.probes:,} probes, {stats.not_pt:,} not PT, {stats.malformed_total:,} malformed"
        click.echo(f"{stats.frames:,} frames: {counts}; {len(config.rules)} rules from {path}")
    for error in stats.capture_errors:
        say_error(error)
    if stats.capture_errors:
        raise SystemExit(EXIT_FAILED)


class _TestSink(DirectSink):
    """Replay's sink: every probe through the engine, one at a time, told as it goes."""

    wants_frames = True

    def __init__(self, engine: RuleEngine, show: Callable[[str], None] | None) -> None:
        self.engine = engine
        self.show = show
        self.probes = 0

    async def write(self, records: Sequence[Record]) -> None:
        await self.write_frames(records, [None] * len(records))

    async def write_frames(self, records: Sequence[Record], frames: Sequence[Frame | None]) -> None:
        engine = self.engine
        for record, frame in zip(records, frames, strict=True):
            self.probes += 1
            rule = engine.match(record)
            out = engine.emitted()
            engine.apply(rule, record, frame, out)
            if self.show:
                self.show(f"{self.probes:>7}  {_probe(record)}  {rule.label}: {_what(engine, rule, record, out)}")
                self._histograms(out)
        self._histograms(engine.tick(max(record.capture_ns for record in records)))

    async def flush(self) -> None:
        self._histograms(self.engine.flush())

    def _histograms(self, out: Emitted) -> None:
        if self.show:
            for topic, histograms in out.histograms.items():
                for histogram in histograms:
                    self.show(f"{'':>7}  emits histogram -> {topic}: {_histogram(histogram)}")


def _probe(record: Record) -> str:
    return f"{record.src.addr} session {record.session_id} seq {record.sequence}"


def _what(engine: RuleEngine, rule: Rule, record: Record, out: Emitted) -> str:
    """What the rule's function made of the probe."""
    function, topic = rule.function, engine.topic(rule)
    if isinstance(function, Pass):
        return f"record -> {topic}"
    if isinstance(function, Sample):
        kept = f"sequence % {function.one_in} == 0: record -> {topic}"
        return kept if out.records[topic] else f"sampled out (1 in {function.one_in})"
    if isinstance(function, HistogramSpec):
        start = probe_time(record) - probe_time(record) % (function.interval_ms * NS_PER_MS)
        return f"into the {function.interval_ms} ms window from {_time(start)} -> {topic}"
    if isinstance(function, Raw):
        frames = out.frames[topic]
        if not frames:
            return "raw, but no frame"
        _, capture_ns, data = frames[0]
        return f"raw frame of {len(data)} bytes, key {raw_key(capture_ns).hex()} -> {topic}"
    return "dropped"


def _histogram(h: PathHistogram) -> str:
    sink = h.sink.addr if h.sink else "(no sink)"
    e2e = h.e2e
    delays = f", e2e {ms(e2e.min_ns)}..{ms(e2e.max_ns)} ms" if e2e.count else ""
    return (
        f"{h.src.addr} -> {sink} via [{' '.join(map(str, h.hop_if_ids))}], "
        f"{_time(h.start_ns)} +{h.interval_ns // NS_PER_MS} ms: {h.count} probes, loss {h.loss}{delays}"
    )


def _time(ns: int) -> str:
    """UTC, to the millisecond."""
    seconds, rest = divmod(ns, 10**9)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{rest // NS_PER_MS:03d}Z"


def _summary_table(engine: RuleEngine) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="flow rules (first match wins)")
    for column in ("rule", "function", "probes", "records", "sampled out", "dropped", "histograms", "late", "frames"):
        table.add_column(column, justify="left" if column in ("rule", "function") else "right")
    for rule, counters in engine.rule_counters():
        table.add_row(rule.label, engine.describe(rule), *_counts(counters), style="dim" if rule is DEFAULT else None)
    Console(file=sys.stdout, width=None if sys.stdout.isatty() else 160).print(table)


def _counts(c: RuleCounters) -> list[str]:
    return [f"{n:,}" for n in (c.probes, c.records, c.sampled_out, c.dropped, c.histograms, c.late, c.frames)]
