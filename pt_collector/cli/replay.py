"""`ptc replay`: capture files through the decoder into Kafka or a JSON lines file."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import click

from ..codec.tts import MAX_SHIFT
from ..kafka.client import KafkaUnavailable
from ..kafka.sink import DeliveryCounters, KafkaSink
from ..ops.config import engine_for, rules_for
from ..pipeline.engine import Engine
from ..pipeline.functions import RuleEngine
from ..pipeline.replay import ReplayStats
from ..pipeline.replay import replay as run_replay
from ..pipeline.routing import RoutedSink, file_routes, open_kafka_output
from ..pipeline.rules import Ruleset
from ..pipeline.sinks import JsonLinesSink, OutputError
from .common import (
    EXIT_FAILED,
    TTS_SHIFT_HELP,
    Failed,
    kafka_client_log,
    kafka_usage,
    open_output,
    output_name,
    run_async,
)
from .kafka_options import (
    CLUSTER_PARAMS,
    PRODUCER_PARAMS,
    batcher_from,
    cluster_from,
    cluster_options,
    given_on_command_line,
    producer_options,
    producer_settings_from,
    topic_option,
)

REPEAT_WINDOW_S = 30.0  # the same line from the Kafka side once in this long at most


@click.command()
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path)
)
@click.option(
    "-o", "--output", metavar="FILE",
    help="Write records as JSON lines to FILE ('-' for stdout) instead of sending them to Kafka.",
)  # fmt: skip
@click.option("--tts-shift", type=click.IntRange(0, MAX_SHIFT), default=None, help=TTS_SHIFT_HELP)
@click.option(
    "--progress/--no-progress", default=None,
    help="Show a progress line on stderr [default: when stderr is a terminal].",
)  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="No summary on stderr.")
@topic_option("send the records to")
@producer_options(when_full="block")
@cluster_options
@click.pass_context
def replay(
    ctx: click.Context,
    files: tuple[Path, ...],
    output: str | None,
    tts_shift: int | None,
    progress: bool | None,
    quiet: bool,
    **kafka: Any,
) -> None:
    """Decode PT probes from capture FILES (pcap or pcapng).

    A FILE may be a stream: '-' reads stdin (tcpdump -i eth1 -U -w - | ptc
    replay -), and so do /dev/stdin and a FIFO.

    Link types: Ethernet (802.1Q/802.1ad tags too), Linux cooked (SLL, SLL2)
    and raw IPv6. Every frame is counted once: decoded, not PT, or
    malformed (by reason); a summary goes to stderr at the end.

    With --output the records go to a file as JSON lines; without it they go
    to the Kafka topic --topic (default pt-probes) on --brokers, in batches of
    one source node's records per message (docs/kafka.md).

    The config file's [[rules]] route, sample, summarise, drop or keep raw
    the probes, per flow, each to its own topic (docs/rules.md); with
    --output, records and histograms go to the file and raw frames nowhere.

    Exit status 0 when every file was read to its end (and, into Kafka, every
    decoded record was acknowledged by the broker); 1 when a file could not be
    read (the frames before the damage are still decoded), the output could
    not be written (a full disk: the replay stops there, and the summary
    counts what was written and what was not), the brokers could not be
    reached, or records were dropped or not acknowledged.
    """
    engine, rules = engine_for(tts_shift), rules_for()
    show_progress = sys.stderr.isatty() if progress is None else progress
    if output is None:
        _replay_to_kafka(files, engine, rules, show_progress, quiet, kafka)
        return
    kafka_given = given_on_command_line(ctx, PRODUCER_PARAMS + CLUSTER_PARAMS)
    if kafka_given:
        raise click.UsageError(f"{', '.join(kafka_given)}: Kafka options, but --output writes a file")
    stats, stopped = ReplayStats(), None
    with open_output(output) as stream, _progress(show_progress) as (on_batch, _):
        lines = JsonLinesSink(stream, output_name(output))
        sink = file_routes(RuleEngine(rules, kafka["topic"]), lines) if rules else lines
        try:
            run_async(run_replay(files, engine, sink, on_batch, stats))
        except OutputError as exc:  # the first batch it refused stops the replay: counted, not written
            if exc.reader_gone:
                sys.stderr.close()  # the reader went away (| head): nothing left to report
                raise SystemExit(0) from None
            what = "lines (records, histograms)" if rules else "decoded records"
            stopped = f"{exc}: replay stopped, {lines.lines.failed:,} {what} not written"
    if not quiet:
        click.echo(stats.summary(), err=True)
        click.echo(lines.lines.summary(), err=True)
        if isinstance(sink, RoutedSink):
            click.echo(sink.summary(), err=True)
    for error in [*stats.capture_errors, *([stopped] if stopped else [])]:
        click.echo(f"ptc: error: {error}", err=True)
    if stats.capture_errors or stopped:
        raise SystemExit(EXIT_FAILED)


def _replay_to_kafka(
    files: tuple[Path, ...],
    engine: Engine,
    rules: Ruleset,
    show_progress: bool,
    quiet: bool,
    params: dict[str, Any],
) -> None:
    """Replay into Kafka (through the rules, if any); exit status 1 unless everything sent was acknowledged."""
    with kafka_usage():
        cluster, settings = cluster_from(params), producer_settings_from(params)
        settings.check()
        cluster.client_options()  # TLS files are read here: a bad one is a usage error, before any work
    kafka_client_log(params["verbose"])
    stats, opened_sinks = ReplayStats(), []
    with _progress(show_progress) as (on_batch, show):
        opened = open_kafka_output(
            rules, params["topic"], cluster, settings, lambda: batcher_from(params),
            max_pending=params["max_pending"], when_full=params["when_full"], say=KafkaNews(show).say,
        )  # fmt: skip
        try:
            run_async(_replay_into(opened, files, engine, on_batch, stats, opened_sinks))
        except KafkaUnavailable as exc:
            raise Failed(str(exc)) from None
        except KeyboardInterrupt:  # the sink closed on the way out: what it held counts as failed
            if not opened_sinks:
                raise
            c = opened_sinks[0].counters
            unsent = f": {stats.probes - c.acked - c.dropped - c.failed:,} decoded records not handed to Kafka"
            click.echo("ptc: replay interrupted" + ("" if rules else unsent), err=True)
    sink = opened_sinks[0]
    if isinstance(sink, RoutedSink):
        _delivery_report(stats, sink.counters, params["max_pending"], quiet, sink.summary(), sink.delivered())
    else:
        _delivery_report(stats, sink.counters, params["max_pending"], quiet)


def _delivery_report(
    stats: ReplayStats,
    counters: DeliveryCounters,
    max_pending: int,
    quiet: bool,
    summary: str | None = None,
    delivered: bool | None = None,
) -> None:
    """The summary, one error line per kind of loss, exit status 1 unless everything sent was acknowledged.

    By default every decoded record is to be acknowledged; routed by rules,
    `delivered` says whether everything the rules emitted was, and `summary`
    tells what the rules did.
    """
    if not quiet:
        click.echo(stats.summary(), err=True)
        click.echo(summary or counters.summary(), err=True)
    for error in stats.capture_errors:
        click.echo(f"ptc: error: {error}", err=True)
    if counters.dropped:
        waiting = f"--max-pending {max_pending:,} records were waiting for the broker (--when-full drop)"
        click.echo(f"ptc: error: {counters.dropped:,} records dropped: {waiting}", err=True)
    if counters.failed:
        click.echo(f"ptc: error: {counters.failed:,} records not acknowledged: {counters.last_error}", err=True)
    if stats.capture_errors or not (counters.acked == stats.probes if delivered is None else delivered):
        raise SystemExit(EXIT_FAILED)


async def _replay_into(
    opened: AbstractAsyncContextManager[KafkaSink | RoutedSink],
    files: tuple[Path, ...],
    engine: Engine,
    on_batch: Callable[[ReplayStats], None] | None,
    stats: ReplayStats,
    sinks: list[KafkaSink | RoutedSink],
) -> None:
    """Replay into the opened sink; `stats` and `sinks` (the sink, once open) outlive an interruption."""
    async with opened as sink:
        sinks.append(sink)
        await run_replay(files, engine, sink, on_batch, stats)


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
        self._show(f"ptc replay: {message}")


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
            bar.update(task, description=line.removeprefix("ptc replay: ").split(":")[0])

        yield on_batch, show
