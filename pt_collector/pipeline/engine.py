"""The decode stage: a batch of frames in, a batch of records and its counters out.

Replay and collect both turn frames into records here and nowhere else, so
this is the one seam where the compiled engine takes the pure one's place.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..capture.pcap import Frame
from ..codec.decode import DecodeError, Decoder
from ..codec.record import Record

Captured = tuple[int, bytes]  # capture time (ns since the epoch), frame bytes: what a receiver drains


@dataclass(slots=True)
class Decoded:
    """What a batch of frames gave: every frame is in exactly one of records, not_pt or malformed."""

    records: list[Record] = field(default_factory=list)
    frames: list[Frame] | None = None  # records[i]'s frame, when asked for (the flow rules' raw function)
    not_pt: int = 0
    malformed: Counter[str] = field(default_factory=Counter)  # by DecodeError.key


class Engine(Protocol):
    """Turns frames into records; `name` says which engine it is (for --version, the stats and /metrics)."""

    name: str

    def decode_batch(self, frames: Sequence[Captured], linktype: int, keep_frames: bool = False) -> Decoded:
        """Decode `frames`, all of one link type; with `keep_frames`, each record's frame comes along."""
        ...


class PythonEngine:
    """The pure-Python engine: the reference decoder, frame by frame."""

    name = "python"

    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder

    def decode_batch(self, frames: Sequence[Captured], linktype: int, keep_frames: bool = False) -> Decoded:
        decode = self.decoder.decode
        out = Decoded(frames=[] if keep_frames else None)
        records, kept, malformed = out.records, out.frames, out.malformed
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
