"""`ptc collect`: live capture on an interface into Kafka (or a JSON lines file).

The command and its options; the work is in collect_run.py, imported as the command runs (every `ptc` start
loads this module's options for --help and the config file, not aiokafka, rich or the capture stages).
"""

from __future__ import annotations

import os
import sys
from functools import partial
from pathlib import Path
from typing import Any

import click

from ..ops.config import TTS_SHIFT, engine_for, rules_for
from ..ops.workers import ON_EXIT
from .common import (
    EXIT_FAILED,
    TTS_SHIFT_HELP,
    Failed,
    check_output,
    count_option,
    numeric_option,
)
from .kafka_options import (
    KAFKA_ONLY_PARAMS,
    cluster_options,
    given_on_command_line,
    producer_options,
    topic_option,
)


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
    from ..ops.board import StatsBoard
    from ..ops.display import Display, counter_fields
    from ..ops.metrics import MetricsServer
    from ..ops.privileges import PrivilegeError, lookup
    from ..pipeline.collect import CaptureSettings
    from ..pipeline.shift_watch import ShiftWatchingEngine
    from .collect_run import SinkWrap, check_one_worker_options, open_pcap, run_workers_or_one, sink_opener

    if output is not None and (given := given_on_command_line(ctx, KAFKA_ONLY_PARAMS)):
        raise click.UsageError(f"{', '.join(given)}: Kafka options, but --output writes a file")
    if output == "-" and workers > 1:
        raise click.UsageError("--workers writes from several processes: use --output FILE or Kafka")
    check_one_worker_options(workers, count, write_file, file_size)
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
    opener = sink_opener(output, kafka, append=workers > 1, say=display.say, rules=rules_for())
    try:  # fail here, once, in one line: not in every worker
        if output is not None:
            check_output(output)  # FILE created empty: the workers append to it
        open_packet_socket(iface).close()
        pcap = open_pcap(write_file, file_size)
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
            status = run_workers_or_one(
                workers, settings, engine, opener, board, display, user, on_worker_exit, serve, wrap
            )
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
