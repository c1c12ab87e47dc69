"""Delays in a mergeable DDSketch (relative-error quantiles), with exact count, min, max and sum (pure).

The state is a JSON-able dict so that Quix Streams can keep it in RocksDB
and its changelog: the sketch's non-empty bins by key, as its own stores
hold them, and the exact integer extremes and sum (records hold no floats).
The sum is kept as decimal text: a sum of implausible delays (bad clocks)
can leave 64 bits, which the state's JSON serializer refuses.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ddsketch import DDSketch

RELATIVE_ACCURACY = 0.01  # DDSketch's guarantee: a quantile's value within 1% of the true one
QUANTILES = (0.5, 0.9, 0.99)

State = dict[str, Any]


def new_sketch() -> DDSketch:
    return DDSketch(relative_accuracy=RELATIVE_ACCURACY)


def empty() -> State:
    return {"n": 0, "min": None, "max": None, "sum": "0", "pos": {}, "neg": {}, "zero": 0}


def of(delays: Iterable[int]) -> State:
    """The state of some delays."""
    values = list(delays)
    if not values:
        return empty()
    sketch = new_sketch()
    for value in values:
        sketch.add(value)
    return {
        "n": len(values), "min": min(values), "max": max(values), "sum": str(sum(values)),
        "pos": _bins(sketch._store), "neg": _bins(sketch._negative_store), "zero": int(sketch._zero_count),
    }  # fmt: skip


def merge(a: State, b: State) -> State:
    """Both states in one (the sketches' bins added key by key)."""
    if not b["n"]:
        return a
    if not a["n"]:
        return b
    return {
        "n": a["n"] + b["n"], "min": min(a["min"], b["min"]), "max": max(a["max"], b["max"]),
        "sum": str(int(a["sum"]) + int(b["sum"])),
        "pos": _add(a["pos"], b["pos"]), "neg": _add(a["neg"], b["neg"]), "zero": a["zero"] + b["zero"],
    }  # fmt: skip


def quantiles(state: State, levels: tuple[float, ...] = QUANTILES) -> tuple[int, ...]:
    """The delays at `levels`, rounded to the ns; () without any delay."""
    if not state["n"]:
        return ()
    sketch = new_sketch()
    for key, count in state["pos"].items():
        sketch._store.add(int(key), count)
    for key, count in state["neg"].items():
        sketch._negative_store.add(int(key), count)
    sketch._zero_count = state["zero"]
    sketch._count = state["n"]
    low, high = state["min"], state["max"]
    return tuple(min(high, max(low, round(sketch.get_quantile_value(q)))) for q in levels)


def _bins(store: Any) -> dict[str, int]:
    return {str(store.offset + i): int(count) for i, count in enumerate(store.bins) if count}


def _add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    out = dict(a)
    for key, count in b.items():
        out[key] = out.get(key, 0) + count
    return out
