"""What `ptc collect` shows an operator: a live table on a terminal, log lines otherwise.

Log lines are text (`ptc collect IFACE: ...`) or JSON (one object a line);
the same error repeated within `REPEAT_WINDOW_S` is logged once, then
counted, never one line per bad packet.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..pipeline.stats import BROKER_DOWN, BROKER_UP, CollectStats
from .board import StatsBoard, stages

REPEAT_WINDOW_S = 30.0
BROKER_STATE = {BROKER_UP: "up", BROKER_DOWN: "unreachable"}


class Display:
    def __init__(
        self,
        board: StatsBoard,
        iface: str,
        *,
        live: bool,
        interval_s: float,
        log_format: str = "text",
        stream: TextIO | None = None,
    ) -> None:
        self.board = board
        self.iface = iface
        self.interval_s = interval_s
        self.log_format = log_format
        self.stream = stream or sys.stderr
        self._next_line = time.monotonic() + interval_s
        self._repeats: dict[str, tuple[float, int]] = {}
        self._last_failed = 0
        self._kafka_trouble = ""  # the last error from the Kafka side, shown in the table while the broker is down
        self._live = Live(console=Console(file=self.stream), refresh_per_second=2, transient=False) if live else None

    def __enter__(self) -> Display:
        if self._live:
            self._live.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._live:
            self._live.update(self.table())
            self._live.stop()

    def refresh(self) -> None:
        """After the board changed (about once a second)."""
        total = self.board.total()
        if total.failed > self._last_failed:
            how = "acknowledged by the broker" if self.board.kafka else "written"
            self.error(f"{total.failed - self._last_failed:,} records not {how}")
            self._last_failed = total.failed
        if self._live:
            self._live.update(self.table())
        elif time.monotonic() >= self._next_line:
            self._next_line += self.interval_s
            self.log("info", total.line(), event="counters", **counter_fields(total))

    def log(self, level: str, message: str, **fields: object) -> None:
        if self.log_format == "json":
            record = {"ts": round(time.time(), 3), "level": level, "iface": self.iface, "msg": message, **fields}
            line = json.dumps(record, separators=(",", ":"))
        else:
            line = f"{'Error: ' if level == 'error' else ''}ptc collect {self.iface}: {message}"
        if self._live:
            self._live.console.print(line, markup=False, highlight=False)
        else:
            print(line, file=self.stream, flush=True)

    def error(self, message: str) -> None:
        """An error line, once per REPEAT_WINDOW_S for the same message (then with how often it came)."""
        now = time.monotonic()
        since, repeats = self._repeats.get(message, (0.0, 0))
        if now - since < REPEAT_WINDOW_S:
            self._repeats[message] = (since, repeats + 1)
            return
        suffix = f" (and {repeats:,} times more in the last {REPEAT_WINDOW_S:.0f} s)" if repeats else ""
        self._repeats[message] = (now, 0)
        self.log("error", message + suffix, event="error")

    def say(self, level: str, message: str) -> None:
        """A line from inside the pipeline (Kafka connection news, the shutdown flush): errors rate-limited."""
        if level == "error":
            self._kafka_trouble = message
            self.error(message)
        else:
            self._kafka_trouble = ""
            self.log(level, message, event="pipeline")

    def table(self) -> Group:
        """Fastcapa-ng style: one row per stage, then one per worker, then the Kafka side."""
        total, rates = self.board.total(), self.board.rates()
        table = Table(title=f"ptc collect {self.iface}", title_justify="left", expand=False)
        for column in ("stage", "in", "rate/s", "queued", "out", "drops", "not PT", "malformed"):
            table.add_column(column, justify="left" if column == "stage" else "right")
        for stage in stages(total):
            why = _decode_drops(total) if stage.name == "decode" else ("", "")
            table.add_row(
                stage.name, f"{stage.into:,}", f"{rates.get(stage.name, 0.0):,.0f}", f"{stage.queued:,}",
                f"{stage.out:,}", f"{stage.drops:,}", *why,
            )  # fmt: skip
        workers = self.board.workers()
        if len(workers) > 1:
            table.add_section()
            for i, stats in enumerate(workers):
                restarted = f" ({stats.restarts:,} restarts)" if stats.restarts else ""
                table.add_row(
                    f"worker {i}{restarted}", f"{stats.kernel_received:,}", "", f"{stats.pending:,}",
                    f"{stats.acked:,}", f"{stats.kernel_dropped + stats.dropped + stats.failed + stats.lost:,}",
                    *_decode_drops(stats),
                )  # fmt: skip
        table.add_section()
        table.add_row(
            "total", f"{total.kernel_received:,}", "", f"{total.pending:,}", f"{total.acked:,}",
            f"{sum(stage.drops for stage in stages(total)):,}", *_decode_drops(total),
        )  # fmt: skip
        return Group(table, Text(self._kafka_line(total) + _restarts_line(total)))

    def _kafka_line(self, total: CollectStats) -> str:
        if not self.board.kafka:
            return f"records written: {total.acked:,}" + (f", not written: {total.failed:,}" if total.failed else "")
        broker = BROKER_STATE.get(total.broker, "not checked yet")
        in_flight = max(0, total.sent - total.acked - total.failed)
        line = (
            f"Kafka: broker {broker}; records: {in_flight:,} in flight, {total.sent:,} sent, {total.acked:,} acked, "
            f"{total.dropped:,} dropped, {total.failed:,} failed ({total.messages:,} messages, "
            f"{total.kafka_errors:,} not delivered)"
        )
        if total.broker == BROKER_DOWN and self._kafka_trouble:  # what the log lines say without the table
            line += f"\nKafka: why: {self._kafka_trouble}"
        return line


def _decode_drops(stats: CollectStats) -> tuple[str, str]:
    """The decode stage's drops by cause: not PT, malformed (their sum is its drops)."""
    return f"{stats.not_pt:,}", f"{stats.malformed_total:,}"


def _restarts_line(total: CollectStats) -> str:
    if not (total.restarts or total.lost):
        return ""
    return f"\nworker restarts: {total.restarts:,}; up to {total.lost:,} records lost with the dead workers"


def counter_fields(stats: CollectStats) -> dict[str, object]:
    """The counters for a JSON log line (histograms left to /metrics)."""
    values = stats.to_dict()
    del values["batch_sizes"], values["latency"]
    return values
