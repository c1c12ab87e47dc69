"""`ptc collect`'s work: the workers, their sinks, -c and -w; imported when the command runs (cli/collect.py).

Everything a worker needs is imported here, at the command's start, while the process is still root (--user).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..codec.wire import LINKTYPE_ETHERNET
from ..kafka.client import KafkaUnavailable
from ..kafka.sink import KafkaSink, Say
from ..ops.board import StatsBoard
from ..ops.display import Display
from ..ops.privileges import PrivilegeError, drop_privileges
from ..ops.workers import EXIT_FATAL, run_workers
from ..pipeline.collect import (
    CaptureSettings,
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
from ..pipeline.sinks import JsonLinesSink, OutputError, Sink
from ..pipeline.stats import CollectStats
from .common import (
    EXIT_FAILED,
    Failed,
    kafka_client_log,
    kafka_usage,
    open_output,
    output_name,
    run_async,
)
from .kafka_options import (
    batcher_from,
    cluster_from,
    producer_settings_from,
)

if TYPE_CHECKING:
    from ..capture import SharedReceiver

TICK_S = 1.0  # with flow rules, histogram windows close by the wall clock this often while no probe comes
REPORT_INTERVAL_S = 1.0  # workers post their counters this often: table, log lines and /metrics read them

SinkOpener = Callable[[], contextlib.AbstractAsyncContextManager[Sink]]


def run_workers_or_one(
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
    shared: SharedReceiver | None = None,
    wrap: SinkWrap | None = None,
) -> tuple[int, CollectStats]:
    """Capture until stopped: (exit status, counters); errors, and the shutdown flush, are a line through `say`."""
    from ..capture import CaptureSetupError

    try:
        worker = run_async(_capture(settings, engine, opener, report, user, shared, wrap))
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
    shared: SharedReceiver | None = None,
    wrap: SinkWrap | None = None,
) -> Worker:
    # a receiver the parent opened (--workers N) has its kernel counters read by the parent
    receiver, kernel_stats = (shared, None) if shared is not None else open_receiver(settings)
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


def check_one_worker_options(workers: int, count: int | None, write_file: Path | None, size: int | None) -> None:
    if workers > 1 and (given := [flag for flag, v in (("-c", count), ("-w", write_file)) if v is not None]):
        raise click.UsageError(f"{', '.join(given)}: with one worker only (--workers {workers})")
    if size is not None and write_file is None:
        raise click.UsageError("-C (--file-size) rotates the -w FILE: give -w FILE")


def open_pcap(write_file: Path | None, file_size: int | None) -> RotatingPcap | None:
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


def sink_opener(output: str | None, kafka: dict[str, Any], append: bool, say: Say, rules: Ruleset) -> SinkOpener:
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
