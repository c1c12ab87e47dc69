"""What `ptc analyze` shows an operator while it runs: a live table on a terminal, counter lines otherwise.

The table (rich, refreshed every second from a daemon thread): the stages
with their counts and rates (read, windows, written, skipped), then the
latest closed window of each path (probes, loss, p50/p90/p99 end to end).
Without a terminal (or with --no-live): the counters line every
--stats-interval seconds, as collect's log lines.
"""

from __future__ import annotations

import datetime
import sys
import threading
import time
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from ..codec.record import PathHistogram

MAX_PATHS = 20  # rows of the path table: the most recent windows first


class Watch:
    """The instance's counters (app.Counters) and each path's latest closed window, shown until stop()."""

    def __init__(self, counters: Any, title: str, *, live: bool, interval_s: float, stream: TextIO | None = None):
        self.counters = counters
        self.title = title
        self.interval_s = interval_s
        self.stream = stream or sys.stderr
        self.latest: dict[tuple[str, str, tuple[int, ...]], PathHistogram] = {}
        self._live = Live(console=Console(file=self.stream), refresh_per_second=1, transient=False) if live else None
        self._stop = threading.Event()
        self._previous = (time.monotonic(), 0, 0)
        self._rates = (0.0, 0.0)
        self._thread = threading.Thread(target=self._run, name="ptc-analyze-watch", daemon=True)

    def observe(self, histograms: list[PathHistogram]) -> None:
        """A closed window's histograms (Counters.on_histograms)."""
        for h in histograms:
            self.latest[(h.src.addr, h.sink.addr if h.sink else "", h.hop_if_ids)] = h

    def start(self) -> None:
        if self._live:
            self._live.start()
        self._thread.start()

    def stop(self) -> None:
        """The last table (live), once; nothing when it never started."""
        if self._thread.ident is None:
            return
        self._stop.set()
        self._thread.join(5)
        if self._live:
            self._live.update(self.table())
            self._live.stop()

    def _run(self) -> None:
        next_line = time.monotonic() + self.interval_s
        while not self._stop.wait(1.0):
            self._rate()
            if self._live:
                self._live.update(self.table())
            elif time.monotonic() >= next_line:
                next_line += self.interval_s
                print(self.counters.summary(), file=self.stream, flush=True)

    def _rate(self) -> None:
        now, messages, probes = time.monotonic(), self.counters.messages, self.counters.probes
        then, messages_before, probes_before = self._previous
        seconds = max(1e-6, now - then)
        self._rates = ((messages - messages_before) / seconds, (probes - probes_before) / seconds)
        self._previous = (now, messages, probes)

    def table(self) -> Group:
        c = self.counters
        stages = Table(title=self.title, title_justify="left", expand=False)
        for column in ("stage", "count", "rate/s", "skipped"):
            stages.add_column(column, justify="left" if column == "stage" else "right")
        stages.add_row("messages read", f"{c.messages:,}", f"{self._rates[0]:,.0f}", f"{c.bad_messages:,} bad")
        stages.add_row("probes read", f"{c.probes:,}", f"{self._rates[1]:,.0f}", f"{c.late_probes:,} late")
        stages.add_row("windows closed", f"{c.windows:,}", "", "")
        stages.add_row("path histograms", f"{c.histograms:,}", "", "")
        stages.add_row("path events", f"{c.events:,}", "", "")
        return Group(stages, self.paths())

    def paths(self) -> Table:
        table = Table(title="latest window per path", title_justify="left", expand=False)
        for column in ("source", "sink", "hops", "window (UTC)", "probes", "loss", "p50 ms", "p90 ms", "p99 ms"):
            table.add_column(column, justify="left" if column in ("source", "sink", "hops") else "right")
        latest = sorted(self.latest.items(), key=lambda item: (-item[1].start_ns, item[0]))[:MAX_PATHS]
        for (src, sink, hops), h in sorted(latest, key=lambda item: item[0]):
            quantiles = [f"{q / 1e6:,.3f}" for q in h.e2e.quantiles_ns] or ["", "", ""]
            start = datetime.datetime.fromtimestamp(h.start_ns / 1e9, datetime.UTC).strftime("%H:%M:%S.%f")[:-3]
            table.add_row(
                src, sink, " ".join(map(str, hops)), start, f"{h.count:,}", f"{h.loss:,}", *quantiles[:3]
            )  # fmt: skip
        return table
