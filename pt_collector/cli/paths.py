"""`ptc paths`: the paths seen in captures or in a Kafka topic's records, as a table (and a plot)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from ..codec.record import PathHistogram, Record
from ..codec.tts import MAX_SHIFT
from ..kafka.client import ConsumeStats, KafkaUnavailable, consume
from ..ops.config import engine_for
from ..pipeline.paths import PathStats, PathTable
from ..pipeline.replay import replay
from ..pipeline.sinks import DirectSink
from .common import (
    EXIT_FAILED,
    TTS_SHIFT_HELP,
    Failed,
    kafka_client_log,
    kafka_usage,
    run_async,
    say_error,
    stdout_report,
)
from .kafka_options import CLUSTER_PARAMS, cluster_from, cluster_options, given_on_command_line, topic_option

NS_PER_MS = 1_000_000
PLOT_LEGEND_MAX = 12  # paths named in the plot's legend
KAFKA_PARAMS = ("topic", "from_beginning", "max_records", "timeout", *CLUSTER_PARAMS)


def ms(ns: int | None) -> str:
    """Nanoseconds as milliseconds to the microsecond, `-` for none."""
    return "-" if ns is None else f"{ns / NS_PER_MS:.3f}"


@click.command(short_help="The paths in captures or a topic: probes, loss, delay p50/p99/max.")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-r", "--read", "read_files", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
    metavar="FILE", help="A capture file to read, as with tcpdump -r: the same as FILES (may be repeated).",
)  # fmt: skip
@click.option("--tts-shift", type=click.IntRange(0, MAX_SHIFT), default=None, help=TTS_SHIFT_HELP)
@click.option(
    "--plot", "plot_file", metavar="OUT.png", type=click.Path(dir_okay=False, path_type=Path),
    help="Also draw each path's end-to-end delay over time into OUT.png (needs matplotlib: the plot extra).",
)  # fmt: skip
@topic_option("read the records from, without FILES")
@click.option("--from-beginning", is_flag=True, help="From Kafka: start at the oldest message kept.")
@click.option(
    "-c", "--count", "--max", "max_records", type=click.IntRange(min=1), metavar="N",
    help="From Kafka: stop after N records (kcat -c).",
)  # fmt: skip
@click.option(
    "--timeout", type=click.FloatRange(min=0), metavar="SECONDS",
    help="From Kafka: stop once no message came for SECONDS [default: at --max or Ctrl-C].",
)  # fmt: skip
@cluster_options
@click.pass_context
def paths(
    ctx: click.Context,
    files: tuple[Path, ...],
    read_files: tuple[Path, ...],
    tts_shift: int | None,
    plot_file: Path | None,
    topic: str,
    from_beginning: bool,
    max_records: int | None,
    timeout: float | None,
    **kafka: Any,
) -> None:
    """The paths in capture FILES, or in the records of a Kafka topic, at a glance.

    A path is a source, a sink and the midpoints' interface ids in between.
    Per path: probes, loss (estimated from gaps in each session's sequence
    numbers) and the end-to-end delay's median, 99th percentile and maximum,
    in ms. Without FILES the records come from --topic (until --count
    records, --timeout seconds without any, or Ctrl-C).

    Exit status 0; 1 when a file could not be read or the brokers reached;
    2 for a usage error.
    """
    files = (*read_files, *files)
    if plot_file is not None:
        _check_matplotlib()
    table = PathTable()
    if files:
        if given := given_on_command_line(ctx, KAFKA_PARAMS):
            raise click.UsageError(f"{', '.join(given)}: Kafka options, but FILES are read")
        stats = run_async(replay(files, engine_for(tts_shift), _TableSink(table)))
        errors = stats.capture_errors
        source = f"{stats.probes:,} probes from {len(files)} files"
    else:
        consumed = _from_kafka(table, topic, from_beginning, max_records, timeout, kafka)
        errors = consumed.bad
        source = f"{consumed.records:,} records from {topic}"
    with stdout_report():
        _print_table(table, source)
    if plot_file is not None:
        _plot(table, plot_file)
        click.echo(f"wrote {plot_file}", err=True)
    for error in errors:
        say_error(f"{error}")
    if files and errors:
        raise SystemExit(EXIT_FAILED)


class _TableSink(DirectSink):
    def __init__(self, table: PathTable) -> None:
        self.table = table

    async def write(self, records: Sequence[Record]) -> None:
        self.table.add(records)


def _from_kafka(
    table: PathTable, topic: str, from_beginning: bool, max_records: int | None, timeout: float | None, params: Any
) -> ConsumeStats:
    with kafka_usage():
        cluster = cluster_from(params)
        cluster.client_options()
    kafka_client_log(params["verbose"])
    stats = ConsumeStats()

    def emit(records: list[Record]) -> None:
        table.add(record for record in records if isinstance(record, Record))
        table.add_histograms(record for record in records if isinstance(record, PathHistogram))  # ptc analyze's

    reading = consume(
        cluster, topic, emit, from_beginning=from_beginning, max_records=max_records, idle_timeout_s=timeout,
        stats=stats,
    )  # fmt: skip
    try:
        run_async(reading)
    except KafkaUnavailable as exc:
        raise Failed(str(exc)) from None
    except KeyboardInterrupt:  # the way to stop it without --max or --timeout: the table of what came
        pass
    return stats


def _print_table(table: PathTable, source: str) -> None:
    from rich.console import Console
    from rich.table import Table

    rich_table = Table(title=f"paths: {source}")
    for column in ("source", "sink", "hops (interface ids)"):
        rich_table.add_column(column, overflow="fold")
    for column in ("probes", "loss", "p50 ms", "p99 ms", "max ms"):
        rich_table.add_column(column, justify="right")
    for path in table.rows():
        rich_table.add_row(
            path.src, path.sink or "-", " ".join(map(str, path.hop_if_ids)) or "-", f"{path.probes:,}",
            f"{path.loss:,} ({path.loss_ratio:.1%})", ms(path.quantile(0.5)), ms(path.quantile(0.99)),
            ms(path.quantile(1.0)),
        )  # fmt: skip
    Console(file=sys.stdout, width=None if sys.stdout.isatty() else 200).print(rich_table)


def _check_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise click.UsageError("--plot needs matplotlib: pip install 'pt-collector[plot]'") from None


def _plot(table: PathTable, out: Path) -> None:
    """Each path's end-to-end delay (ms) over its probes' time (s from the first probe), one line each."""
    from matplotlib.figure import Figure

    rows = [path for path in table.rows() if path.e2e_ns or path.window_p99]
    series = {id(p): list(zip(p.times_ns, p.e2e_ns, strict=True)) or p.window_p99 for p in rows}  # p99 per window
    start = min((min(t for t, _ in series[id(path)]) for path in rows), default=0)
    figure = Figure(figsize=(11, 5.5), layout="constrained")
    axes = figure.subplots()
    for number, path in enumerate(rows):
        seconds = [(t - start) / 1e9 for t, _ in series[id(path)]]
        delays = [d / NS_PER_MS for _, d in series[id(path)]]
        axes.plot(seconds, delays, marker=".", markersize=3, linewidth=0.8, label=_label(path, number))
    axes.set_xlabel("time since the first probe (s)")
    windows = any(path.window_p99 and not path.e2e_ns for path in rows)
    axes.set_ylabel("end-to-end delay, p99 per window (ms)" if windows else "end-to-end delay (ms)")
    axes.set_title(f"{len(rows)} paths")
    if rows:
        axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    try:
        figure.savefig(out)
    except OSError as exc:
        raise Failed(f"cannot write {out}: {exc.strerror}") from None


def _label(path: PathStats, number: int) -> str | None:
    if number >= PLOT_LEGEND_MAX:
        return None
    return f"{path.src} -> {path.sink or '-'} ({len(path.hop_if_ids)} hops)"
