"""The decode stage: a batch of frames in, a batch of records and its counters out.

Replay and collect both turn frames into records here and nowhere else, so
this is the one seam where the compiled engine takes the pure one's place.
Two engines fill it: `NativeEngine` (Rust, native/) where it is built, and
`PythonEngine` (codec/decode.py), the reference and the fallback.
`PTC_ENGINE=native|python` chooses; `make_engine` gives the one in use.

A capture (file or stream) is decoded as its bytes come, through the engine's
`open_capture()`: the native engine reads pcap and pcapng records in place
(no Python object per frame); the pure engine, and the native one when each
record's frame is wanted, read frames with capture/pcap.py's PcapReader and
decode them a batch at a time.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv6Network
from itertools import groupby
from operator import itemgetter
from typing import Protocol, runtime_checkable

from ..capture import Captured
from ..capture.pcap import Bytes, Frame, PcapReader
from ..codec.decode import DecodeError, Decoder
from ..codec.record import EncodedRecords, Record, msgpack_decoder
from ..kafka.message import FORMATS, Group, SourceGroups, array_header

try:
    from .. import _native
except ImportError:  # installed without a Rust toolchain: the pure engine alone
    _native = None  # type: ignore[assignment]

NATIVE = _native is not None  # the compiled engine is built here
FRAME_BATCH = 1024  # frames per decode_batch call when a capture is read frame by frame
NATIVE_BATCH = 4096  # frames per decode_capture call, read in place


@dataclass(slots=True)
class Decoded:
    """What a batch of frames gave: every frame is in exactly one of records, not_pt or malformed."""

    records: Sequence[Record] = field(default_factory=list)
    frames: list[Frame] | None = None  # records[i]'s frame, when asked for (the flow rules' raw function)
    not_pt: int = 0
    malformed: Counter[str] = field(default_factory=Counter)  # by DecodeError.key

    @property
    def seen(self) -> int:
        """The frames this batch was made of."""
        return len(self.records) + self.not_pt + sum(self.malformed.values())


class CaptureDecoder(Protocol):
    """One capture's frames (a pcap or pcapng file or stream) decoded as its bytes are fed in, in order."""

    def decode(self, buf: Bytes, start: int, last: bool) -> tuple[list[Decoded], int, str | None]:
        """Decode the frames of buf[start:], the capture from where the last call stopped (`last`: nothing comes
        after). Returns the batches (one per run of a link type), the bytes used (up to the last whole record
        read), and an error without the file name (pcap.CaptureError's), after which nothing more is read."""
        ...


class Engine(Protocol):
    """Turns frames into records; `name` says which engine it is (for --version, the stats and /metrics)."""

    name: str

    def decode_batch(self, frames: Sequence[Captured], linktype: int, keep_frames: bool = False) -> Decoded:
        """Decode `frames`, all of one link type; with `keep_frames`, each record's frame comes along."""
        ...

    def open_capture(self, keep_frames: bool = False) -> CaptureDecoder:
        """A decoder for one capture's bytes; with `keep_frames`, each record's frame comes along."""
        ...


class FrameCapture:
    """A capture read frame by frame (capture/pcap.py's PcapReader) and decoded FRAME_BATCH frames at a time
    through the engine's decode_batch: the pure engine's way, and the native one's when frames are wanted."""

    def __init__(self, engine: Engine, keep_frames: bool) -> None:
        self._engine, self._keep_frames, self._reader = engine, keep_frames, PcapReader()

    def decode(self, buf: Bytes, start: int, last: bool) -> tuple[list[Decoded], int, str | None]:
        frames, used, error = self._reader.read(buf, start, last, FRAME_BATCH)
        decode = self._engine.decode_batch
        runs = groupby(frames, key=itemgetter(0))
        return [decode([(ns, data) for _, ns, data in run], lt, self._keep_frames) for lt, run in runs], used, error


class SourceShifting(Protocol):
    """An engine whose shift can be set per source address while it runs (`--tts-shift auto`)."""

    def set_source_shifts(self, shifts: Mapping[str, int | None]) -> None:
        """Each source address decodes with its shift from now on (None: no hop times), before any prefix."""
        ...


@runtime_checkable
class BlockEngine(Protocol):
    """An engine that decodes a capture ring's block in place (the native one): no object per frame."""

    def decode_block(self, block: memoryview, at: int, count: int, linktype: int) -> tuple[Decoded, int]:
        """Decode `count` frames of a TPACKET_V3 block from the frame header at `at`; (decoded, next header's offset).
        Every frame is in one counter: the records, not_pt or malformed (`ring: frame outside its block` too)."""
        ...


