"""`ptc paths`: the paths seen in captures or in a Kafka topic's records, as a table (and a plot)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..ops.config import TTS_SHIFT, engine_for
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

if TYPE_CHECKING:  # imported where used: the Kafka client (aiokafka) only to read a topic
    from ..codec.record import Record
    from ..kafka.client import ConsumeStats
    from ..pipeline.paths import PathTable

NS_PER_MS = 1_000_000
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
@click.option("--tts-shift", type=TTS_SHIFT, default=None, help=TTS_SHIFT_HELP)
@click.option(
    "--plot", "plot_file", metavar="OUT.png", type=click.Path(dir_okay=False, path_type=Path),
    help="Also draw a figure of the paths into OUT.png (.svg, .pdf): per path, its interface ids, the delay's "
    "p50-p99 band over time (UTC), loss marks and the delay per hop (with --tts-shift). Needs matplotlib.",
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
    tts_shift: int | str | None,
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
    from ..pipeline.paths import PathTable
    from ..pipeline.replay import replay

    files = (*read_files, *files)
    if plot_file is not None:
        _check_plot(plot_file)
    table = PathTable()
    if files:
        if given := given_on_command_line(ctx, KAFKA_PARAMS):
            raise click.UsageError(f"{', '.join(given)}: Kafka options, but FILES are read")
        stats = run_async(replay(files, engine_for(tts_shift), _TableSink(table)))
        errors = stats.capture_errors
        source = f"{stats.probes:,} probes from {len(files)} files"
        named = ", ".join(path.name for path in files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        plotted = f"{stats.probes:,} probes from {named}"
    else:
        consumed = _from_kafka(table, topic, from_beginning, max_records, timeout, kafka)
        errors = consumed.bad
        source = plotted = f"{consumed.records:,} records from {topic}"
    with stdout_report():
        _print_table(table, source)
    if plot_file is not None:
        _plot(table, plot_file, plotted)
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
    from ..codec.record import PathHistogram, Record
    from ..kafka.client import ConsumeStats, KafkaUnavailable, consume

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


PLOT_HINT = "--plot needs matplotlib: pip install matplotlib (from a clone: pip install -e '.[plot]', or make setup)"


def _check_plot(out: Path) -> None:
    """Before any work: matplotlib is there and `out` can be written (one line, exit 2 or 1, if not)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise click.UsageError(PLOT_HINT) from None
    where = out.parent if str(out.parent) else Path(".")
    if not where.is_dir():
        raise Failed(f"cannot write {out}: no directory {where}")
    if not os.access(out if out.exists() else where, os.W_OK):
        raise Failed(f"cannot write {out}: permission denied")


def _plot(table: PathTable, out: Path, source: str) -> None:
    """The figure of paths_plot.plot, saved by the suffix of `out` (PNG by default)."""
    from .paths_plot import plot

    figure = plot(table, out, source)
    try:
        figure.savefig(out, dpi=110)
    except (OSError, ValueError) as exc:
        raise Failed(f"cannot write {out}: {getattr(exc, 'strerror', None) or exc}") from None
