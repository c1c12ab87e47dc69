"""The collector's counters, per stage from the kernel to the broker, and how they add up over workers."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

from ..codec.histogram import BATCH_SIZE_BOUNDS, LATENCY_BOUNDS, Histogram

BROKER_UNKNOWN, BROKER_DOWN, BROKER_UP = -1, 0, 1


@dataclass
class CollectStats:
    """Counters of one worker (or the sum of several)."""

    kernel_received: int = 0  # frames the socket's filter passed (PACKET_STATISTICS)
    kernel_dropped: int = 0  # frames the kernel dropped: the receiver was too slow
    frames: int = 0  # frames read in user space
    left_at_stop: int = 0  # frames the kernel took (kernel_received) that were still unread when capture stopped
    not_pt: int = 0
    malformed: Counter[str] = field(default_factory=Counter)  # by reason
    decoded: int = 0
    batched: int = 0  # records handed to the sink
    sent: int = 0  # records handed to Kafka (or written, for a file)
    acked: int = 0  # records the broker acknowledged (or written, for a file)
    dropped: int = 0  # records the sink dropped by its --when-full policy
    failed: int = 0  # records the broker did not take
    pending: int = 0  # records in the sink, not yet acknowledged or failed (gauge)
    in_flight: int = 0  # Kafka messages sent and not yet settled (gauge)
    messages: int = 0  # Kafka messages sent
    kafka_errors: int = 0  # Kafka messages not delivered
    restarts: int = 0  # times the worker was restarted after it died (--on-worker-exit restart)
    lost: int = 0  # records a worker held (accepted, not yet acknowledged) when it died: lost with it
    lost_sent: int = 0  # of those, records already handed to Kafka (the broker may have taken them)
    unreported: int = 0  # frames a worker read after its last report before it died: their records may be lost
    broker: int = BROKER_UNKNOWN  # the last health check (gauge; the sum is the worst worker's)
    ring_use: float = 0.0  # share of the ring's blocks waiting for user space (gauge; the sum is the highest)
    batch_sizes: Histogram = field(default_factory=lambda: Histogram(BATCH_SIZE_BOUNDS))
    latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BOUNDS))

    @property
    def malformed_total(self) -> int:
        return sum(self.malformed.values())

    def add(self, other: CollectStats) -> None:
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if f.name == "broker":
                self.broker = theirs if mine == BROKER_UNKNOWN else min(mine, theirs) if theirs != -1 else mine
            elif f.name == "ring_use":
                self.ring_use = max(mine, theirs)
            elif isinstance(mine, Counter):
                mine.update(theirs)
            elif isinstance(mine, Histogram):
                mine.add(theirs)
            else:
                setattr(self, f.name, mine + theirs)

    def line(self) -> str:
        """One compact log line."""
        return (
            (
                f"kernel {self.kernel_received:,} received {self.kernel_dropped:,} dropped | "
                f"{self.frames:,} frames: {self.decoded:,} probes, {self.not_pt:,} not PT, "
                f"{self.malformed_total:,} malformed | "
                f"{self.sent:,} sent, {self.acked:,} acked, {self.dropped:,} dropped, {self.failed:,} failed"
            )
            + (f" | {self.restarts:,} worker restarts, {self.lost:,} lost" if self.restarts or self.lost else "")
            + (f" | {self.left_at_stop:,} frames left in the ring at the stop" if self.left_at_stop else "")
        )

    def copy(self) -> CollectStats:
        return CollectStats.from_dict(self.to_dict())

    def left_behind(self) -> CollectStats:
        """What a worker that died leaves to its successor: its counters carry over, its gauges go, and the
        records it held (`pending`: accepted, not yet acknowledged) count as lost."""
        out = self.copy()
        out.lost += self.pending
        out.lost_sent += max(0, min(self.pending, self.sent - self.acked - self.failed - self.lost_sent))
        out.pending = out.in_flight = 0
        out.broker, out.ring_use = BROKER_UNKNOWN, 0.0
        return out

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = (
                dict(value)
                if isinstance(value, Counter)
                else value.to_dict()
                if isinstance(value, Histogram)
                else value
            )
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CollectStats:
        plain = {k: v for k, v in values.items() if k not in ("malformed", "batch_sizes", "latency")}
        stats = cls(**plain)
        stats.malformed.update(values.get("malformed", {}))
        for name in ("batch_sizes", "latency"):
            if name in values:
                setattr(stats, name, Histogram.from_dict(values[name]))
        return stats
