"""`ptc replay`: capture files through the decoder into Kafka or a JSON lines file."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from ..ops.config import TTS_SHIFT, engine_for, rules_for
from .common import (
    EXIT_FAILED,
    TTS_SHIFT_HELP,
    Failed,
    count_option,
    kafka_client_log,
    kafka_usage,
    numeric_option,
    open_output,
    output_name,
    run_async,
    say_error,
)
from .kafka_options import (
    KAFKA_ONLY_PARAMS,
    batcher_from,
    cluster_from,
    cluster_options,
    given_on_command_line,
    producer_options,
    producer_settings_from,
    topic_option,
)

if TYPE_CHECKING:  # the stages are imported where used: into a file, aiokafka (routing, the sink) never is
    from ..kafka.sink import DeliveryCounters, KafkaSink
    from ..pipeline.engine import Engine
    from ..pipeline.limit import LimitedSink
    from ..pipeline.replay import ReplayStats
    from ..pipeline.routing import RoutedSink
    from ..pipeline.rules import Ruleset
    from ..pipeline.sinks import JsonLinesSink, Sink

REPEAT_WINDOW_S = 30.0  # the same line from the Kafka side once in this long at most


@click.command(short_help="Decode capture files to JSON lines (stdout, a file) or into Kafka.")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path))
@click.option(
    "-r", "--read", "read_files", multiple=True, metavar="FILE",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path),
    help="A capture file to read, as with tcpdump -r ('-': stdin): the same as FILES (may be repeated).",
)  # fmt: skip
@click.option(
    "-o", "--output", metavar="FILE",
    help="Write records as JSON lines to FILE ('-' for stdout) [default: stdout, unless a Kafka destination is "
    "set: then Kafka].",
)  # fmt: skip
@click.option("--tts-shift", type=TTS_SHIFT, default=None, help=TTS_SHIFT_HELP)
@count_option("Stop after N probes, as tcpdump -c does (records decoded past N in the last batch are counted, "
              "not written).")  # fmt: skip
@numeric_option
@click.option(
    "--progress/--no-progress", default=None,
    help="Show a progress line on stderr [default: when stderr is a terminal].",
)  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="No summary on stderr.")
@topic_option("send the records to (setting it sends them to Kafka)")
@producer_options(when_full="block")
@cluster_options
@click.pass_context
def replay(
    ctx: click.Context,
    files: tuple[Path, ...],
    read_files: tuple[Path, ...],
    output: str | None,
    tts_shift: int | str | None,
    count: int | None,
    progress: bool | None,
    quiet: bool,
    **kafka: Any,
) -> None:
    """Decode PT probes from capture FILES (pcap or pcapng), like tcpdump -r.

    A FILE may be a stream: '-' reads stdin (tcpdump -i eth1 -U -w - | ptc
    replay -), and so do /dev/stdin and a FIFO.

    Link types: Ethernet (802.1Q/802.1ad tags too), Linux cooked (SLL, SLL2)
    and raw IPv6. Every frame is counted once: decoded, not PT, or
    malformed (by reason); a summary goes to stderr at the end.

    Where the records go: JSON lines on stdout by default; to a file with
    --output FILE; into Kafka once a Kafka destination is set: --topic or
    --brokers (-t, -b) on the command line, PTC_TOPIC or PTC_BROKERS in the
    environment, topic or brokers in the config file, or a [[rules]] topic.
    Into Kafka, records go in batches of one source node's records per
    message (key: the source address), as JSON lines or msgpack (--format).

    The config file's [[rules]] route, sample, summarise, drop or keep raw
    the probes, per flow, each to its own topic; written to a file or
    stdout, records and histograms go there and raw frames nowhere.

    Exit status 0 when every file was read to its end (and, into Kafka, every
    decoded record was acknowledged by the broker); 1 when a file could not be
    read (the frames before the damage are still decoded), the output could
    not be written (a full disk: the replay stops there, and the summary
    counts what was written and what was not), the brokers could not be
    reached, or records were dropped or not acknowledged; 2 for a usage error.
    """
    files = (*read_files, *files)
    if not files:
        raise click.UsageError("Missing argument 'FILES...': give capture files (or -r FILE).")
    rules = rules_for()
    to_kafka = output is None and kafka_destination(ctx, rules)
    engine = engine_for(tts_shift, fmt=kafka["fmt"] if to_kafka else "json")
    show_progress = sys.stderr.isatty() if progress is None else progress
    if to_kafka:
        _replay_to_kafka(files, engine, rules, show_progress, quiet, count, kafka)
        return
    kafka_given = given_on_command_line(ctx, KAFKA_ONLY_PARAMS)
    if kafka_given:
        why = "--output writes a file" if output is not None else "no Kafka destination is set (--topic, --brokers)"
        raise click.UsageError(f"{', '.join(kafka_given)}: Kafka options, but {why}")
    from ..pipeline.limit import LimitedSink
    from ..pipeline.replay import ReplayStats
    from ..pipeline.sinks import JsonLinesSink, OutputError

    output = output or "-"
    stats, stopped, limited = ReplayStats(), None, None
    with open_output(output) as stream, _progress(show_progress) as (on_batch, _):
        lines = JsonLinesSink(stream, output_name(output))
        routed = _file_routes(rules, kafka["topic"], lines) if rules else None
        sink: Sink = routed if routed is not None else lines
        limited = LimitedSink(sink, count) if count is not None else None
        try:
            run_async(_replay_counted(files, engine, sink, limited, on_batch, stats))
        except OutputError as exc:  # the first batch it refused stops the replay: counted, not written
            if exc.reader_gone:
                sys.stderr.close()  # the reader went away (| head): nothing left to report
                raise SystemExit(0) from None
            what = "lines (records, histograms)" if rules else "decoded records"
            stopped = f"{exc}: replay stopped, {lines.lines.failed:,} {what} not written"
    if not quiet:
        click.echo(stats.summary(), err=True)
        click.echo(lines.lines.summary(), err=True)
        if limited is not None:
            click.echo(_limit_line(limited), err=True)
        if routed is not None:
            click.echo(routed.summary(), err=True)
    for error in [*stats.capture_errors, *([stopped] if stopped else [])]:
        say_error(error)
    if stats.capture_errors or stopped:
        raise SystemExit(EXIT_FAILED)


def _file_routes(rules: Ruleset, topic: str, lines: JsonLinesSink) -> RoutedSink:
    """The flow rules' outputs, all into the JSON lines file."""
    from ..pipeline.functions import RuleEngine
    from ..pipeline.routing import file_routes

    return file_routes(RuleEngine(rules, topic), lines)


