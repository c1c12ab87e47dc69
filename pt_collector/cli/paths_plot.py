"""`ptc paths --plot`: one figure for an incident report (matplotlib, the plot extra).

Small multiples, one row per path (the busiest PLOT_PATHS_MAX): on the left
the end-to-end delay over absolute time (UTC) as a p50-p99 band per time
bin, every probe a faint dot, loss (sequence gaps) as red marks on the time
axis; on the right where the delay is spent, leg by leg (source to the first
midpoint, ..., last midpoint to the sink): the median as a bar, the p99 as a
whisker. Each row is titled with its path as interface ids, so two paths
between the same nodes through different midpoints are told apart.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..pipeline.paths import PathStats, PathTable, bands, rank

NS_PER_MS = 1_000_000
PLOT_PATHS_MAX = 12  # rows drawn; the table lists them all
BURST = 3  # a gap of this many probes or more is labelled with its count
BINS = 60  # time bins of the delay band across the whole span
ROW_INCHES = 2.1


def plot(table: PathTable, out: Path, source: str) -> Any:
    """Draw the paths of `table` into `out` (PNG, SVG, PDF by its suffix); the matplotlib Figure (for tests)."""
    from matplotlib.figure import Figure

    rows = [path for path in table.rows() if path.e2e_ns or path.windows][:PLOT_PATHS_MAX]
    span = table.span_ns() or (0, 1)
    figure = Figure(figsize=(14, 1.0 + ROW_INCHES * max(1, len(rows))), layout="constrained")
    figure.suptitle(_title(table, rows, span, source), fontsize="large", fontweight="bold")
    if not rows:
        figure.text(0.5, 0.5, "no probe with an end-to-end delay (a sink and a source time)", ha="center")
        return figure
    rows_figures = figure.subfigures(len(rows), 1, squeeze=False)[:, 0]
    first = legs_first = over_time = None
    for number, (path, row) in enumerate(zip(rows, rows_figures, strict=True)):
        color = f"C{number % 10}"
        row.suptitle(_path_title(path), x=0.01, ha="left", fontsize="medium", fontfamily="monospace")
        left, right = row.subplots(1, 2, width_ratios=(3.2, 1))
        left.sharex(first) if first else None
        left.sharey(first) if first else None
        right.sharey(legs_first) if legs_first and path.hop_ns else None
        first, over_time = first or left, left
        legs_first = legs_first or (right if path.hop_ns else None)
        _delay_over_time(left, path, span, color)
        _legs(right, path, color)
        if number == 0:
            left.set_title("end-to-end delay", loc="right", fontsize="small", color="0.3")
            right.set_title("delay per leg, to the interface named", fontsize="small", color="0.3")
        if number < len(rows) - 1:
            left.tick_params(labelbottom=False)
    _time_axis(first, span)
    over_time.set_xlabel("probe time (source's clock, UTC)")
    _legend(first, any(path.loss_at_ns for path in rows))
    return figure


def _legend(axes: Any, loss: bool) -> None:
    """Above the first row: what the marks mean (the loss mark too, whichever row has loss)."""
    from matplotlib.lines import Line2D

    handles, labels = axes.get_legend_handles_labels()
    if loss:
        handles.append(Line2D([], [], marker="x", color="red", linestyle="none"))
        labels.append("loss: probes missing before this one (sequence gap)")
    axes.legend(handles, labels, loc="lower left", bbox_to_anchor=(0, 1.0), fontsize="x-small", ncols=6, frameon=False)


def _title(table: PathTable, rows: list[PathStats], span: tuple[int, int], source: str) -> str:
    start, end = (datetime.fromtimestamp(t / 1e9, UTC) for t in span)
    same_day = start.date() == end.date()
    when = (
        f"{start:%Y-%m-%d %H:%M:%S} to {end:%H:%M:%S} UTC"
        if same_day
        else f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"
    )
    more = len(table.paths) - len(rows)
    paths = f"{len(table.paths)} path{'s' if len(table.paths) != 1 else ''}"
    paths += f" (the {len(rows)} busiest drawn)" if more > 0 else ""
    return f"PT end-to-end delay and loss per path, {when}\n{paths}, {source}"


def _path_title(path: PathStats) -> str:
    """The path as its interface ids, and its figures."""
    hops = " > ".join(f"if {i}" for i in path.hop_if_ids) or "no midpoint"
    figures = f"{path.probes:,} probes, loss {path.loss:,} ({path.loss_ratio:.1%})"
    if path.e2e_ns:
        figures += f", p50 {_ms(path.quantile(0.5))} p99 {_ms(path.quantile(0.99))} ms"
    return f"{path.src} > {hops} > {path.sink or '-'}    {figures}"


def _delay_over_time(axes: Any, path: PathStats, span: tuple[int, int], color: str) -> None:
    if not path.e2e_ns:  # path histograms from Kafka: each window's p50-p99, as steps over the window
        windows = sorted(path.windows)
        edges = [_when(t) for w in windows for t in (w.start_ns, w.end_ns)]
        p50 = [ms for w in windows for ms in 2 * [(w.p99_ns if w.p50_ns is None else w.p50_ns) / NS_PER_MS]]
        p99 = [ms for w in windows for ms in 2 * [w.p99_ns / NS_PER_MS]]
        axes.fill_between(edges, p50, p99, color=color, alpha=0.3, linewidth=0, label="p50-p99 band per window")
        axes.plot(edges, p50, color=color, linewidth=1.6, label="p50")
        axes.plot(edges, p99, color=color, linewidth=0.8, linestyle="--", label="p99")
    else:
        times = [_when(t) for t in path.times_ns]
        axes.scatter(times, [d / NS_PER_MS for d in path.e2e_ns], s=1.5, color="0.55", alpha=0.35, linewidths=0,
                     rasterized=True, label="a probe")  # fmt: skip
        binned = bands(path.times_ns, path.e2e_ns, span[0], span[1], BINS)
        middles = [_when((b.start_ns + b.end_ns) // 2) for b in binned]
        p50 = [b.p50_ns / NS_PER_MS for b in binned]
        p99 = [b.p99_ns / NS_PER_MS for b in binned]
        axes.fill_between(middles, p50, p99, color=color, alpha=0.3, linewidth=0, label="p50-p99 band")
        axes.plot(middles, p50, color=color, linewidth=1.6, label="p50")
        axes.plot(middles, p99, color=color, linewidth=0.8, linestyle="--", label="p99")
    if path.loss_at_ns:
        marks = [_when(t) for t in path.loss_at_ns]
        sizes = [min(160, 24 + 8 * c) for c in path.loss_count]
        axes.scatter(marks, [0.06] * len(marks), s=sizes, marker="x", color="red", linewidths=1.5,
                     transform=axes.get_xaxis_transform(), zorder=5)  # fmt: skip
        from matplotlib.dates import date2num

        at = axes.get_xaxis_transform()
        for when, count in zip(marks, path.loss_count, strict=True):
            if count >= BURST:
                axes.annotate(f"{count} lost", (date2num(when), 0.06), xycoords=at, xytext=(6, 4),
                              textcoords="offset points", color="red", fontsize="x-small")  # fmt: skip
    axes.set_ylabel("ms")
    axes.set_ylim(bottom=0)
    axes.grid(True, color="0.9")


def _legs(axes: Any, path: PathStats, color: str) -> None:
    if not path.hop_ns:
        axes.text(0.5, 0.5, "no hop times\n(--tts-shift, or auto)", ha="center", va="center", fontsize="small",
                  transform=axes.transAxes, color="0.4")  # fmt: skip
        axes.set_axis_off()
        return
    names = [*(f"if {i}" for i in path.hop_if_ids), "sink"]
    p50, p99 = [], []
    for leg in path.hop_ns:
        values = sorted(leg)
        p50.append(rank(values, 0.5) / NS_PER_MS)
        p99.append(rank(values, 0.99) / NS_PER_MS)
    spots = range(len(names))
    axes.bar(spots, p50, color=color, alpha=0.75, label="p50")
    axes.errorbar(spots, p50, yerr=[[0] * len(p50), [b - a for a, b in zip(p50, p99, strict=True)]], fmt="none",
                  ecolor="0.25", capsize=3, linewidth=0.9)  # fmt: skip
    axes.set_xticks(list(spots), [f"> {name}" for name in names], fontsize="x-small", rotation=30, ha="right")
    axes.set_ylabel("ms", fontsize="small")
    axes.set_ylim(bottom=0)
    axes.grid(True, axis="y", color="0.9")


def _time_axis(axes: Any, span: tuple[int, int]) -> None:
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    locator = AutoDateLocator(tz=UTC)
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator, tz=UTC))
    axes.set_xlim(_when(span[0]), _when(span[1]))


def _when(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, UTC)


def _ms(ns: int | None) -> str:
    return "-" if ns is None else f"{ns / NS_PER_MS:.2f}"
