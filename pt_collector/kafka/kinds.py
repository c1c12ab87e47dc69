"""Kafka messages of the other output kinds, path histograms and raw frames, and any ptc message read back (pure).

Histogram messages are probe batches' messages (message.py: key the source
node's address, JSON lines or a msgpack array, headers ptc-schema,
ptc-format, ptc-count) holding PathHistogram records, with one more
header: `ptc-kind: histogram`. Raw messages follow Apache Metron's
Fastcapa: one frame per message, the value its bytes, the key its capture
time in microseconds since the epoch as 8 bytes big-endian; headers
`ptc-kind: raw` and `ptc-linktype` (the capture's link type, 1 for
Ethernet). docs/rules.md is the contract.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..capture.pcap import Frame
from ..codec.record import (
    HISTOGRAM_SCHEMA_VERSION,
    PathHistogram,
    Record,
    histogram_json_decoder,
    histogram_msgpack_decoder,
)
from .message import (
    SCHEMA_HEADER,
    Decoders,
    Headers,
    Message,
    MessageBatcher,
    MessageError,
    decode_batch,
    decode_message,
    header_dict,
    header_text,
)

KIND_HEADER = "ptc-kind"
LINKTYPE_HEADER = "ptc-linktype"
HISTOGRAM_KIND = "histogram"
RAW_KIND = "raw"
_HISTOGRAM_HEADER = (KIND_HEADER, HISTOGRAM_KIND.encode())
_HISTOGRAM_SCHEMA = str(HISTOGRAM_SCHEMA_VERSION).encode()
_HISTOGRAM_DECODERS: Decoders = {
    "json": histogram_json_decoder.decode_lines,
    "msgpack": histogram_msgpack_decoder.decode,
}


class HistogramBatcher:
    """Path histograms into messages as a records' batcher makes them (per source node, its limits), with the kind
    header."""

    def __init__(self, batcher: MessageBatcher) -> None:
        self._batcher = batcher

    @property
    def held(self) -> int:
        return self._batcher.held

    def add(self, histograms: Sequence[PathHistogram], now: float) -> list[Message]:
        return _marked(self._batcher.add(histograms, now))  # src.addr is all a batcher reads

    def due(self, now: float) -> list[Message]:
        return _marked(self._batcher.due(now))

    def next_due(self) -> float | None:
        return self._batcher.next_due()

    def drain(self) -> list[Message]:
        return _marked(self._batcher.drain())


def _marked(messages: list[Message]) -> list[Message]:
    """With the kind header, and ptc-schema naming the histogram schema's version."""
    return [Message(m.key, m.value, [*map(_schema, m.headers), _HISTOGRAM_HEADER], m.count) for m in messages]


def _schema(header: tuple[str, bytes]) -> tuple[str, bytes]:
    return (SCHEMA_HEADER, _HISTOGRAM_SCHEMA) if header[0] == SCHEMA_HEADER else header


class RawBatcher:
    """Every frame its own message, at once: nothing is ever held."""

    held = 0

    def add(self, frames: Iterable[Frame], now: float) -> list[Message]:
        return [raw_message(frame) for frame in frames]

    def due(self, now: float) -> list[Message]:
        return []

    def next_due(self) -> float | None:
        return None

    def drain(self) -> list[Message]:
        return []


def raw_message(frame: Frame) -> Message:
    """Fastcapa's message of a frame: key = capture time in us since the epoch, 8 bytes big-endian."""
    linktype, capture_ns, data = frame
    headers = [(KIND_HEADER, RAW_KIND.encode()), (LINKTYPE_HEADER, str(linktype).encode())]
    return Message(raw_key(capture_ns), bytes(data), headers, 1)


def raw_key(capture_ns: int) -> bytes:
    return (capture_ns // 1000).to_bytes(8, "big")


def decode_any_message(value: bytes | None, headers: Headers | None) -> Sequence[Record | PathHistogram]:
    """The records of a probe batch or of a histogram batch; MessageError for anything else (raw frames too)."""
    fields = header_dict(headers)
    kind = fields.get(KIND_HEADER)
    if kind is None:
        return decode_message(value, fields)
    if header_text(kind) != HISTOGRAM_KIND:
        raise MessageError(f"a ptc-kind {header_text(kind)} message, not records")
    if fields.get(SCHEMA_HEADER) != _HISTOGRAM_SCHEMA:
        raise MessageError(f"not a ptc histogram schema {HISTOGRAM_SCHEMA_VERSION} message")
    return decode_batch(value, fields, _HISTOGRAM_DECODERS, "histogram ")