def kafka_destination(ctx: click.Context, rules: Ruleset) -> bool:
    """Is a Kafka destination set: --topic or --brokers in any layer (flag, PTC_*, config file), or a rule's topic?"""
    from ..pipeline.rules import topics

    layers = (ctx.get_parameter_source(name) for name in ("topic", "brokers"))
    return any(layer not in (None, ParameterSource.DEFAULT) for layer in layers) or bool(topics(list(rules)))


async def _replay_counted(
    files: tuple[Path, ...],
    engine: Engine,
    sink: Sink,
    limited: LimitedSink | None,
    on_batch: Callable[[ReplayStats], None] | None,
    stats: ReplayStats,
) -> None:
    """Replay into `sink`, through `limited` (-c) when there is one: reading stops at its count."""
    from ..pipeline.limit import LimitReached
    from ..pipeline.replay import replay as run_replay

    try:
        await run_replay(files, engine, limited or sink, on_batch, stats)
    except LimitReached:
        await sink.flush()


def _limit_line(limited: LimitedSink) -> str:
    past = f" ({limited.beyond:,} decoded past it not written)" if limited.beyond else ""
    reached = f"after -c {limited.limit:,} probes{past}" if limited.passed >= limited.limit else "no: end of input"
    return f"{'stopped':<16}{reached}"


def _replay_to_kafka(
    files: tuple[Path, ...],
    engine: Engine,
    rules: Ruleset,
    show_progress: bool,
    quiet: bool,
    count: int | None,
    params: dict[str, Any],
) -> None:
    """Replay into Kafka (through the rules, if any); exit status 1 unless everything sent was acknowledged."""
    from ..kafka.client import KafkaUnavailable
    from ..pipeline.replay import ReplayStats
    from ..pipeline.routing import RoutedSink, open_kafka_output

    with kafka_usage():
        cluster, settings = cluster_from(params), producer_settings_from(params)
        settings.check()
        cluster.client_options()  # TLS files are read here: a bad one is a usage error, before any work
    kafka_client_log(params["verbose"])
    stats, opened_sinks, limits = ReplayStats(), [], []
    with _progress(show_progress) as (on_batch, show):
        opened = open_kafka_output(
            rules, params["topic"], cluster, settings, lambda: batcher_from(params),
            max_pending=params["max_pending"], when_full=params["when_full"], say=KafkaNews(show).say,
        )  # fmt: skip
        try:
            run_async(_replay_into(opened, files, engine, on_batch, stats, opened_sinks, count, limits))
        except KafkaUnavailable as exc:
            raise Failed(str(exc)) from None
        except KeyboardInterrupt:  # the sink closed on the way out: what it held counts as failed
            if not opened_sinks:
                raise
            c = opened_sinks[0].counters
            unsent = f": {stats.probes - c.acked - c.dropped - c.failed:,} decoded records not handed to Kafka"
            say_error("replay interrupted" + ("" if rules else unsent))
    sink = opened_sinks[0]
    if limits and not quiet:
        click.echo(_limit_line(limits[0]), err=True)
    beyond = limits[0].beyond if limits else 0
    if isinstance(sink, RoutedSink):
        _delivery_report(stats, sink.counters, params["max_pending"], quiet, sink.summary(), sink.delivered())
    else:
        _delivery_report(stats, sink.counters, params["max_pending"], quiet, beyond=beyond)


