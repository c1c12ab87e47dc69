"""The stats board: the latest counters of every worker, for the live table, the log lines and /metrics.

Workers post a snapshot about once a second (`post`); readers take
`total()`, `workers()` and `rates()` without ever touching a socket, so the
kernel's read-and-reset counters are read in one place only.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from ..pipeline.stats import BROKER_DOWN, BROKER_UNKNOWN, CollectStats


@dataclass(frozen=True)
class Stage:
    """One row of the table: a stage's in, out, queued and drops."""

    name: str
    into: int
    out: int
    queued: int
    drops: int


def stages(stats: CollectStats) -> list[Stage]:
    """capture -> decode -> batch -> Kafka, as Fastcapa-ng shows its pipeline.

    Records lost with a worker that died are drops of the stage they were in: sent and not yet
    acknowledged (deliver), or still in a batch (batch).
    """
    unsettled = max(0, stats.sent - stats.acked - stats.failed - stats.lost_sent)
    return [
        Stage("capture", stats.kernel_received, stats.frames, 0, stats.kernel_dropped),
        Stage("decode", stats.frames, stats.decoded, 0, stats.not_pt + stats.malformed_total),
        Stage(
            "batch",
            stats.batched,
            stats.sent,
            max(0, stats.pending - unsettled),
            stats.dropped + stats.lost - stats.lost_sent,
        ),
        Stage("deliver", stats.sent, stats.acked, unsettled, stats.failed + stats.lost_sent),
    ]


class StatsBoard:
    def __init__(self, workers: int, kafka: bool, engine: str = "") -> None:
        self.kafka = kafka  # False: records go to a file, there is no broker to watch
        self.engine = engine  # the workers' decode engine: native or python
        self.capturing = False
        self.error = ""
        self._lock = threading.Lock()
        self._latest = [CollectStats() for _ in range(workers)]
        self._previous: tuple[float, CollectStats] = (time.monotonic(), CollectStats())
        self._rates: dict[str, float] = {}

    def post(self, index: int, stats: CollectStats) -> None:
        with self._lock:
            self._latest[index] = stats
            self.capturing = True

    def workers(self) -> list[CollectStats]:
        with self._lock:
            return list(self._latest)

    def total(self) -> CollectStats:
        total = CollectStats()
        for stats in self.workers():
            total.add(stats)
        return total

    def rates(self) -> dict[str, float]:
        """Per-second rate of each stage's out since the last call (the table calls it once a second)."""
        now, total = time.monotonic(), self.total()
        then, before = self._previous
        if now - then >= 0.5:
            seconds = now - then
            self._rates = {
                stage.name: max(0.0, (stage.out - old.out) / seconds)
                for stage, old in zip(stages(total), stages(before), strict=True)
            }
            self._previous = (now, total)
        return self._rates

    def health(self) -> tuple[bool, str]:
        """(healthy, why): capturing, and the broker reachable when there is one."""
        if not self.capturing:
            return False, self.error or "not capturing"
        if self.kafka:
            broker = self.total().broker
            if broker == BROKER_DOWN:
                return False, "Kafka broker unreachable"
            if broker == BROKER_UNKNOWN:
                return False, "Kafka broker not checked yet"
        return True, "capturing"
