"""Kafka messages of probe records: records in, value bytes and headers out, and back.

Pure: no asyncio, no network. The contract is record-schema.md "In Kafka":
one message holds a batch of records of one source node; its key is that
node's address; `--format json` is JSON lines, `--format msgpack` one
msgpack array; headers `ptc-schema`, `ptc-format`, `ptc-count`.

A message is made of Record objects (build_messages), or cut from records
that arrive already encoded per source node (SourceGroups, the native
engine's): the same bytes, with no Python object per record.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, overload, runtime_checkable

import msgspec

from ..codec.record import SCHEMA_VERSION, Record, json_decoder, json_encoder, msgpack_decoder, msgpack_encoder
from .options import FORMATS

SCHEMA_HEADER = "ptc-schema"
FORMAT_HEADER = "ptc-format"
COUNT_HEADER = "ptc-count"
SPLIT_MARGIN = 1.05  # records differ in size: cut a little finer than the average asks

_SCHEMA_VALUE = str(SCHEMA_VERSION).encode()

Headers = Iterable[tuple[str, bytes | None]] | Mapping[str, bytes | None]
Decoders = Mapping[str, Callable[[bytes], list[Any]]]  # by ptc-format

_RECORD_DECODERS: Decoders = {"json": json_decoder.decode_lines, "msgpack": msgpack_decoder.decode}


class MessageError(ValueError):
    """A Kafka message that is not a batch of ptc records (of a schema this ptc reads)."""


class Message:
    """One Kafka message: the batch's source node as key, encoded records as value.

    The value may come in parts laid end to end (cuts of the native engine's bytes, `parts`): they are joined
    only when `value` is asked for; the native engine builds a record batch from the parts (kafka/recordbatch.py).
    """

    __slots__ = ("_value", "count", "headers", "key", "nbytes", "parts")

    def __init__(
        self, key: bytes, value: bytes | Sequence[bytes | memoryview], headers: list[tuple[str, bytes]], count: int
    ):
        self.key, self.headers, self.count = key, headers, count
        self.parts: tuple[bytes | memoryview, ...] = (value,) if isinstance(value, bytes) else tuple(value)
        self._value = value if isinstance(value, bytes) else None
        self.nbytes = sum(map(len, self.parts))  # len(value), without joining it (the parts are bytes, or views of)

    @property
    def value(self) -> bytes:
        if self._value is None:
            self._value = b"".join(self.parts)
        return self._value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (self.key, self.value, self.headers, self.count) == (other.key, other.value, other.headers, other.count)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Message(key={self.key!r}, {self.nbytes} bytes, headers={self.headers!r}, count={self.count})"


class MessageBatcher(Protocol):
    """What cuts items (records, histograms, frames) into messages: pipeline.batch.Batcher, or a kind's wrapper."""

    @property
    def held(self) -> int: ...

    def add(self, items: Sequence[Any], now: float) -> list[Message]: ...

    def due(self, now: float) -> list[Message]: ...

    def next_due(self) -> float | None: ...

    def drain(self) -> list[Message]: ...


def encode_value(records: Sequence[Record], fmt: str) -> bytes:
    """The message value: JSON lines (each record ends in a newline) or one msgpack array."""
    if fmt == "json":
        return json_encoder.encode_lines(records)
    if fmt == "msgpack":
        return msgpack_encoder.encode(records)
    raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")


def message_headers(fmt: str, count: int) -> list[tuple[str, bytes]]:
    return [(SCHEMA_HEADER, _SCHEMA_VALUE), (FORMAT_HEADER, fmt.encode()), (COUNT_HEADER, str(count).encode())]


def build_message(records: Sequence[Record], fmt: str) -> Message:
    """One message of `records`, which all come from one source node."""
    return Message(
        records[0].src.addr.encode(), encode_value(records, fmt), message_headers(fmt, len(records)), len(records)
    )


def build_messages(records: Sequence[Record], fmt: str, max_bytes: int) -> list[Message]:
    """Messages of `records` in order, each value at most `max_bytes` (a single record always goes).

    A batch that encodes too large is cut into nearly equal parts sized from
    its encoding, and any part still too large is cut again, so the limit
    holds exactly whatever the records' sizes.
    """
    message = build_message(records, fmt)
    if len(message.value) <= max_bytes or len(records) == 1:
        return [message]
    parts = min(len(records), max(2, math.ceil(len(message.value) * SPLIT_MARGIN / max_bytes)))
    bounds = [len(records) * i // parts for i in range(parts + 1)]
    return [m for lo, hi in itertools.pairwise(bounds) for m in build_messages(records[lo:hi], fmt, max_bytes)]


# ---------------------------------------------------------------- records already encoded, per source node


class Group:
    """Records lo..hi of one source node's encoded bytes: record i is data[ends[i-1]:ends[i]] (from 0 for the first).

    JSON lines (each record ends in a newline) or msgpack elements back to back, as record.json_encoder and
    record.msgpack_encoder write them; `data` and `ends` are shared by the cuts of one group, never copied.
    """

    __slots__ = ("data", "ends", "hi", "lo", "source")

    def __init__(self, source: str, data: bytes, ends: Sequence[int], lo: int = 0, hi: int | None = None) -> None:
        self.source = source
        self.data = data
        self.ends = ends
        self.lo = lo
        self.hi = len(ends) if hi is None else hi

    def __len__(self) -> int:
        return self.hi - self.lo

    @property
    def start(self) -> int:
        return self.ends[self.lo - 1] if self.lo else 0

    @property
    def nbytes(self) -> int:
        return self.ends[self.hi - 1] - self.start if self.hi > self.lo else 0

    def cut(self, lo: int, hi: int) -> Group:
        """Its records lo..hi (counted from this cut's first)."""
        return Group(self.source, self.data, self.ends, self.lo + lo, self.lo + hi)

    def view(self) -> memoryview:
        return memoryview(self.data)[self.start : self.start + self.nbytes]

    def flat(self, fmt: str) -> list[Record]:
        if fmt == "json":
            return json_decoder.decode_lines(self.view())
        return msgpack_decoder.decode(array_header(len(self)) + self.view())


def encode_group(source: str, records: Sequence[Any], fmt: str) -> Group:
    """Records (of one source node) encoded one by one into a Group: the bytes encode_value writes for them."""
    if fmt == "json":
        pieces = [json_encoder.encode(r) for r in records]
        return Group(source, b"\n".join(pieces) + b"\n", list(itertools.accumulate(len(p) + 1 for p in pieces)))
    pieces = [msgpack_encoder.encode(r) for r in records]
    return Group(source, b"".join(pieces), list(itertools.accumulate(map(len, pieces))))


def array_header(n: int) -> bytes:
    """The msgpack array header of n elements (as msgspec writes it)."""
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


class SourceGroups(Sequence[Record]):
    """Records already encoded in one format, per source node (first seen first, each source's in arrival order).

    What the Kafka path takes from the native engine: pipeline.batch.Batcher cuts its messages from these bytes.
    As a sequence it is the records in that order (read back with msgspec only when one is asked for); a slice is
    the SourceGroups of those records, still encoded.
    """

    __slots__ = ("_count", "_records", "fmt", "groups")

    def __init__(self, fmt: str, groups: list[Group]) -> None:
        self.fmt = fmt
        self.groups = groups
        self._count = sum(map(len, groups))
        self._records: list[Record] | None = None

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> Record: ...

    @overload
    def __getitem__(self, index: slice) -> SourceGroups: ...

    def __getitem__(self, index: int | slice) -> Record | SourceGroups:
        if isinstance(index, slice):
            start, stop, step = index.indices(self._count)
            if step != 1:
                raise ValueError("a SourceGroups slice takes every record")
            return self._cut(start, max(start, stop))
        if self._records is None:
            self._records = [r for group in self.groups for r in group.flat(self.fmt)]
        return self._records[index]

    def _cut(self, start: int, stop: int) -> SourceGroups:
        groups, at = [], 0
        for group in self.groups:
            lo, hi = max(start - at, 0), min(stop - at, len(group))
            if lo < hi:
                groups.append(group.cut(lo, hi))
            at += len(group)
        return SourceGroups(self.fmt, groups)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]


@runtime_checkable
class BySource(Protocol):
    """Records that can come per source node, already encoded (the native engine's): what a Kafka sink wants."""

    def by_source(self) -> SourceGroups: ...


def group_messages(parts: Sequence[Group], fmt: str, max_bytes: int) -> list[Message]:
    """Messages of one source node's encoded records (`parts`, in order): what build_messages makes of them.

    The same cut, to the byte: one message when the value fits `max_bytes` (or holds one record), else parts
    split as build_messages splits them, sized from the record ends.
    """
    count = sum(map(len, parts))
    header = array_header(count) if fmt == "msgpack" else b""
    if count == 1 or len(header) + sum(p.nbytes for p in parts) <= max_bytes:
        views = [header, *(p.view() for p in parts)] if header else [p.view() for p in parts]
        return [Message(parts[0].source.encode(), views, message_headers(fmt, count), count)]
    if len(parts) == 1:
        whole = parts[0]
    else:  # one group of the parts, so that any range of records has its bytes
        whole = Group(parts[0].source, b"".join(p.view() for p in parts), list(_ends(parts)))
    parts_n = min(count, max(2, math.ceil((len(header) + whole.nbytes) * SPLIT_MARGIN / max_bytes)))
    bounds = [count * i // parts_n for i in range(parts_n + 1)]
    return [m for lo, hi in itertools.pairwise(bounds) for m in group_messages([whole.cut(lo, hi)], fmt, max_bytes)]


def _ends(parts: Sequence[Group]) -> Iterable[int]:
    base = 0
    for p in parts:
        start = p.start
        yield from (base + end - start for end in p.ends[p.lo : p.hi])
        base += p.nbytes


def decode_message(value: bytes | None, headers: Headers | None) -> list[Record]:
    """The records of one ptc Kafka message, whatever its format; MessageError if it is none."""
    fields = header_dict(headers)
    schema = fields.get(SCHEMA_HEADER)
    if schema != _SCHEMA_VALUE:
        found = "no ptc-schema header" if schema is None else f"schema {header_text(schema)}"
        raise MessageError(f"not a ptc schema {SCHEMA_VERSION} message ({found})")
    return decode_batch(value, fields, _RECORD_DECODERS)


def decode_batch(value: bytes | None, fields: Mapping[str, bytes | None], decoders: Decoders, what: str = "") -> list:
    """The items of a batch message whose schema was checked: decoded by its ptc-format, counted as ptc-count says."""
    fmt = header_text(fields.get(FORMAT_HEADER))
    decode = decoders.get(fmt)
    if decode is None:
        raise MessageError(f"unknown ptc-format {fmt!r}")
    try:
        items = decode(value or b"")
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise MessageError(f"bad {fmt} {what}value: {exc}") from None
    count = fields.get(COUNT_HEADER)
    if count is not None and header_text(count) != str(len(items)):
        raise MessageError(f"ptc-count says {header_text(count)} records, the value holds {len(items)}")
    return items


def header_dict(headers: Headers | None) -> dict[str, bytes | None]:
    if headers is None:
        return {}
    items = headers.items() if isinstance(headers, Mapping) else headers
    return {key: bytes(value) if value is not None else None for key, value in items}


def header_text(value: bytes | None) -> str:
    return "" if value is None else value.decode("utf-8", "replace")
