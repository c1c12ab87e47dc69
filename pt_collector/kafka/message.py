"""Kafka messages of probe records: records in, value bytes and headers out, and back.

Pure: no asyncio, no network. The contract is record-schema.md "In Kafka":
one message holds a batch of records of one source node; its key is that
node's address; `--format json` is JSON lines, `--format msgpack` one
msgpack array; headers `ptc-schema`, `ptc-format`, `ptc-count`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from ..codec.record import SCHEMA_VERSION, Record, json_decoder, json_encoder, msgpack_decoder, msgpack_encoder

SCHEMA_HEADER = "ptc-schema"
FORMAT_HEADER = "ptc-format"
COUNT_HEADER = "ptc-count"
FORMATS = ("json", "msgpack")
SPLIT_MARGIN = 1.05  # records differ in size: cut a little finer than the average asks

_SCHEMA_VALUE = str(SCHEMA_VERSION).encode()

Headers = Iterable[tuple[str, bytes | None]] | Mapping[str, bytes | None]
Decoders = Mapping[str, Callable[[bytes], list[Any]]]  # by ptc-format

_RECORD_DECODERS: Decoders = {"json": json_decoder.decode_lines, "msgpack": msgpack_decoder.decode}


class MessageError(ValueError):
    """A Kafka message that is not a batch of ptc records (of a schema this ptc reads)."""


@dataclass(frozen=True, slots=True)
class Message:
    """One Kafka message: the batch's source node as key, encoded records as value."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    count: int


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
