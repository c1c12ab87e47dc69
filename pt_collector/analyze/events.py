"""Path events from a source's closed windows, in order (pure).

The state (JSON-able, kept per source by the stream processor) holds each
known path's last window, the previous window's path set and each session's
last sequence number (windows.losses). Events, each a JSON-able dict with
`event`, `src`, `window_start_ns`:

- `new_path`: a path seen for the first time (`path`);
- `path_gone`: a path unseen for `unseen_windows` windows (`path`, `last_window_start_ns`), once;
- `path_set_changed`: the source's set of paths differs from its previous window's (`added`, `removed`);
- `threshold`: a path's p99 end-to-end delay or loss ratio crossed a limit (`metric`, `value`, `limit`, `path`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..codec.record import PathHistogram

NS_PER_MS = 1_000_000


@dataclass(frozen=True)
class Thresholds:
    """From the config file's [analyze] table: None switches a check off."""

    p99_ms: float | None = None
    loss_ratio: float | None = None
    unseen_windows: int = 3


def new_state() -> dict[str, Any]:
    return {"known": {}, "previous": None, "sequences": {}}


def path_text(h: PathHistogram) -> dict[str, Any]:
    return {"src": h.src.addr, "sink": h.sink.addr if h.sink else None, "hop_if_ids": list(h.hop_if_ids)}


def on_window(
    state: dict, src: str, start_ns: int, width_ns: int, hists: list[PathHistogram], limits: Thresholds
) -> list[dict]:
    """The events of one closed window of `src` (state updated)."""
    base = {"src": src, "window_start_ns": start_ns}
    events: list[dict] = []
    known: dict[str, int] = state["known"]
    ids = {_id(h): h for h in hists}
    for pid, h in ids.items():
        if pid not in known:
            events.append({"event": "new_path", **base, "path": path_text(h)})
        known[pid] = start_ns
    for pid, last in list(known.items()):
        if last >= 0 and start_ns - last >= limits.unseen_windows * width_ns:
            events.append({"event": "path_gone", **base, "path": _path_of(src, pid), "last_window_start_ns": last})
            known[pid] = -1 - last  # said once; negative until the path comes back
    previous = state["previous"]
    if previous is not None and set(previous) != set(ids):
        added, removed = sorted(set(ids) - set(previous)), sorted(set(previous) - set(ids))
        events.append({"event": "path_set_changed", **base, "added": [_path_of(src, p) for p in added],
                       "removed": [_path_of(src, p) for p in removed]})  # fmt: skip
    state["previous"] = sorted(ids)
    for h in hists:
        events.extend(_thresholds(h, base, limits))
    return events


def _thresholds(h: PathHistogram, base: dict, limits: Thresholds) -> list[dict]:
    out = []
    if limits.p99_ms is not None and h.e2e.quantiles_ns:
        p99 = h.e2e.quantiles_ns[h.quantiles_permille.index(990)] / NS_PER_MS
        if p99 > limits.p99_ms:
            out.append({"event": "threshold", **base, "metric": "p99_ms", "value": p99, "limit": limits.p99_ms,
                        "path": path_text(h)})  # fmt: skip
    if limits.loss_ratio is not None and h.loss:
        ratio = h.loss / (h.count + h.loss)
        if ratio > limits.loss_ratio:
            out.append({"event": "threshold", **base, "metric": "loss_ratio", "value": ratio,
                        "limit": limits.loss_ratio, "path": path_text(h)})  # fmt: skip
    return out


def _id(h: PathHistogram) -> str:
    return f"{h.sink.addr if h.sink else ''}|{','.join(map(str, h.hop_if_ids))}"


def _path_of(src: str, pid: str) -> dict[str, Any]:
    sink, _, ifs = pid.partition("|")
    return {"src": src, "sink": sink or None, "hop_if_ids": [int(i) for i in ifs.split(",") if i]}