def _delivery_report(
    stats: ReplayStats,
    counters: DeliveryCounters,
    max_pending: int,
    quiet: bool,
    summary: str | None = None,
    delivered: bool | None = None,
    beyond: int = 0,
) -> None:
    """The summary, one error line per kind of loss, exit status 1 unless everything sent was acknowledged.

    By default every decoded record is to be acknowledged; routed by rules,
    `delivered` says whether everything the rules emitted was, and `summary`
    tells what the rules did; `beyond` records were decoded past -c, not sent.
    """
    if not quiet:
        click.echo(stats.summary(), err=True)
        click.echo(summary or counters.summary(), err=True)
    for error in stats.capture_errors:
        say_error(error)
    if counters.dropped:
        waiting = f"--max-pending {max_pending:,} records were waiting for the broker (--when-full drop)"
        say_error(f"{counters.dropped:,} records dropped: {waiting}")
    if counters.failed:
        say_error(f"{counters.failed:,} records not acknowledged: {counters.last_error}")
    everything = counters.acked == stats.probes - beyond if delivered is None else delivered
    if stats.capture_errors or not everything:
        raise SystemExit(EXIT_FAILED)


async def _replay_into(
    opened: AbstractAsyncContextManager[KafkaSink | RoutedSink],
    files: tuple[Path, ...],
    engine: Engine,
    on_batch: Callable[[ReplayStats], None] | None,
    stats: ReplayStats,
    sinks: list[KafkaSink | RoutedSink],
    count: int | None = None,
    limits: list[LimitedSink] | None = None,
) -> None:
    """Replay into the opened sink (the first `count` records, with -c); `stats`, `sinks` (the sink, once open)
    and `limits` (its -c counter) outlive an interruption."""
    from ..pipeline.limit import LimitedSink

    async with opened as sink:
        sinks.append(sink)
        limited = LimitedSink(sink, count) if count is not None else None
        if limited is not None and limits is not None:
            limits.append(limited)
        await _replay_counted(files, engine, sink, limited, on_batch, stats)


class KafkaNews:
    """What the Kafka sink says during a replay (the broker away, back): `ptc replay: ...` lines through `show`.

    The same line comes at most once per REPEAT_WINDOW_S (a refusal per message, say).
    """

    def __init__(self, show: Callable[[str], None]) -> None:
        self._show = show
        self._said: dict[str, float] = {}

    def say(self, level: str, message: str) -> None:
        now = time.monotonic()
        if now - self._said.get(message, -REPEAT_WINDOW_S) < REPEAT_WINDOW_S:
            return
        self._said[message] = now
        self._show(f"{'Error: ' if level == 'error' else ''}ptc replay: {message}")


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[tuple[Callable[[ReplayStats], None] | None, Callable[[str], None]]]:
    """A rich progress bar over the capture files' bytes; yields the replay callback and a way to show a line.

    A line goes above the bar, and its first part (`Kafka unreachable for
    12 s`) into the bar, until the replay moves on.
    """
    if not enabled:
        yield None, lambda line: click.echo(line, err=True)
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("replaying", total=None)

        def on_batch(stats: ReplayStats) -> None:
            description = f"{stats.frames:,} frames, {stats.probes:,} probes"
            if stats.bytes_total is None:  # a stream: no size to go by, the bytes read so far
                description += f", {stats.bytes_read / 1e6:,.1f} MB read"
            bar.update(task, description=description, total=stats.bytes_total, completed=stats.bytes_read)

        def show(line: str) -> None:
            bar.console.print(line, markup=False, highlight=False)
            bar.update(task, description=line.removeprefix("Error: ").removeprefix("ptc replay: ").split(":")[0])

        yield on_batch, show
