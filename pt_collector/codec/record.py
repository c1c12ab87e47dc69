"""The probe record, ptc's output contract (docs/record-schema.md).

Field names and order are the schema's; new fields may only be appended,
with defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, overload

import msgspec

SCHEMA_VERSION = 1


class Node(msgspec.Struct, frozen=True, gc=False):
    """A PT source or sink node: address, interface id and load, T64 in ns."""

    addr: str
    if_id: int
    if_load: int
    time_ns: int


class Hop(msgspec.Struct, frozen=True, gc=False):
    """One midpoint, from its MCD; `time_ns` is the reconstructed time or None."""

    if_id: int
    if_load: int
    tts: int
    time_ns: int | None


class Record(msgspec.Struct, frozen=True, gc=False):
    """One decoded probe, schema version 1."""

    v: int
    capture_ns: int
    session_id: int
    sequence: int
    src: Node
    sink: Node | None
    dst: str
    segments: tuple[str, ...]
    hops: tuple[Hop, ...]
    e2e_ns: int | None
    traffic_class: int
    flow_label: int
    hop_limit: int


json_encoder = msgspec.json.Encoder()
json_decoder = msgspec.json.Decoder(Record)
msgpack_encoder = msgspec.msgpack.Encoder()
msgpack_decoder = msgspec.msgpack.Decoder(list[Record])


class EncodedRecords(Sequence[Record]):
    """Records that arrive encoded as JSON lines (the native engine's batches): written out as they are, and made
    Record objects only when one is asked for."""

    __slots__ = ("_count", "_records", "json_lines")

    def __init__(self, json_lines: bytes, count: int) -> None:
        self.json_lines = json_lines
        self._count = count
        self._records: list[Record] | None = None

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> Record: ...

    @overload
    def __getitem__(self, index: slice) -> list[Record]: ...

    def __getitem__(self, index: int | slice) -> Record | list[Record]:
        if self._records is None:
            self._records = json_decoder.decode_lines(self.json_lines)
        return self._records[index]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]


def to_json_lines(records: Sequence[Any]) -> bytes:
    """Records (or histograms) as JSON lines, each ending in a newline."""
    if isinstance(records, EncodedRecords):
        return records.json_lines
    return json_encoder.encode_lines(records)


def from_json_lines(data: bytes) -> list[Record]:
    return json_decoder.decode_lines(data)


# ---------------------------------------------------------------- the path histogram record (docs/rules.md)

HISTOGRAM_SCHEMA_VERSION = 1


class PathNode(msgspec.Struct, frozen=True, gc=False):
    """A path's source or sink node in a histogram record: its address (as `src.addr` in a probe record)."""

    addr: str


class DelayHistogram(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """Delays in ns: how many, their extremes and sum, and how many per bucket.

    Bucket i holds the delays d with bounds[i-1] < d <= bounds[i]; the last one those above every bound.
    """

    count: int
    min_ns: int | None
    max_ns: int | None
    sum_ns: int
    buckets: tuple[int, ...]
    quantiles_ns: tuple[int, ...] = ()  # appended: the delays at the record's quantiles_permille (ptc analyze)


class PathHistogram(msgspec.Struct, frozen=True, gc=False, tag_field="kind", tag="histogram", omit_defaults=True):
    """One path's probes over one interval, from a `histogram` rule, schema version 1 (`kind` is "histogram").

    Field order is the schema's; new fields may only be appended, with defaults.
    """

    v: int
    rule: str
    start_ns: int
    interval_ns: int
    src: PathNode
    sink: PathNode | None
    hop_if_ids: tuple[int, ...]
    count: int
    loss: int
    bounds_ns: tuple[int, ...]
    e2e: DelayHistogram
    hop_bounds_ns: tuple[int, ...]
    hop_delays: tuple[DelayHistogram, ...]
    quantiles_permille: tuple[int, ...] = ()  # appended: the quantiles in each quantiles_ns, in 1/1000 (ptc analyze)
    relative_accuracy_ppm: int = 0  # appended: the quantiles' relative error bound, in 1/1000000 (0: none)


histogram_json_decoder = msgspec.json.Decoder(PathHistogram)
histogram_msgpack_decoder = msgspec.msgpack.Decoder(list[PathHistogram])
