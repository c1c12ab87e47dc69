"""`ptc analyze`: per-path delay, loss and path events across a fleet, from a probe topic (docs/analyze.md)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import click

from ..ops.stop_watch import bound_stop
from .common import kafka_usage, say_error, say_warning
from .kafka_options import cluster_from, cluster_options, topic_option

DEFAULT_OUTPUT = "pt-paths"
DEFAULT_EVENTS = "pt-path-events"
DEFAULT_GROUP = "ptc-analyze"
STOP_LIMIT_S = 30.0  # after SIGTERM or Ctrl-C, gone within this, whatever Quix Streams or librdkafka is doing


@click.command(short_help="Per-path windows and path events across a fleet, from a probe topic.")
@topic_option("read the probe records from (keyed by source)")
@click.option("--output-topic", default=DEFAULT_OUTPUT, show_default=True, help="Topic for the path histograms.")
@click.option("--events-topic", default=DEFAULT_EVENTS, show_default=True, help="Topic for the path events (JSON).")
@click.option("--group", default=DEFAULT_GROUP, show_default=True, help="Consumer group: instances share the work.")
@click.option(
    "--window",
    "window_s",
    type=click.FloatRange(min=0.001),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="Tumbling window width, aligned to the epoch, on the sources' clocks.",
)
@click.option(
    "--grace",
    "grace_s",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    metavar="SECONDS",
    help="How long after its end (on its source's clock) a window still takes late probes.",
)
@click.option(
    "--close-by",
    type=click.Choice(("source", "partition")),
    default="source",
    show_default=True,
    help="Whose clock closes a source's windows: its own probes' (a source that falls silent keeps its last window "
    "open until it sends again), or the partition's (the latest window end of any source in the Kafka partition: "
    "a silent source's windows close as the others' clocks move on, and a source whose clock lags the others' by "
    "more than --grace has its probes counted late).",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".ptc-analyze-state"),
    show_default=True,
    help="Local RocksDB state (rebuilt from the changelog topics when lost).",
)
@click.option(
    "--p99-threshold-ms",
    type=click.FloatRange(min=0),
    default=None,
    metavar="MS",
    help="A threshold event when a path's window p99 end-to-end delay is above MS.",
)
@click.option(
    "--loss-threshold",
    type=click.FloatRange(0, 1),
    default=None,
    metavar="RATIO",
    help="A threshold event when a path's window loss ratio (lost / sent) is above RATIO.",
)
@click.option(
    "--unseen-windows",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    metavar="N",
    help="A path_gone event once a source's windows close N windows without the path.",
)
@click.option(
    "--instance-id",
    default=None,
    metavar="NAME",
    help="A stable name for this instance (one per running instance, e.g. its pod name): its Kafka transactional id "
    "and static group membership, so that the instance restarted under it fences the transaction its predecessor "
    "left open and takes its partitions back at once [default: a new name each start].",
)
@click.option("--at-least-once", is_flag=True, help="Without Kafka transactions [default: exactly-once].")
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    metavar="PORT",
    help="Serve Prometheus /metrics on PORT: counters, each path's latest window.",
)
@click.option(
    "--metrics-address", default="127.0.0.1", show_default=True, metavar="ADDR",
    help="Address for --metrics-port (0.0.0.0: every interface).",
)  # fmt: skip
@click.option(
    "--live/--no-live",
    "live",
    default=None,
    help="A live table on stderr (the counters and rates, each path's latest window), refreshed every second "
    "[default: when stderr is a terminal].",
)
@click.option(
    "--stats-interval", type=click.FloatRange(min=0.1), default=10.0, show_default=True, metavar="SECONDS",
    help="Without the live table: a counters line on stderr every SECONDS.",
)  # fmt: skip
@cluster_options
def analyze(
    topic: str, output_topic: str, events_topic: str, group: str, window_s: float, grace_s: float, close_by: str,
    state_dir: Path, p99_threshold_ms: float | None, loss_threshold: float | None, unseen_windows: int,
    instance_id: str | None, at_least_once: bool, metrics_port: int | None, metrics_address: str,
    live: bool | None, stats_interval: float, **kafka: Any,
) -> None:  # fmt: skip
    """Per-path windows of probe count, loss and delay quantiles, across every collector, with Quix Streams.

    Reads --topic as consumer group --group (run more instances to spread
    its partitions), and writes one path histogram record per path and
    closed window to --output-topic, and path events (new path, path gone,
    path set changed, threshold crossed) to --events-topic. Runs until
    SIGTERM or Ctrl-C, then prints what it counted on stderr (gone within
    30 s of the signal, whatever the Kafka client is doing).

    Exit status 0 when stopped; 1 when the brokers could not be used; 2 on a usage error.
    """
    signal.signal(signal.SIGTERM, _interrupt)  # a stop while Quix Streams loads: a clean one (it installs its own)
    try:
        from ..analyze import app as quix_app
        from ..analyze.events import Thresholds
        from ..analyze.reach import wait_for_brokers
        from ..analyze.table import Watch
    except KeyboardInterrupt:  # stopped while loading: nothing was read
        return
    except ImportError as exc:
        raise click.UsageError(f"ptc analyze needs the analyze extra ({exc.name} is missing): "
                               "pip install 'pt-collector[analyze]'") from None  # fmt: skip
    window_ms, grace_ms = round(window_s * 1000), round(grace_s * 1000)
    settings = quix_app.Settings(
        cluster_from(kafka),
        topic,
        output_topic,
        events_topic,
        group,
        window_ms,
        grace_ms,
        str(state_dir),
        Thresholds(p99_threshold_ms, loss_threshold, unseen_windows),
        exactly_once=not at_least_once,
        instance_id=instance_id,
        loglevel="INFO" if kafka["verbose"] else "WARNING",
        close_by=close_by,
    )
    with kafka_usage():
        connection = settings.connection()
    counters = quix_app.Counters()
    if metrics_port is not None:
        _serve_metrics(counters, metrics_address, metrics_port)
    click.echo(
        f"ptc analyze: {topic} as group {group} on {kafka['brokers']}; windows of {window_ms} ms, grace {grace_ms} ms "
        f"-> {output_topic}, {events_topic}",
        err=True,
    )
    watch = Watch(counters, f"ptc analyze {topic} ({group})", live=sys.stderr.isatty() if live is None else live,
                  interval_s=stats_interval)  # fmt: skip
    counters.on_histograms.append(watch.observe)
    try:
        wait_for_brokers(connection, kafka["connect_timeout"])
        watch.start()
        application = quix_app.build(settings, counters)
        bound_stop(STOP_LIMIT_S, lambda limit_s: _overrun(limit_s, counters))
        application.run()
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # Quix Streams' and librdkafka's failures: one line, status 1
        watch.stop()
        click.echo(counters.summary(), err=True)
        if _stopped_in_c(exc):  # a stop that landed inside librdkafka's poll: still a clean stop
            return
        cause = f" ({type(exc.__cause__).__name__}: {exc.__cause__})" if exc.__cause__ is not None else ""
        say_error(f"{type(exc).__name__}: {exc}{cause}")
        sys.exit(1)
    watch.stop()
    click.echo(counters.summary(), err=True)


def _serve_metrics(counters, address: str, port: int) -> None:  # type: ignore[no-untyped-def]
    from ..analyze.metrics import PathMetrics, serve

    metrics = PathMetrics(counters)
    counters.on_histograms.append(metrics.observe)
    try:
        serve(metrics, address, port)
    except OSError as exc:
        raise click.UsageError(f"--metrics-port {port}: {exc.strerror}") from None
    click.echo(f"ptc analyze: /metrics on http://{address}:{port}/metrics", err=True)


def _overrun(limit_s: float, counters: Any) -> None:
    click.echo(counters.summary(), err=True)
    say_warning(
        f"ptc analyze: not stopped {limit_s:.0f} s after the signal (a call into the Kafka client did not return): "
        "exiting now; the broker aborts the open transaction, so the next instance reads its probes again"
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stopped_in_c(exc: BaseException) -> bool:
    """A KeyboardInterrupt raised inside a C call comes back as a SystemError caused by it."""
    return isinstance(exc, SystemError) and isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt)
