"""The `ptc` command: thin click wrappers around the library.

Exit status: 0 success, 1 the work failed or was incomplete (a capture
file unreadable, an output that cannot be written), 2 a usage error.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import click

from . import __version__
from .cli_collect import collect
from .cli_paths import paths
from .cli_rules import rules_group
from .cli_util import EXIT_FAILED, TTS_SHIFT_HELP, Failed, kafka_client_log, kafka_usage, open_output, run_async
from .config import apply as apply_settings
from .config import decoder_for, effective, expose_environment, exposed_secrets, render, rules_for
from .decode import Decoder
from .encode import ethernet, linux_sll, linux_sll2
from .functions import RuleEngine
from .generate import generate as generate_probes
from .kafka import ConsumeStats, KafkaUnavailable
from .kafka import consume as consume_records
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
from .kafka_sink import DeliveryCounters, KafkaSink
from .pcap import PcapWriter
from .record import Record, to_json_lines
from .replay import ReplayStats
from .replay import replay as run_replay
from .routing import RoutedSink, file_routes, open_kafka_output
from .rules import Ruleset
from .sinks import JsonLinesSink
from .tts import MAX_SHIFT
from .wire import ETH_P_VLAN, LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config", "config_file", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path), envvar="PTC_CONFIG",
    show_envvar=True, help="Settings for the commands from a TOML file (docs/configuration.md).",
)  # fmt: skip
@click.version_option(__version__, prog_name="ptc")
@click.pass_context
def main(ctx: click.Context, config_file: Path | None) -> None:
    """ptc: the SRv6 Path Tracing probe collector.

    Decodes PT probes (HbH MCD stacks, SRH PT TLVs) into records
    (record schema v1) and writes them out.

    Every option of every command can also come from the environment,
    PTC_<OPTION> (PTC_TOPIC, PTC_TTS_SHIFT, ...), or from the --config file.
    A flag wins over the environment, the environment over the file;
    `ptc config check` shows what a command would use.
    """
    if ctx.invoked_subcommand not in ("config", "rules") and not ctx.resilient_parsing:  # they read the file
        apply_settings(ctx, config_file)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
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
    read (the frames before the damage are still decoded), the brokers could
    not be reached, or records were dropped or not acknowledged.
    """
    decoder, rules = decoder_for(tts_shift), rules_for()
    show_progress = sys.stderr.isatty() if progress is None else progress
    if output is None:
        _replay_to_kafka(files, decoder, rules, show_progress, quiet, kafka)
        return
    kafka_given = given_on_command_line(ctx, PRODUCER_PARAMS + CLUSTER_PARAMS)
    if kafka_given:
        raise click.UsageError(f"{', '.join(kafka_given)}: Kafka options, but --output writes a file")
    with open_output(output) as stream, _progress(show_progress) as on_batch:
        sink = file_routes(RuleEngine(rules, kafka["topic"]), stream) if rules else JsonLinesSink(stream)
        try:
            stats = run_async(run_replay(files, decoder, sink, on_batch))
        except BrokenPipeError:
            sys.stderr.close()  # the reader went away (| head): nothing left to report
            raise SystemExit(0) from None
    if not quiet:
        click.echo(stats.summary(), err=True)
        if isinstance(sink, RoutedSink):
            click.echo(sink.summary(), err=True)
    for error in stats.capture_errors:
        click.echo(f"ptc: error: {error}", err=True)
    if stats.capture_errors:
        raise SystemExit(EXIT_FAILED)


