"""Prometheus metrics and a health check over HTTP: GET /metrics, GET /healthz.

The exposition format comes from prometheus_client; the values come from
the stats board, read at scrape time (per worker, label `worker`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .board import StatsBoard
from .histogram import Histogram

# (metric name, help, CollectStats field)
COUNTERS = [
    ("ptc_kernel_received_frames", "Frames the kernel's filter passed to the socket.", "kernel_received"),
    ("ptc_kernel_dropped_frames", "Frames the kernel dropped: the ring or socket buffer was full.", "kernel_dropped"),
    ("ptc_frames", "Frames read in user space.", "frames"),
    ("ptc_not_pt_frames", "Frames that were no PT probe.", "not_pt"),
    ("ptc_probes_decoded", "Probes decoded into records.", "decoded"),
    ("ptc_records_batched", "Records handed to the sink.", "batched"),
    ("ptc_records_sent", "Records handed to Kafka (written, for a file).", "sent"),
    ("ptc_records_acked", "Records acknowledged by the broker (written, for a file).", "acked"),
    ("ptc_records_dropped", "Records dropped by the --when-full drop policy.", "dropped"),
    ("ptc_records_failed", "Records the broker did not take.", "failed"),
    ("ptc_kafka_messages", "Kafka messages sent.", "messages"),
    ("ptc_kafka_message_errors", "Kafka messages not delivered.", "kafka_errors"),
    ("ptc_worker_restarts", "Times the worker was restarted after it died.", "restarts"),
    ("ptc_records_lost", "Records a worker held (not yet acknowledged) when it died.", "lost"),
]
GAUGES = [
    ("ptc_records_pending", "Records between decoding and the broker's acknowledgement.", "pending"),
    ("ptc_kafka_messages_in_flight", "Kafka messages sent and not yet acknowledged.", "in_flight"),
    ("ptc_kafka_broker_up", "1 while Kafka takes records, 0 if not, -1 before the first check.", "broker"),
    ("ptc_capture_ring_use", "Share of the receive ring's blocks waiting for user space.", "ring_use"),
]


class BoardCollector(Collector):
    def __init__(self, board: StatsBoard) -> None:
        self.board = board

    def collect(self) -> Iterator[Metric]:
        workers = [(str(i), stats) for i, stats in enumerate(self.board.workers())]
        for name, text, attr in COUNTERS:
            family = CounterMetricFamily(name, text, labels=["worker"])
            for worker, stats in workers:
                family.add_metric([worker], getattr(stats, attr))
            yield family
        malformed = CounterMetricFamily(
            "ptc_malformed_frames", "Malformed PT frames, by reason.", labels=["worker", "reason"]
        )
        for worker, stats in workers:
            for reason, count in sorted(stats.malformed.items()):
                malformed.add_metric([worker, reason], count)
        yield malformed
        for name, text, attr in GAUGES:
            family = GaugeMetricFamily(name, text, labels=["worker"])
            for worker, stats in workers:
                family.add_metric([worker], getattr(stats, attr))
            yield family
        yield GaugeMetricFamily("ptc_capturing", "1 while capturing.", value=int(self.board.capturing))
        yield _histogram("ptc_kafka_batch_records", "Records per Kafka message.", workers, "batch_sizes")
        yield _histogram("ptc_kafka_delivery_seconds", "From send to acknowledgement, per message.", workers, "latency")


def _histogram(name: str, text: str, workers: list, attr: str) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, text, labels=["worker"])
    for worker, stats in workers:
        histogram: Histogram = getattr(stats, attr)
        family.add_metric([worker], histogram.cumulative(), histogram.total)
    return family


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass  # no line per scrape


class MetricsServer:
    """/metrics and /healthz on `address:port`, served from a daemon thread."""

    def __init__(self, board: StatsBoard, address: str, port: int) -> None:
        self.board = board
        self.registry = CollectorRegistry()
        self.registry.register(BoardCollector(board))
        self._server: WSGIServer = make_server(address, port, self._app, handler_class=_QuietHandler)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="ptc-metrics", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _app(self, environ: dict, start_response) -> list[bytes]:  # type: ignore[no-untyped-def]
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
            return [generate_latest(self.registry)]
        if path == "/healthz":
            ok, why = self.board.health()
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [f"{why}\n".encode()]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"/metrics or /healthz\n"]
