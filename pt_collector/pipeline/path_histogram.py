"""Per-path, per-interval delay histograms: the `histogram` function of flow rules (pure).

A path is (source, sink, midpoint interface ids in path order). A probe
belongs to the window [k * interval, (k + 1) * interval) holding its
source's time (T64, the instant it was sent, so every collector of a fleet
cuts the same windows; the capture time for a probe without an SRH). A
path's window closes when a probe of that path from a later window comes,
when the clock (the latest capture time, or a tick) has passed the
window's end as that source sees it, plus a grace, or at flush. A probe for
a window already closed is counted as late and left out.

Loss is estimated per session (source address, session id) from gaps in
the 16-bit sequence numbers, and charged to the window of the probe after
the gap. docs/rules.md has the record (record.PathHistogram).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from operator import attrgetter

from ..codec.histogram import Histogram
from ..codec.record import HISTOGRAM_SCHEMA_VERSION, DelayHistogram, PathHistogram, PathNode, Record

PathKey = tuple[str, str | None, tuple[int, ...]]  # source address, sink address, midpoint interface ids
SEQUENCE_MOD = 1 << 16
FOLD_AT = 4096  # delays held per window and hop before they are counted into its histogram
MS = 1_000_000


_if_id = attrgetter("if_id")


def path_key(record: Record) -> PathKey:
    """The path a probe took: source, sink (None for a bare probe), midpoint interface ids in path order."""
    sink = record.sink
    return record.src.addr, sink.addr if sink is not None else None, tuple(map(_if_id, record.hops))


def probe_time(record: Record) -> int:
    """The probe's time: its source's T64, or the capture time when it has no source TLV (no SRH)."""
    return record.src.time_ns or record.capture_ns


class SessionGaps:
    """Probes lost per session (source address, session id), from gaps in its sequence numbers.

    The first probe of a session, a repeated sequence number and one older
    than the latest (reordered, within half the sequence space) count no loss.
    """

    def __init__(self) -> None:
        self._last: dict[tuple[str, int], int] = {}

    def lost_before(self, record: Record) -> int:
        """How many sequence numbers were skipped just before this probe's."""
        key = (record.src.addr, record.session_id)
        last = self._last.get(key)
        sequence = record.sequence
        if last is None:
            self._last[key] = sequence
            return 0
        step = (sequence - last) % SEQUENCE_MOD
        if step == 0 or step >= SEQUENCE_MOD // 2:
            return 0
        self._last[key] = sequence
        return step - 1


class _Delays:
    """Delays being counted: appended as they come, folded into a Histogram (buckets, sum) now and then.

    Sorting a few thousand delays and cutting them at the bounds is C work;
    a bisect and two additions per delay in Python would cost 5x more.
    """

    __slots__ = ("histogram", "max", "min", "pending")

    def __init__(self, bounds: tuple[int, ...]) -> None:
        self.histogram = Histogram(bounds, total=0)  # total stays an integer: records hold no floats
        self.pending: list[int] = []
        self.min: int | None = None
        self.max: int | None = None

    def fold(self) -> None:
        if not self.pending:
            return
        delays = sorted(self.pending)
        self.pending.clear()
        bounds = self.histogram.bounds
        at_most = [bisect_right(delays, bound) for bound in bounds] + [len(delays)]  # delays <= each bound
        counts = [n - below for n, below in zip(at_most, [0, *at_most], strict=False)]
        self.histogram.add(Histogram(bounds, counts, sum(delays)))
        self.min = delays[0] if self.min is None else min(self.min, delays[0])
        self.max = delays[-1] if self.max is None else max(self.max, delays[-1])

    def frozen(self) -> DelayHistogram:
        self.fold()
        counts = self.histogram.counts
        return DelayHistogram(sum(counts), self.min, self.max, int(self.histogram.total), tuple(counts))


class _Window:
    __slots__ = ("count", "e2e", "e2e_pending", "hop_pending", "hops", "loss", "start")

    def __init__(self, start: int, hops: int, bounds: tuple[int, ...], hop_bounds: tuple[int, ...]) -> None:
        self.start = start
        self.count = 0
        self.loss = 0
        self.e2e = _Delays(bounds)
        self.hops = [_Delays(hop_bounds) for _ in range(hops + 1)]  # source -> first midpoint ... last -> sink
        self.e2e_pending = self.e2e.pending  # what _observe appends to
        self.hop_pending = [delays.pending for delays in self.hops]

    def fold(self) -> None:
        self.e2e.fold()
        for delays in self.hops:
            delays.fold()