def _replay_to_kafka(
    files: tuple[Path, ...],
    decoder: Decoder,
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
    opened = open_kafka_output(
        rules, params["topic"], cluster, settings, lambda: batcher_from(params),
        max_pending=params["max_pending"], when_full=params["when_full"],
    )  # fmt: skip
    stats, opened_sinks = ReplayStats(), []
    with _progress(show_progress) as on_batch:
        try:
            run_async(_replay_into(opened, files, decoder, on_batch, stats, opened_sinks))
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
    decoder: Decoder,
    on_batch: Callable[[ReplayStats], None] | None,
    stats: ReplayStats,
    sinks: list[KafkaSink | RoutedSink],
) -> None:
    """Replay into the opened sink; `stats` and `sinks` (the sink, once open) outlive an interruption."""
    async with opened as sink:
        sinks.append(sink)
        await run_replay(files, decoder, sink, on_batch, stats)


@main.command()
@topic_option("read")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest message kept [default: only new ones].")
@click.option("-n", "--max", "max_records", type=click.IntRange(min=1), metavar="N", help="Stop after N records.")
@click.option(
    "-o", "--output", default="-", show_default=True, metavar="FILE",
    help="Write the records as JSON lines to FILE ('-' for stdout).",
)  # fmt: skip
@click.option(
    "--timeout", type=click.FloatRange(min=0), metavar="SECONDS",
    help="Stop once no message came for SECONDS [default: wait for ever].",
)  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="No summary on stderr.")
@cluster_options
def consume(
    topic: str,
    from_beginning: bool,
    max_records: int | None,
    output: str,
    timeout: float | None,
    quiet: bool,
    **kafka: Any,
) -> None:
    """Read ptc messages from a Kafka topic; print one record per line.

    Messages in either format (json, msgpack) come out as JSON lines in the
    record schema, in order within each partition (so per source node).
    Every partition is read, with no consumer group: nothing is committed.
    A message that is not a ptc batch is named on stderr and skipped.

    It runs until --max records, until --timeout seconds pass without a
    message, or until interrupted (Ctrl-C); a summary goes to stderr.

    Exit status 0 when it stopped there; 1 when the brokers could not be
    reached, a message was not a ptc batch, or it stopped before --max
    records.
    """
    with kafka_usage():
        cluster = cluster_from(kafka)
        cluster.client_options()
    kafka_client_log(kafka["verbose"])
    with open_output(output) as stream:

        def emit(records: list[Record]) -> None:
            stream.write(to_json_lines(records))
            stream.flush()

        stats = ConsumeStats()
        reading = consume_records(
            cluster, topic, emit, from_beginning=from_beginning, max_records=max_records, idle_timeout_s=timeout,
            stats=stats,
        )  # fmt: skip
        stopped_by = "--timeout"
        try:
            run_async(reading)
        except KafkaUnavailable as exc:
            raise Failed(str(exc)) from None
        except BrokenPipeError:
            sys.stderr.close()
            raise SystemExit(0) from None
        except KeyboardInterrupt:  # the way to stop it without --max or --timeout
            stopped_by = "the interrupt"
    _consume_report(stats, max_records, stopped_by, quiet)


