"""The paths seen in some probes, at a glance: per path its probes, loss and end-to-end delays (pure).

A path is what a histogram rule counts by (path_histogram.path_key):
source, sink, midpoint interface ids in path order. Loss is estimated the
same way, from per-session sequence gaps. Delays are kept exactly (8
bytes each) for exact quantiles and the plot over time.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..codec.record import Record
from .path_histogram import PathKey, SessionGaps, path_key, probe_time


@dataclass
class PathStats:
    """One path's probes: how many, how many lost before them, and each one's time and end-to-end delay."""

    key: PathKey
    probes: int = 0
    loss: int = 0
    times_ns: array = field(default_factory=lambda: array("q"))  # type: ignore[type-arg]  # of probes with a delay
    e2e_ns: array = field(default_factory=lambda: array("q"))  # type: ignore[type-arg]
    _sorted: list[int] | None = field(default=None, repr=False)

    @property
    def src(self) -> str:
        return self.key[0]

    @property
    def sink(self) -> str | None:
        return self.key[1]

    @property
    def hop_if_ids(self) -> tuple[int, ...]:
        return self.key[2]

    @property
    def loss_ratio(self) -> float:
        """Lost among sent (received + lost)."""
        return self.loss / (self.probes + self.loss) if self.probes + self.loss else 0.0

    def quantile(self, q: float) -> int | None:
        """The end-to-end delay at quantile q (nearest rank), None without any."""
        if not self.e2e_ns:
            return None
        if self._sorted is None or len(self._sorted) != len(self.e2e_ns):
            self._sorted = sorted(self.e2e_ns)
        return self._sorted[max(0, math.ceil(q * len(self._sorted)) - 1)]


class PathTable:
    """Paths in the order first seen."""

    def __init__(self) -> None:
        self.paths: dict[PathKey, PathStats] = {}
        self._gaps = SessionGaps()

    def add(self, records: Iterable[Record]) -> None:
        for record in records:
            key = path_key(record)
            path = self.paths.get(key)
            if path is None:
                path = self.paths[key] = PathStats(key)
            path.probes += 1
            path.loss += self._gaps.lost_before(record)
            if record.e2e_ns is not None:
                path.times_ns.append(probe_time(record))
                path.e2e_ns.append(record.e2e_ns)

    def rows(self) -> list[PathStats]:
        """Busiest first, then by source and sink."""
        return sorted(self.paths.values(), key=lambda p: (-p.probes, p.src, p.sink or "", p.hop_if_ids))
