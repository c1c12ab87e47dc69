"""Prometheus metrics and a health check over HTTP: GET /metrics, GET /healthz.

The exposition format comes from prometheus_client; the values come from
the stats board, read at scrape time (per worker, label `worker`).

Each connection is served in a thread of its own, one request per
connection, and is closed after CONNECTION_DEADLINE_S whatever the client
does (idle, or trickling a request byte by byte: slowloris), so a slow
client blocks nobody else; at most MAX_CONNECTIONS are served at once, the
ones beyond are closed as they come. Only GET and HEAD: nothing on it changes state.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import weakref
from collections.abc import Iterator
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ..codec.histogram import Histogram
from .board import StatsBoard

# (metric name, help, CollectStats field)
COUNTERS = [
    ("ptc_kernel_received_frames", "Frames the kernel's filter passed to the socket.", "kernel_received"),
    ("ptc_kernel_dropped_frames", "Frames the kernel dropped: the ring or socket buffer was full.", "kernel_dropped"),
    ("ptc_frames", "Frames read in user space.", "frames"),
    ("ptc_frames_left_at_stop", "Frames the kernel took that were still unread when capture stopped.", "left_at_stop"),
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
    ("ptc_frames_unreported", "Frames a worker read after its last report before it died.", "unreported"),
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
        engine = GaugeMetricFamily("ptc_engine_info", "The decode engine in use: native or python.", labels=["engine"])
        engine.add_metric([self.board.engine], 1)
        yield engine
        yield _histogram("ptc_kafka_batch_records", "Records per Kafka message.", workers, "batch_sizes")
        yield _histogram("ptc_kafka_delivery_seconds", "From send to acknowledgement, per message.", workers, "latency")


def _histogram(name: str, text: str, workers: list, attr: str) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, text, labels=["worker"])
    for worker, stats in workers:
        histogram: Histogram = getattr(stats, attr)
        family.add_metric([worker], histogram.cumulative(), histogram.total)
    return family


CONNECTION_DEADLINE_S = 5.0  # a connection is closed this long after it was accepted, answered or not
MAX_CONNECTIONS = 256  # served at once; more are closed as they come
METHODS = ("GET", "HEAD")


class _QuietHandler(WSGIRequestHandler):
    timeout = CONNECTION_DEADLINE_S  # StreamRequestHandler sets it on the connection: every read and write

    def log_message(self, format: str, *args: object) -> None:
        pass  # no line per scrape


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """One thread per connection (daemon: a stuck client never holds up the exit), at most MAX_CONNECTIONS."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(*args, **kwargs)
        os.set_inheritable(self.socket.fileno(), False)  # no exec'd child gets the listening socket

    def process_request(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        deadline = threading.Timer(CONNECTION_DEADLINE_S, _cut, (request,))  # a trickle resets no per-read timeout
        deadline.daemon = True
        deadline.start()
        try:
            super().process_request_thread(request, client_address)
        finally:
            deadline.cancel()
            self._slots.release()

    def handle_error(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        pass  # a client that timed out or went away: its connection is closed, nothing to report


def _cut(connection: socket.socket) -> None:
    """End a connection past its deadline: its thread's blocked read or write returns at once."""
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)


class MetricsServer:
    """/metrics and /healthz on `address:port`, served from a daemon thread, a thread per connection.

    A process forked from this one (a capture worker) closes its copy of the listening socket
    at once: only this process serves the port.
    """

    def __init__(self, board: StatsBoard, address: str, port: int) -> None:
        self.board = board
        self.registry = CollectorRegistry()
        self.registry.register(BoardCollector(board))
        self._server: WSGIServer = make_server(
            address, port, self._app, server_class=_ThreadingServer, handler_class=_QuietHandler
        )
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="ptc-metrics", daemon=True)
        _close_in_children(self._server.socket)

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def _app(self, environ: dict, start_response) -> list[bytes]:  # type: ignore[no-untyped-def]
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in METHODS:
            start_response("405 Method Not Allowed", [("Content-Type", "text/plain"), ("Allow", ", ".join(METHODS))])
            return [] if method == "HEAD" else [b"GET or HEAD only\n"]
        status, content_type, body = self._answer(environ.get("PATH_INFO", "/"))
        start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [] if method == "HEAD" else [body]

    def _answer(self, path: str) -> tuple[str, str, bytes]:
        if path == "/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if path == "/healthz":
            ok, why = self.board.health()
            return ("200 OK" if ok else "503 Service Unavailable"), "text/plain", f"{why}\n".encode()
        return "404 Not Found", "text/plain", b"/metrics or /healthz\n"


def _close_in_children(listening: socket.socket) -> None:
    """After a fork, the child closes its copy of `listening` (if the server still exists)."""
    ref = weakref.ref(listening)

    def close() -> None:
        sock = ref()
        if sock is not None:
            sock.close()

    os.register_at_fork(after_in_child=close)