def _consume_report(stats: ConsumeStats, max_records: int | None, stopped_by: str, quiet: bool) -> None:
    if not quiet:
        click.echo(f"consumed {stats.records:,} records from {stats.messages:,} messages", err=True)
    for bad in stats.bad:
        click.echo(f"ptc: error: {bad}", err=True)
    short = max_records is not None and stats.records < max_records
    if short:
        click.echo(f"ptc: error: {stats.records:,} of {max_records:,} records before {stopped_by}", err=True)
    if short or stats.bad:
        raise SystemExit(EXIT_FAILED)


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[ReplayStats], None] | None]:
    """A rich progress bar over the capture files' bytes; yields the replay callback."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("replaying", total=None)

        def on_batch(stats: ReplayStats) -> None:
            description = f"{stats.frames:,} frames, {stats.probes:,} probes"
            bar.update(task, description=description, total=stats.bytes_total, completed=stats.bytes_read)

        yield on_batch


LINKS = {
    "ethernet": (LINKTYPE_ETHERNET, ethernet),
    "vlan": (LINKTYPE_ETHERNET, lambda p: ethernet(p, vlans=[(ETH_P_VLAN[0], 100)])),
    "qinq": (LINKTYPE_ETHERNET, lambda p: ethernet(p, vlans=[(ETH_P_VLAN[1], 200), (ETH_P_VLAN[0], 100)])),
    "sll": (LINKTYPE_LINUX_SLL, linux_sll),
    "sll2": (LINKTYPE_LINUX_SLL2, linux_sll2),
    "raw": (LINKTYPE_RAW, lambda p: p),
}


@main.command()
@click.argument("out", type=click.Path(dir_okay=False, allow_dash=False, path_type=Path))
@click.option("-n", "--count", type=click.IntRange(min=0), default=1000, show_default=True, help="Probes to write.")
@click.option(
    "--hops",
    type=click.IntRange(0, 64),
    default=5,
    show_default=True,
    help="PT midpoints per path (the stack keeps the newest 12).",
)
@click.option("--segments", type=click.IntRange(0, 16), default=3, show_default=True, help="SIDs in each probe's SRH.")
@click.option(
    "--encap/--bare",
    default=True,
    show_default=True,
    help="As the sink sends them to a collector, or as the source sends them.",
)
@click.option(
    "--sources",
    type=click.IntRange(1, 4096),
    default=4,
    show_default=True,
    help="Source nodes, each with its own path and session.",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Seed for interface ids, loads and delays.")
@click.option(
    "--tts-shift",
    type=click.IntRange(0, MAX_SHIFT),
    default=18,
    show_default=True,
    help="TTS shift the midpoints stamp with.",
)
@click.option(
    "--link", type=click.Choice(sorted(LINKS)), default="ethernet", show_default=True, help="Link layer of the capture."
)
@click.option("--interval-us", type=click.IntRange(min=1), default=1000, show_default=True, help="Time between probes.")
def generate(
    out: Path,
    count: int,
    hops: int,
    segments: int,
    encap: bool,
    sources: int,
    seed: int,
    tts_shift: int,
    link: str,
    interval_us: int,
) -> None:
    """Write COUNT realistic PT probes to the pcap file OUT.

    Each source sends along its own SRv6 path; midpoints push MCDs with TTS
    from their egress times; with --encap the sink stamps its time and
    encapsulates the probe toward a collector.
    """
    linktype, frame_of = LINKS[link]
    probes = generate_probes(
        count, hops=hops, segments=segments, encap=encap, seed=seed, sources=sources,
        tts_shift=tts_shift, interval_ns=interval_us * 1000,
    )  # fmt: skip
    try:
        with open(out, "wb") as stream:
            writer = PcapWriter(stream, linktype)
            for capture_ns, packet in probes:
                writer.write(capture_ns, frame_of(packet))
    except OSError as exc:
        raise Failed(f"cannot write {out}: {exc.strerror}") from None
    click.echo(f"wrote {count:,} probes to {out}", err=True)


main.add_command(collect)
main.add_command(paths)
main.add_command(rules_group)
main.add_command(__import__("pt_collector.cli_analyze", fromlist=["analyze"]).analyze)  # ptc analyze: its own module


@main.group("config")
def config_group() -> None:
    """Check settings files."""


@config_group.command("check")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def config_check(ctx: click.Context, file: Path | None) -> None:
    """Check the settings file FILE [default: --config] and print every command's effective settings.

    The output is TOML: each value with where it comes from (the file, a
    PTC_* variable, or the default); flags on a command line still win.
    Secrets (passwords) show as ***. Exit status 0 when every key and value
    is valid, 2 with one line naming the key when one is not.
    """
    path = file or ctx.find_root().params.get("config_file")
    config, table = effective(main, path)
    click.echo(render(config, table), nl=False)
    if secrets := exposed_secrets(config):
        warning = f"{config.name} holds {', '.join(secrets)} and other users can read it: chmod 600 {config.name}"
        click.echo(f"ptc: warning: {warning}", err=True)


expose_environment(main)

if __name__ == "__main__":  # pragma: no cover
    main()
