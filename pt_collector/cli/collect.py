"""`ptc collect`: live capture on an interface into Kafka (or a JSON lines file)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import click

from ..codec.wire import LINKTYPE_ETHERNET
from ..kafka.client import KafkaUnavailable
from ..kafka.sink import KafkaSink, Say
from ..ops.board import StatsBoard
from ..ops.config import TTS_SHIFT, engine_for, rules_for
from ..ops.display import Display, counter_fields
from ..ops.metrics import MetricsServer
from ..ops.privileges import PrivilegeError, drop_privileges, lookup
from ..ops.workers import EXIT_FATAL, ON_EXIT, run_workers
from ..pipeline.collect import (
    CaptureSettings,
    Opened,
    ParentReceivers,
    Worker,
    file_delivery,
    kafka_delivery,
    open_receiver,
    run_worker,
)
from ..pipeline.engine import Engine
from ..pipeline.functions import RuleEngine
from ..pipeline.limit import LimitedSink
from ..pipeline.routing import RoutedSink, file_routes, open_kafka_output
from ..pipeline.rules import Ruleset
from ..pipeline.save import MB, RotatingPcap, SavingSink
from ..pipeline.shift_watch import ShiftWatchingEngine
from ..pipeline.sinks import JsonLinesSink, OutputError, Sink
from ..pipeline.stats import CollectStats
from .common import (
    EXIT_FAILED,
    TTS_SHIFT_HELP,
    Failed,
    check_output,
    count_option,
    kafka_client_log,
    kafka_usage,
    numeric_option,
    open_output,
    output_name,
    run_async,
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

TICK_S = 1.0  # with flow rules, histogram windows close by the wall clock this often while no probe comes
REPORT_INTERVAL_S = 1.0  # workers post their counters this often: table, log lines and /metrics read them

SinkOpener = Callable[[], contextlib.AbstractAsyncContextManager[Sink]]


@click.command(short_help="Capture PT probes on an interface into Kafka (or JSON lines).")
@click.argument("expression", nargs=-1)
@click.option("-i", "--iface", required=True, envvar="PTC_IFACE", show_envvar=True, help="Interface to capture on.")
@click.option(
    "-o", "--output", metavar="FILE",
    help="Write records as JSON lines to FILE ('-' for stdout) instead of sending them to Kafka.",
)  # fmt: skip
@click.option(
    "--capture", type=click.Choice(["ring", "socket"]), default="ring", show_default=True,
    help="ring: a PACKET_MMAP TPACKET_V3 ring, no syscall per packet; socket: recv_into until EAGAIN on each wakeup.",
)  # fmt: skip
@click.option(
    "--ring-block-size", type=click.IntRange(min=4096), default=1 << 22, show_default=True, metavar="BYTES",
    help="A power of two, up to 1 GiB, holding the interface's largest frame.",
)  # fmt: skip
@click.option(
    "--ring-blocks", type=click.IntRange(min=2), default=16, show_default=True, metavar="N",
    help="Blocks per ring (one ring per worker); all the rings together may take half of MemTotal at most, "
    "and no more than MemAvailable.",
)  # fmt: skip
@click.option(
    "--ring-timeout-ms", type=click.IntRange(min=1), default=100, show_default=True, metavar="MS",
    help="A block not yet full is handed over after this long (latency bound at low rates).",
)  # fmt: skip
@click.option(
    "--rcvbuf", type=click.IntRange(min=0), default=64 << 20, show_default=True, metavar="BYTES",
    help="Socket receive buffer for --capture socket (SO_RCVBUFFORCE).",
)  # fmt: skip
@click.option(
    "--bpf", metavar="EXPR",
    help="A tcpdump-style filter instead of the default one (IPv6 with a Hop-by-Hop or Routing header).",
)  # fmt: skip
@click.option(
    "--workers", type=click.IntRange(1, 64), default=1, show_default=True,
    help="Processes joined by PACKET_FANOUT (hash: a flow stays in one worker), each with its own socket and sink.",
)  # fmt: skip
@click.option(
    "--on-worker-exit", type=click.Choice(ON_EXIT), default="restart", show_default=True,
    help="With --workers, when a worker dies (killed, or exits with an error): restart it, with a backoff "
    "(0.5 s doubling to 30 s; ptc gives up and exits 1 after 5 failures in a row within 5 s of starting), "
    "or stop the others and exit 1.",
)  # fmt: skip
@click.option("--tts-shift", type=TTS_SHIFT, default=None, help=TTS_SHIFT_HELP)
@count_option("Stop after N probes, as tcpdump -c does (with one worker): the records decoded past N in the last "
              "burst are not delivered, and counted as dropped.")  # fmt: skip
@click.option(
    "-w", "--write", "write_file", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path),
    help="Also save the frames of the probes captured to the pcap FILE, as tcpdump -w (with one worker; "
    "not-PT and malformed frames are counted, not saved).",
)  # fmt: skip
@click.option(
    "-C", "--file-size", type=click.IntRange(min=1), metavar="MB",
    help="With -w: once the file is larger than MB million bytes, go on in FILE1, FILE2, ... (tcpdump -C).",
)  # fmt: skip
@numeric_option
@click.option(
    "--stats/--no-stats", default=None,
    help="A live table of the counters on stderr, refreshed every second [default: when stderr is a terminal].",
)  # fmt: skip
@click.option(
    "--stats-interval", type=click.FloatRange(min=0.1), default=5.0, show_default=True, metavar="SECONDS",
    help="Without the table: how often a counters line goes to stderr.",
)  # fmt: skip
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
    help="Without the table: counters and messages on stderr as text lines or as JSON objects, one a line.",
)  # fmt: skip
@click.option(
    "--metrics-port", type=click.IntRange(0, 65535), metavar="PORT",
    help="Serve Prometheus metrics on /metrics and a health check on /healthz.",
)  # fmt: skip
@click.option(
    "--metrics-address", default="127.0.0.1", show_default=True, metavar="ADDR",
    help="Address for --metrics-port (0.0.0.0: every interface, for a scraper or probe from outside the host).",
)  # fmt: skip
@click.option(
    "--shutdown-timeout", type=click.FloatRange(min=0), default=20.0, show_default=True, metavar="SECONDS",
    help="On SIGINT/SIGTERM, how long to wait for the broker to acknowledge what is held; "
    "the rest is counted as failed.",
)  # fmt: skip
@click.option(
    "--user", metavar="NAME", help="Drop root for this user once the capture socket is open (needs root to start).",
)  # fmt: skip
@topic_option("send the records to")
@producer_options(when_full="drop")
@cluster_options
@click.pass_context
def collect(
    ctx: click.Context,
    expression: tuple[str, ...],
    iface: str,
    output: str | None,
    capture: str,
    ring_block_size: int,
    ring_blocks: int,
    ring_timeout_ms: int,
    rcvbuf: int,
    bpf: str | None,
    workers: int,
    on_worker_exit: str,
    tts_shift: int | str | None,
    count: int | None,
    write_file: Path | None,
    file_size: int | None,
    stats: bool | None,
    stats_interval: float,
    log_format: str,
    metrics_port: int | None,
    metrics_address: str,
    user: str | None,
    shutdown_timeout: float,
    **kafka: Any,
) -> None:
    """Capture PT probes on an interface and send their records to Kafka.

    ptc collect -i IFACE [OPTIONS] [EXPRESSION]: a trailing tcpdump filter
    EXPRESSION (ptc collect -i eth1 ip6 and host 2001:db8::1) is the
    kernel's filter, as --bpf EXPR would be; without either, a classic BPF
    filter passes only IPv6 frames with a Hop-by-Hop or Routing header
    (plain or VLAN-tagged). Records go to Kafka (--topic, --brokers), or
    as JSON lines to --output FILE ('-': stdout).

    On a terminal a live table shows each stage (capture, decode, batch,
    deliver); otherwise every --stats-interval seconds, and on exit, a line
    of counters goes to stderr: kernel received and dropped, frames,
    probes, not PT, malformed, sent, acknowledged, dropped.

    Kafka away (at start or later) does not stop capture: records are held
    up to --max-pending (then dropped and counted) while ptc reconnects with
    backoff. The config file's [[rules]] route, sample, summarise, drop or
    keep raw the probes per flow, each to its own topic.

    SIGINT or SIGTERM (or -c N probes) stops capture, flushes every batch
    (for at most --shutdown-timeout; the rest is counted as failed) and
    exits 0. Exit status 1: the interface cannot be captured on (missing,
    down, no CAP_NET_RAW) or went away, workers kept dying
    (--on-worker-exit), or the --output or -w file cannot be written (a
    full disk: capture stops in every worker, no restart; what was decoded
    and not written counts as failed); 2 for a usage error.
    """
    from ..capture import CaptureSetupError, FilterError, compile_expression, open_packet_socket
    from ..capture.ring import interface_mtu, memory, ring_geometry_problem

    if output is not None and (given := given_on_command_line(ctx, KAFKA_ONLY_PARAMS)):
        raise click.UsageError(f"{', '.join(given)}: Kafka options, but --output writes a file")
    if output == "-" and workers > 1:
        raise click.UsageError("--workers writes from several processes: use --output FILE or Kafka")
    _check_one_worker_options(workers, count, write_file, file_size)
    if expression and bpf:
        raise click.UsageError("a filter EXPRESSION and --bpf: give one")
    bpf = " ".join(expression) or bpf
    try:
        program = tuple(compile_expression(bpf)) if bpf else None
    except FilterError as exc:
        raise click.BadParameter(str(exc), param_hint="EXPRESSION" if expression else "--bpf") from None
    if capture == "ring":  # before asking the kernel: a ring too large for the machine brings in the OOM killer
        problem = ring_geometry_problem(
            ring_block_size, ring_blocks, rings=workers, memory=memory(), mtu=interface_mtu(iface)
        )
        if problem:
            raise click.UsageError(problem)
    settings = CaptureSettings(
        iface, capture, ring_block_size, ring_blocks, ring_timeout_ms, rcvbuf, program,
        fanout_group=os.getpid() & 0xFFFF if workers > 1 else None, shutdown_timeout_s=shutdown_timeout,
    )  # fmt: skip
    engine = engine_for(
        tts_shift, fmt=kafka["fmt"] if output is None else "json"
    )  # once, here: a PTC_ENGINE that names no engine is a usage error, not a worker's
    board = StatsBoard(workers, kafka=output is None, engine=engine.name)
    display = Display(
        board, iface, live=sys.stderr.isatty() if stats is None else stats, interval_s=stats_interval,
        log_format=log_format,
    )  # fmt: skip
    if isinstance(engine, ShiftWatchingEngine):  # what it learns about --tts-shift, in the display's lines
        engine.say = partial(display.say, "info")
    opener = _sink_opener(output, kafka, append=workers > 1, say=display.say, rules=rules_for())
    try:  # fail here, once, in one line: not in every worker
        if output is not None:
            check_output(output)  # FILE created empty: the workers append to it
        open_packet_socket(iface).close()
        pcap = _open_pcap(write_file, file_size)
        if user:
            lookup(user)
        server = MetricsServer(board, metrics_address, metrics_port) if metrics_port is not None else None
    except (CaptureSetupError, PrivilegeError) as exc:
        raise Failed(str(exc)) from None
    except OSError as exc:
        raise Failed(f"cannot serve metrics on {metrics_address}:{metrics_port}: {exc.strerror}") from None
    try:
        with display:
            serve = server.start if server else lambda: None
            wrap = SinkWrap(count, pcap)
            status = _run(workers, settings, engine, opener, board, display, user, on_worker_exit, serve, wrap)
            board.capturing = False
    finally:
        if server:
            server.stop()
        if pcap is not None:
            pcap.close()
    total = board.total()
    display.log("info", f"stopped: {total.line()}", event="stopped", **counter_fields(total))
    for line in wrap.lines():
        display.log("info", line, event="stopped")
    if status:
        raise SystemExit(EXIT_FAILED)


def _run(
    workers: int,
    settings: CaptureSettings,
    engine: Engine,
    opener: SinkOpener,
    board: StatsBoard,
    display: Display,
    user: str | None,
    on_worker_exit: str = "restart",
    serve: Callable[[], object] = lambda: None,
    wrap: SinkWrap | None = None,
) -> int:
    """Capture with one worker here, or several in their own processes: the exit status.

    With several, this process opens their receivers, then becomes `user` with no capability left
    (it needs none: a worker's successor reads on from the same receiver), and only then starts
    serving metrics (`serve`) and forks the workers, which so are the user from their start.
    """
    if workers == 1:
        serve()

        def report(stats: CollectStats) -> None:
            board.post(0, CollectStats.from_dict(stats.to_dict()))  # a copy: the worker goes on counting
            display.refresh()

        status, stats = _one_worker(settings, engine, opener, report, display.say, user, wrap=wrap)
        board.post(0, stats)
        return status
    from ..capture import CaptureSetupError

    try:
        receivers = ParentReceivers(settings, workers)
    except CaptureSetupError as exc:
        display.error(str(exc))
        return EXIT_FAILED
    try:
        if user:
            _import_what_workers_need()  # the user may not read where Python is installed (as /root/.pyenv)
            drop_privileges(user)  # the sockets are open: the parent needs nothing more
        serve()
        child = partial(_child, settings, engine, opener, display.say, user, receivers)
        return run_workers(
            workers, child, board.post, display.refresh, display.error, on_exit=on_worker_exit, receivers=receivers
        )
    except PrivilegeError as exc:
        display.error(str(exc))
        return EXIT_FAILED
    finally:
        receivers.close()


def _import_what_workers_need() -> None:
    """The modules a worker imports as it starts, imported while this process is still root."""
    import concurrent.futures.thread  # noqa: F401 - uvloop's import needs it
    import multiprocessing.popen_fork  # noqa: F401

    import uvloop  # noqa: F401


def _child(
    settings: CaptureSettings,
    engine: Engine,
    opener: SinkOpener,
    say: Say,
    user: str | None,
    receivers: ParentReceivers,
    index: int,
    report: Callable[[CollectStats], None],
) -> int:
    status, stats = _one_worker(settings, engine, opener, report, say, user, receivers.only(index))
    report(stats)
    return status  # EXIT_FATAL: its output cannot be written, the parent restarts no worker


def _one_worker(
    settings: CaptureSettings,
    engine: Engine,
    opener: SinkOpener,
    report: Callable[[CollectStats], None],
    say: Say,
    user: str | None,
    opened: Opened | None = None,
    wrap: SinkWrap | None = None,
) -> tuple[int, CollectStats]:
    """Capture until stopped: (exit status, counters); errors, and the shutdown flush, are a line through `say`."""
    from ..capture import CaptureSetupError

    try:
        worker = run_async(_capture(settings, engine, opener, report, user, opened, wrap))
    except (CaptureSetupError, KafkaUnavailable, PrivilegeError) as exc:
        say("error", str(exc))
        return EXIT_FAILED, CollectStats()
    if isinstance(worker.error, OutputError):
        say("error", f"{worker.error}: capture stopped, {worker.stats.failed:,} decoded records not written")
    elif worker.error is not None:
        say("error", str(worker.error))
    if worker.unflushed:
        timeout = f"--shutdown-timeout {settings.shutdown_timeout_s:g} s"
        say("error", f"{worker.unflushed:,} records not acknowledged within {timeout}: counted as failed")
    if worker.held_at_stop:
        say("info", _shutdown_line(worker, settings.shutdown_timeout_s))
    if isinstance(worker.error, OutputError):
        return EXIT_FATAL, worker.stats
    return (EXIT_FAILED if worker.error else 0), worker.stats


def _shutdown_line(worker: Worker, timeout_s: float | None) -> str:
    """What the flush after the stop did with what the sink held: acknowledged, failed, out of time."""
    parts = [f"{worker.flushed:,} acknowledged"]
    if worker.failed_in_flush:
        parts.append(f"{worker.failed_in_flush:,} failed")
    if worker.unflushed:
        parts.append(f"{worker.unflushed:,} not acknowledged within --shutdown-timeout {timeout_s:g} s (failed)")
    return f"shutdown: of the {worker.held_at_stop:,} records held at the stop, {', '.join(parts)}"


async def _capture(
    settings: CaptureSettings,
    engine: Engine,
    opener: SinkOpener,
    report: Callable[[CollectStats], None],
    user: str | None,
    opened: Opened | None = None,
    wrap: SinkWrap | None = None,
) -> Worker:
    receiver, kernel_stats = opened if opened is not None else open_receiver(settings)
    wrap = wrap or SinkWrap()
    try:
        receiver.check_interface()  # a receiver opened before (by the parent) may have lost its interface
        async with opener() as sink:
            if user:
                drop_privileges(user)  # the socket and the output are open: nothing else needs root
            workers: list[Worker] = []  # the one made below, for -c to stop
            worker = Worker(
                receiver, engine, wrap.around(sink, lambda: workers[0].stop()), kernel_stats=kernel_stats,
                delivery=wrap.delivery(_delivery(sink)), shutdown_timeout_s=settings.shutdown_timeout_s,
            )  # fmt: skip
            workers.append(worker)
            await run_worker(worker, report, REPORT_INTERVAL_S)
        worker.snapshot()  # after the sink closed: what it could not deliver is counted now
        return worker
    finally:
        receiver.close()


def _check_one_worker_options(workers: int, count: int | None, write_file: Path | None, size: int | None) -> None:
    if workers > 1 and (given := [flag for flag, v in (("-c", count), ("-w", write_file)) if v is not None]):
        raise click.UsageError(f"{', '.join(given)}: with one worker only (--workers {workers})")
    if size is not None and write_file is None:
        raise click.UsageError("-C (--file-size) rotates the -w FILE: give -w FILE")


def _open_pcap(write_file: Path | None, file_size: int | None) -> RotatingPcap | None:
    """The -w file, created now (before --user drops root), or Failed in one line."""
    if write_file is None:
        return None
    pcap = RotatingPcap(write_file, file_size * MB if file_size else None)
    try:
        pcap.open(LINKTYPE_ETHERNET)
    except OSError as exc:
        raise Failed(f"cannot write {write_file}: {exc.strerror}") from None
    return pcap


class SinkWrap:
    """What -c and -w put around the worker's sink (one worker): the count that stops it, the pcap file."""

    def __init__(self, count: int | None = None, pcap: RotatingPcap | None = None) -> None:
        self.count = count
        self.pcap = pcap
        self.limited: LimitedSink | None = None

    def around(self, sink: Sink, stop: Callable[[], None]) -> Sink:
        if self.pcap is not None:
            sink = SavingSink(sink, self.pcap)
        if self.count is not None:
            sink = self.limited = LimitedSink(sink, self.count, reached=stop)
        return sink

    def delivery(self, fill: Callable[[CollectStats], None] | None) -> Callable[[CollectStats], None] | None:
        """The worker's delivery counters, the records decoded past -c counted as dropped."""
        limited = self.limited
        if fill is None or limited is None:
            return fill

        def counted(stats: CollectStats) -> None:
            stats.dropped = 0  # a file sink's fill leaves it; a Kafka sink's sets its own
            fill(stats)
            stats.dropped += limited.beyond

        return counted

    def lines(self) -> list[str]:
        """What they did, for the end of the run."""
        out = []
        if self.limited is not None and self.limited.passed >= self.limited.limit:
            past = f" ({self.limited.beyond:,} decoded past it dropped)" if self.limited.beyond else ""
            out.append(f"stopped after -c {self.limited.limit:,} probes{past}")
        if self.pcap is not None:
            more = f" (and {self.pcap.files - 1:,} files after it, -C)" if self.pcap.files > 1 else ""
            out.append(f"saved {self.pcap.frames:,} frames to {self.pcap.path}{more}")
        return out


def _delivery(sink: Sink) -> Callable[[CollectStats], None] | None:
    """How a worker counts what its sink delivered: Kafka's acknowledgements, or the output file's lines."""
    if isinstance(sink, KafkaSink) or (isinstance(sink, RoutedSink) and sink.kafka_sinks()):
        return kafka_delivery(sink)
    lines = sink if isinstance(sink, JsonLinesSink) else sink.lines if isinstance(sink, RoutedSink) else None
    return file_delivery(lines) if lines else None


def _open_shared(output: str) -> int:
    """The output file for every worker, opened here (before --user drops root), in append mode: each
    worker writes a batch in one write() on its copy of this descriptor."""
    try:
        return os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise Failed(f"cannot write {output}: {exc.strerror}") from None


def _sink_opener(output: str | None, kafka: dict[str, Any], append: bool, say: Say, rules: Ruleset) -> SinkOpener:
    """How each worker opens its sink: a JSON lines file, or a Kafka producer of its own; through the rules if any."""
    if output is not None:
        shared = _open_shared(output) if append and output != "-" else None

        @contextlib.asynccontextmanager
        async def file_sink() -> AsyncIterator[Sink]:
            opened = os.fdopen(os.dup(shared), "ab", buffering=0) if shared is not None else None
            with opened or open_output(output, append=append) as stream:
                lines = JsonLinesSink(stream, output_name(output))
                if not rules:
                    yield lines
                    return
                async with file_routes(RuleEngine(rules, kafka["topic"]), lines, tick_s=TICK_S) as routed:
                    yield routed

        return file_sink
    with kafka_usage():
        cluster, settings = cluster_from(kafka), producer_settings_from(kafka)
        settings.check()
        cluster.client_options()
    kafka_client_log(kafka["verbose"])

    def kafka_sink() -> contextlib.AbstractAsyncContextManager[Sink]:
        return open_kafka_output(  # type: ignore[return-value]
            rules, kafka["topic"], cluster, settings, lambda: batcher_from(kafka), tick_s=TICK_S,
            max_pending=kafka["max_pending"], when_full=kafka["when_full"], wait_for_broker=True, say=say,
        )  # fmt: skip

    return kafka_sink
