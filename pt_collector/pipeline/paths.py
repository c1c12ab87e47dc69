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

from ..codec.record import PathHistogram, Record
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
    worst_ns: dict[int, int] = field(default_factory=dict)  # path histograms: quantile (1/1000) -> worst window's
    window_p99: list[tuple[int, int]] = field(default_factory=list)  # path histograms: (window start, its p99)

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
        """The end-to-end delay at quantile q (nearest rank), None without any.

        From path histogram records (ptc analyze): the worst window's quantile q (the largest maximum for 1).
        """
        if not self.e2e_ns:
            return self.worst_ns.get(round(q * 1000))
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

    def add_histograms(self, histograms: Iterable[PathHistogram]) -> None:
        """Path histogram records (from `ptc analyze` or a histogram rule): counts and loss add up."""
        for h in histograms:
            key = (h.src.addr, h.sink.addr if h.sink is not None else None, h.hop_if_ids)
            path = self.paths.get(key)
            if path is None:
                path = self.paths[key] = PathStats(key)
            path.probes += h.count
            path.loss += h.loss
            levels = dict(zip((*h.quantiles_permille, 1000), (*h.e2e.quantiles_ns, h.e2e.max_ns), strict=False))
            for level, value in levels.items():
                if value is not None:
                    path.worst_ns[level] = max(value, path.worst_ns.get(level, value))
            if 990 in levels and levels[990] is not None:
                path.window_p99.append((h.start_ns, levels[990]))

    def rows(self) -> list[PathStats]:
        """Busiest first, then by source and sink."""
        return sorted(self.paths.values(), key=lambda p: (-p.probes, p.src, p.sink or "", p.hop_if_ids))
