"""`ptc analyze --metrics-port`: its counters and each path's latest closed window on Prometheus /metrics.

Served by prometheus_client from a daemon thread. Per path (labels src,
sink, hops): the probes, loss and e2e delay quantiles of its latest closed
window; for the whole instance the counters of app.Counters.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..codec.record import PathHistogram

COUNTERS = (
    ("messages", "Kafka messages read."), ("probes", "Probe records read."),
    ("late_probes", "Probes for windows closed more than --grace before: counted, not added."),
    ("bad_messages", "Messages skipped: not ptc probe batches."), ("windows", "Source windows closed."),
    ("histograms", "Path histograms written."), ("events", "Path events written."),
)  # fmt: skip
_LABELS = ["src", "sink", "hops"]
GAUGES = ("ptc_analyze_path_probes", "ptc_analyze_path_loss_ratio", "ptc_analyze_path_delay_seconds")
SERVED = {f"ptc_analyze_{name}_total" for name, _ in COUNTERS} | set(GAUGES)  # the names on /metrics


class PathMetrics:
    """The latest window of every path this instance closed, and the instance's counters."""

    def __init__(self, counters: Any) -> None:
        self.counters = counters
        self.latest: dict[tuple[str, str, str], PathHistogram] = {}

    def observe(self, histograms: list[PathHistogram]) -> None:
        for h in histograms:
            self.latest[(h.src.addr, h.sink.addr if h.sink else "", " ".join(map(str, h.hop_if_ids)))] = h

    def collect(self) -> Iterator[Any]:
        for name, text in COUNTERS:
            yield CounterMetricFamily(f"ptc_analyze_{name}", text, value=getattr(self.counters, name))
        probes = GaugeMetricFamily(
            "ptc_analyze_path_probes", "Probes of the path's latest closed window.", labels=_LABELS
        )
        loss = GaugeMetricFamily(
            "ptc_analyze_path_loss_ratio", "Lost / sent in the path's latest window.", labels=_LABELS
        )
        delay = GaugeMetricFamily(
            "ptc_analyze_path_delay_seconds", "End-to-end delay quantiles of the path's latest window (DDSketch).",
            labels=[*_LABELS, "quantile"],
        )  # fmt: skip
        for labels, h in list(self.latest.items()):
            probes.add_metric(list(labels), h.count)
            loss.add_metric(list(labels), h.loss / (h.count + h.loss) if h.count + h.loss else 0.0)
            for permille, value in zip(h.quantiles_permille, h.e2e.quantiles_ns, strict=False):
                delay.add_metric([*labels, str(permille / 1000)], value / 1e9)
        yield from (probes, loss, delay)


def serve(metrics: PathMetrics, address: str, port: int) -> None:
    registry = CollectorRegistry()
    registry.register(metrics)  # type: ignore[arg-type]
    start_http_server(port, addr=address, registry=registry)
