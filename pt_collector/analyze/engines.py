"""Where `ptc analyze` does its per-probe work: the compiled engine (native/src/analyze.rs) or pure Python.

An Aggregator turns one Kafka message into partial window aggregates, merges two aggregates of one source and
window (Quix Streams' reduce, the result kept in RocksDB and its changelog), and reads a closed one out. The
native aggregates are bytes (msgpack, sketches in Datadog's DDSketch encoding); the Python ones JSON-able dicts
(windows.py, sketch.py). Both sketch the delays with DDSketch at 1 % relative error, so their quantiles agree
within it; counts, loss, min, max and sum are exact in both. PTC_ENGINE chooses, as for collect
(pipeline.engine.engine_name). The two state formats differ: the instances of one --group run one engine.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..codec.record import SCHEMA_VERSION, DelayHistogram, Record
from ..kafka.kinds import KIND_HEADER, decode_any_message
from ..kafka.message import (
    COUNT_HEADER,
    FORMAT_HEADER,
    FORMATS,
    SCHEMA_HEADER,
    Headers,
    MessageError,
    header_dict,
    header_text,
)
from ..pipeline.engine import EngineError, _native, engine_name
from . import sketch, windows

Item = tuple[int, Any, int]  # (latest probe time ms: the item's event time, aggregate, probes)
_SCHEMA_VALUE = str(SCHEMA_VERSION).encode()


class Aggregator(Protocol):
    name: str

    def split(self, value: bytes | None, headers: Headers | None, key: str | None, width_ms: int) -> list[Item]:
        """A message's probes per window, in window order; MessageError when it is no probe batch of `key`."""

    def merge(self, a: Any, b: Any) -> Any: ...

    def read(self, aggregate: Any) -> windows.Window: ...


class PythonAggregator:
    name = "python"

    def split(self, value: bytes | None, headers: Headers | None, key: str | None, width_ms: int) -> list[Item]:
        records = [r for r in decode_any_message(value, headers) if isinstance(r, Record)]
        if any(r.src.addr != key for r in records):
            raise MessageError(f"records of a source other than the key {key!r}")
        return [
            (latest, a, sum(p["n"] for p in a["paths"].values())) for latest, a in windows.aggregates(records, width_ms)
        ]

    def merge(self, a: windows.Aggregate, b: windows.Aggregate) -> windows.Aggregate:
        return windows.merge(a, b)

    def read(self, aggregate: windows.Aggregate) -> windows.Window:
        return windows.read(aggregate)


class NativeAggregator:
    """The per-probe work in Rust; a message that is not a plain probe batch goes the Python way (same errors)."""

    name = "native"

    def __init__(self) -> None:
        self._python = PythonAggregator()

    def split(self, value: bytes | None, headers: Headers | None, key: str | None, width_ms: int) -> list[Item]:
        fields = header_dict(headers)
        if fields.get(KIND_HEADER) is not None or fields.get(SCHEMA_HEADER) != _SCHEMA_VALUE or key is None:
            return self._python.split(value, fields, key, width_ms)
        fmt = header_text(fields.get(FORMAT_HEADER))
        if fmt not in FORMATS:
            raise MessageError(f"unknown ptc-format {fmt!r}")
        try:
            items = _native.analyze_split(value or b"", fmt, key, width_ms)
        except ValueError as exc:
            raise MessageError(str(exc)) from None
        count = fields.get(COUNT_HEADER)
        if count is not None and header_text(count) != str(probes := sum(item[2] for item in items)):
            raise MessageError(f"ptc-count says {header_text(count)} records, the value holds {probes}")
        return items

    def merge(self, a: bytes, b: bytes) -> bytes:
        return _native.analyze_merge(a, b)

    def read(self, aggregate: bytes) -> windows.Window:
        paths, sessions = _native.analyze_read(aggregate, list(sketch.QUANTILES))
        return windows.Window(
            {pid: (n, _delays(e2e), tuple(map(_delays, hops))) for pid, n, e2e, hops in paths},
            {
                str(sid): {"ref": ref, "lo": lo, "hi": hi, "n": n, "paths": counts}
                for sid, ref, lo, hi, n, counts in sessions
            },
        )


def _delays(read: tuple[int, int | None, int | None, int, tuple[int, ...]]) -> DelayHistogram:
    n, low, high, total, quantiles = read
    return DelayHistogram(n, low, high, total, (n,), quantiles)


def make_aggregator() -> Aggregator:
    """The engine in use (PTC_ENGINE, else native where it is built); EngineError names a wrong PTC_ENGINE."""
    if engine_name() == "native":
        if _native is None:
            raise EngineError("the native engine is not built here (no Rust toolchain at install): PTC_ENGINE=python")
        return NativeAggregator()
    return PythonAggregator()