class PythonEngine:
    """The pure-Python engine: the reference decoder, frame by frame."""

    name = "python"

    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder

    def decode_batch(self, frames: Sequence[Captured], linktype: int, keep_frames: bool = False) -> Decoded:
        decode = self.decoder.decode
        records: list[Record] = []
        out = Decoded(records, frames=[] if keep_frames else None)
        kept, malformed = out.frames, out.malformed
        for capture_ns, data in frames:
            try:
                record = decode(data, capture_ns, linktype)
            except DecodeError as exc:
                malformed[exc.key] += 1
                continue
            if record is None:
                out.not_pt += 1
                continue
            records.append(record)
            if kept is not None:
                kept.append((linktype, capture_ns, data))
        return out

    def set_source_shifts(self, shifts: Mapping[str, int | None]) -> None:
        """A decoder afresh with the sources as /128 prefixes (its layouts hold their source's shift)."""
        old = self.decoder
        by_source = {**dict(old.prefix_shifts), **{IPv6Network(addr): shift for addr, shift in shifts.items()}}
        self.decoder = Decoder(old.tts_shift, by_source)

    def open_capture(self, keep_frames: bool = False) -> CaptureDecoder:
        return FrameCapture(self, keep_frames)


class NativeRecords(EncodedRecords):
    """The native engine's JSON lines (EncodedRecords), and the same records per source node for Kafka (by_source).
    With `slot`, the `count` records of one output of the flow rules matched in the core (core_rules.py)."""

    __slots__ = ("_batch", "_lines", "_slot")

    def __init__(self, batch: _native.Batch, slot: int | None = None, count: int | None = None) -> None:
        self._batch, self._slot = batch, slot  # no JSON lines copied out of the batch until asked for
        self._count = batch.decoded if count is None else count
        self._records = None
        self._lines: bytes | None = None

    @property
    def json_lines(self) -> bytes:  # type: ignore[override]
        if self._slot is None:
            return memoryview(self._batch)  # type: ignore[return-value]  # a view of the batch's bytes, no copy
        if self._lines is None:
            self._lines = self._batch.slot_data(self._slot)[0]
        return self._lines

    def by_source(self) -> SourceGroups:
        return source_groups(self._batch, self._slot)

    @property
    def batch(self) -> _native.Batch:  # the flow rules matched in the core read its routes (core_rules.py)
        return self._batch


class NativeMsgpackRecords(Sequence[Record]):
    """The native engine's records encoded as msgpack (for `--format msgpack` into Kafka): per source node for the
    Kafka sink (by_source), read back as Record objects only when one is asked for (flow rules). With `slot`, the
    `count` records of one output of the flow rules matched in the core (core_rules.py)."""

    __slots__ = ("_batch", "_count", "_data", "_records", "_slot")

    def __init__(self, batch: _native.Batch, slot: int | None = None, count: int | None = None) -> None:
        self._batch, self._slot = batch, slot
        self._count = batch.decoded if count is None else count
        self._data: bytes | None = None
        self._records: list[Record] | None = None

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index):  # type: ignore[no-untyped-def]  # int -> Record, slice -> list[Record]
        if self._records is None:
            self._records = msgpack_decoder.decode(array_header(self._count) + self.data)
        return self._records[index]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    @property
    def data(self) -> bytes:
        """The records in input order, msgpack elements back to back."""
        if self._slot is None:
            return self._batch.data
        if self._data is None:
            self._data = self._batch.slot_data(self._slot)[0]
        return self._data

    def by_source(self) -> SourceGroups:
        return source_groups(self._batch, self._slot)

    @property
    def batch(self) -> _native.Batch:
        return self._batch


def source_groups(batch: _native.Batch, slot: int | None = None) -> SourceGroups:
    """A native batch's records per source node, as the Kafka messages are cut (no Python object per record); with
    `slot`, those of one output of the flow rules."""
    groups = batch.groups(True, slot)
    return SourceGroups(
        batch.format, [Group(source, data, memoryview(ends).cast("Q")) for source, data, _, ends in groups]
    )


