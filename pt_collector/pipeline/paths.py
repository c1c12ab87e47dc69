"""The paths seen in some probes, at a glance: per path its probes, loss and end-to-end delays (pure).

A path is what a histogram rule counts by (path_histogram.path_key):
source, sink, midpoint interface ids in path order. Loss is estimated the
same way, from per-session sequence gaps. Delays are kept exactly (8
bytes each) for exact quantiles and the plot over time.
"""

from __future__ import annotations

import itertools
import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from ..codec.record import PathHistogram, Record
from .path_histogram import PathKey, SessionGaps, path_key, probe_time


class Window(NamedTuple):
    """One path histogram's window: its span and end-to-end quantiles (p50 may be missing)."""

    start_ns: int
    end_ns: int
    p50_ns: int | None
    p99_ns: int


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
    windows: list[Window] = field(default_factory=list)  # path histograms: each window's span and quantiles
    loss_at_ns: array = field(default_factory=lambda: array("q"))  # type: ignore[type-arg]  # probes after a gap
    loss_count: array = field(default_factory=lambda: array("q"))  # type: ignore[type-arg]  # how many before each
    hop_ns: list[array] = field(default_factory=list)  # type: ignore[type-arg]  # per leg (source->1st, .., ->sink)

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
        return rank(self._sorted, q)


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
            lost = self._gaps.lost_before(record)
            if lost:
                path.loss += lost
                path.loss_at_ns.append(probe_time(record))
                path.loss_count.append(lost)
            if record.e2e_ns is not None:
                path.times_ns.append(probe_time(record))
                path.e2e_ns.append(record.e2e_ns)
                _add_legs(path, record)

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
            if levels.get(990) is not None:
                path.windows.append(Window(h.start_ns, h.start_ns + h.interval_ns, levels.get(500), levels[990]))
            if h.loss:  # marked where its window starts
                path.loss_at_ns.append(h.start_ns)
                path.loss_count.append(h.loss)

    def span_ns(self) -> tuple[int, int] | None:
        """The first and last probe time of any path (None: no probe with a time)."""
        times = [t for path in self.paths.values() for t in (path.times_ns or _window_edges(path.windows))]
        return (min(times), max(times)) if times else None

    def rows(self) -> list[PathStats]:
        """Busiest first, then by source and sink."""
        return sorted(self.paths.values(), key=lambda p: (-p.probes, p.src, p.sink or "", p.hop_if_ids))


def _add_legs(path: PathStats, record: Record) -> None:
    """Each leg's delay (source to the first midpoint, midpoint to midpoint, last midpoint to the sink), when
    every hop has its time."""
    times = [hop.time_ns for hop in record.hops]
    if not times or None in times or record.sink is None:
        return
    marks = [record.src.time_ns, *times, record.sink.time_ns]
    if not path.hop_ns:
        path.hop_ns = [array("q") for _ in range(len(marks) - 1)]
    for leg, (before, after) in zip(path.hop_ns, itertools.pairwise(marks), strict=True):
        leg.append(after - before)


@dataclass(frozen=True)
class Band:
    """The delays of one time bin: from, to (ns), how many, and their p50 and p99 (nearest rank)."""

    start_ns: int
    end_ns: int
    count: int
    p50_ns: int
    p99_ns: int


def bands(times_ns: Sequence[int], delays_ns: Sequence[int], start_ns: int, end_ns: int, bins: int) -> list[Band]:
    """The delays binned over [start_ns, end_ns] in `bins` equal bins: the bins with probes, in time order."""
    width = max(1, -(-(end_ns - start_ns + 1) // bins))
    grouped: dict[int, list[int]] = {}
    for t, d in zip(times_ns, delays_ns, strict=True):
        grouped.setdefault((t - start_ns) // width, []).append(d)
    out = []
    for k in sorted(grouped):
        values = sorted(grouped[k])
        out.append(
            Band(start_ns + k * width, start_ns + (k + 1) * width, len(values), rank(values, 0.5), rank(values, 0.99))
        )
    return out


def rank(sorted_values: Sequence[int], q: float) -> int:
    """The value at quantile q of sorted values (nearest rank)."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def _window_edges(windows: list[Window]) -> list[int]:
    return [t for w in windows for t in (w.start_ns, w.end_ns)]