class _Path:
    __slots__ = ("closed_until", "lag", "window")

    def __init__(self) -> None:
        self.window: _Window | None = None
        self.closed_until = 0  # windows starting before this were emitted: their probes are late
        self.lag = 0  # capture time minus probe time of the path's latest probe: its clock as the collector sees it


class PathHistograms:
    """The histogram function of one rule: probes in, a PathHistogram per path and closed window out."""

    def __init__(
        self,
        rule: str,
        interval_ms: int,
        bounds_ns: Sequence[int],
        hop_bounds_ns: Sequence[int],
        grace_ms: int,
    ) -> None:
        if interval_ms < 1 or grace_ms < 0:
            raise ValueError("interval_ms must be positive and grace_ms not negative")
        self.rule = rule
        self.interval_ns = interval_ms * MS
        self.grace_ns = grace_ms * MS
        self.bounds_ns = tuple(bounds_ns)
        self.hop_bounds_ns = tuple(hop_bounds_ns)
        self.late = 0  # probes for windows already emitted
        self._paths: dict[PathKey, _Path] = {}
        self._gaps = SessionGaps()
        self._next_check: int | None = None  # no open window closes by the clock before this

    def add(self, record: Record) -> list[PathHistogram]:
        """Count a probe; the histograms of the windows it closed (its path's earlier one)."""
        key = path_key(record)
        path = self._paths.get(key)
        if path is None:
            path = self._paths[key] = _Path()
        time_ns = probe_time(record)
        start = time_ns - time_ns % self.interval_ns
        window = path.window
        if start < path.closed_until or (window is not None and start < window.start):
            self.late += 1
            return []
        path.lag = record.capture_ns - time_ns
        closed = []
        if window is not None and start > window.start:
            closed.append(self._close(key, path))
            window = None
        if window is None:
            window = path.window = _Window(start, len(key[2]), self.bounds_ns, self.hop_bounds_ns)
            due = self._due(path)
            if self._next_check is None or due < self._next_check:
                self._next_check = due
        window.count += 1
        window.loss += self._gaps.lost_before(record)
        if record.e2e_ns is not None:
            _observe(window, record)
        return closed

    def tick(self, now_ns: int) -> list[PathHistogram]:
        """The histograms of the windows the clock has passed (end, as the source sees it, plus the grace)."""
        if self._next_check is None or now_ns < self._next_check:
            return []
        closed, next_check = [], None
        for key, path in self._paths.items():
            if path.window is None:
                continue
            due = self._due(path)
            if due <= now_ns:
                closed.append(self._close(key, path))
            elif next_check is None or due < next_check:
                next_check = due
        self._next_check = next_check
        return closed

    def flush(self) -> list[PathHistogram]:
        """The histograms of every open window, now."""
        closed = [self._close(key, path) for key, path in self._paths.items() if path.window is not None]
        self._next_check = None
        return closed

    def _due(self, path: _Path) -> int:
        assert path.window is not None
        return path.window.start + self.interval_ns + path.lag + self.grace_ns

    def _close(self, key: PathKey, path: _Path) -> PathHistogram:
        window = path.window
        assert window is not None
        path.window = None
        path.closed_until = window.start + self.interval_ns
        src, sink, hop_if_ids = key
        return PathHistogram(
            HISTOGRAM_SCHEMA_VERSION, self.rule, window.start, self.interval_ns, PathNode(src),
            PathNode(sink) if sink is not None else None, hop_if_ids, window.count, window.loss,
            self.bounds_ns, window.e2e.frozen(), self.hop_bounds_ns, tuple(d.frozen() for d in window.hops),
        )  # fmt: skip


def _observe(window: _Window, record: Record) -> None:
    """End-to-end delay, and each hop's delay between neighbours whose times are both known."""
    e2e, hops = window.e2e_pending, window.hop_pending
    e2e.append(record.e2e_ns)  # type: ignore[arg-type]
    previous: int | None = record.src.time_ns
    for delays, hop in zip(hops, record.hops, strict=False):
        time_ns = hop.time_ns
        if time_ns is not None and previous is not None:
            delays.append(time_ns - previous)
        previous = time_ns
    if previous is not None:
        hops[-1].append(record.sink.time_ns - previous)  # type: ignore[union-attr]
    if len(e2e) >= FOLD_AT:
        window.fold()