class NativeEngine:
    """The compiled engine (native/, `pt_collector._native`): a batch decoded and encoded in Rust at once.

    Its JSON lines (or msgpack, `fmt`) are byte for byte what the pure engine's records encode to
    (tests/test_native.py). They are handed on as they are: a JSON lines file takes them whole, a Kafka sink
    takes them per source node and cuts its messages from them (kafka.message.SourceGroups), and whatever asks
    for Record objects (flow rules) gets them read back with msgspec.
    """

    name = "native"

    def __init__(
        self,
        tts_shift: int | None = None,
        shift_by_source: Mapping[IPv6Network, int] | None = None,
        fmt: str = "json",
    ) -> None:
        if not NATIVE:
            raise EngineError("the native engine is not built here (no Rust toolchain at install): PTC_ENGINE=python")
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
        self._decoder = _native.Decoder(tts_shift, shift_by_source or None, fmt)
        self.records = NativeRecords if fmt == "json" else NativeMsgpackRecords  # a Batch of this engine as records

    def decode_batch(self, frames: Sequence[Captured], linktype: int, keep_frames: bool = False) -> Decoded:
        batch = self._decoder.decode_frames(frames, linktype)
        out = self._decoded(batch)
        if keep_frames:
            out.frames = [(linktype, *frames[i]) for i in batch.indices()]
        return out

    def match_rules(self, rules: _native.Rules | None) -> None:
        """Match flow rules in the core from now on (pipeline/core_rules.py), or no more (None)."""
        self._decoder.set_rules(rules)

    def set_source_shifts(self, shifts: Mapping[str, int | None]) -> None:
        for addr, shift in shifts.items():
            self._decoder.set_source_shift(addr, shift)

    def decode_block(self, block: memoryview, at: int, count: int, linktype: int) -> tuple[Decoded, int]:
        batch, at = self._decoder.decode_block(block, at, count, linktype)
        return self._decoded(batch), at

    def decode_capture(
        self, reader: _native.CaptureReader, chunk: memoryview, last: bool
    ) -> tuple[Decoded, int, str | None]:
        """Up to NATIVE_BATCH frames of a pcap or pcapng chunk read in place by `reader`: the records, the bytes
        used, and the capture's error if it ends there."""
        batch, used, error = self._decoder.decode_capture(reader, chunk, last, NATIVE_BATCH)
        return self._decoded(batch), used, error

    def _decoded(self, batch: _native.Batch) -> Decoded:
        out = Decoded(not_pt=batch.not_pt, malformed=Counter(batch.malformed))
        if batch.decoded:
            out.records = self.records(batch)
        return out

    def open_capture(self, keep_frames: bool = False) -> CaptureDecoder:
        if keep_frames:  # each record's frame as bytes: read frame by frame
            return FrameCapture(self, keep_frames)
        return NativeCapture(self)


class NativeCapture:
    """A capture read in place by the native engine (`decode_capture`: no Python object per frame, the GIL
    released), NATIVE_BATCH frames at a time."""

    def __init__(self, engine: NativeEngine) -> None:
        self._engine, self._reader = engine, _native.CaptureReader()

    def decode(self, buf: Bytes, start: int, last: bool) -> tuple[list[Decoded], int, str | None]:
        view = memoryview(buf)[start:]
        try:
            decoded, used, error = self._engine.decode_capture(self._reader, view, last)
        finally:
            view.release()  # a mapped file can be closed once this call is done
        return [decoded], used, error


class EngineError(ValueError):
    """An engine that cannot be had: one line for the operator."""


ENGINES = ("native", "python")


def engine_name() -> str:
    """The engine in use: PTC_ENGINE (native or python), else native where it is built."""
    wanted = os.environ.get("PTC_ENGINE", "").strip().lower()
    if wanted and wanted not in ENGINES:
        raise EngineError(f"PTC_ENGINE={wanted}: not an engine (one of {', '.join(ENGINES)})")
    return wanted or ("native" if NATIVE else "python")


def engine_label() -> str:
    """The engine in use, for --version: `native engine` or `python engine` (or what is wrong with PTC_ENGINE)."""
    try:
        return f"{engine_name()} engine"
    except EngineError as exc:
        return str(exc)


def make_engine(
    tts_shift: int | None = None, shift_by_source: Mapping[IPv6Network, int] | None = None, fmt: str = "json"
) -> Engine:
    """The engine in use (engine_name), decoding with this TTS shift and these per-source shifts.

    `fmt`: how the native engine encodes its records (the Kafka --format; JSON lines for a file).
    """
    if engine_name() == "native":
        return NativeEngine(tts_shift, shift_by_source, fmt)
    return PythonEngine(Decoder(tts_shift, shift_by_source))
