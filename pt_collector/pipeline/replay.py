"""Replay: capture files -> decode -> batches -> a sink.

Every frame ends in exactly one counter: decoded, not PT, or malformed
(by reason); a file that cannot be read to its end is named in
`capture_errors`, with the frames before the damage still decoded.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..capture.pcap import CaptureError, Frame, read_capture
from ..codec.decode import DecodeError, Decoder
from ..codec.record import Record
from .sinks import Sink

BATCH = 1024


class FrameSink(Sink, Protocol):
    """A sink that may want each record's frame too (the `raw` function of flow rules): when `wants_frames`,
    replay calls `write_frames(records, frames)`, frames[i] being (linktype, capture_ns, bytes) of records[i]."""

    wants_frames: bool

    async def write_frames(self, records: list[Record], frames: list[Frame]) -> None: ...


@dataclass
class ReplayStats:
    files: int = 0
    frames: int = 0
    probes: int = 0
    not_pt: int = 0
    malformed: Counter[str] = field(default_factory=Counter)
    capture_errors: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    bytes_total: int = 0  # of the capture files, for progress
    bytes_read: int = 0

    @property
    def malformed_total(self) -> int:
        return sum(self.malformed.values())

    @property
    def probes_per_s(self) -> float:
        return self.probes / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> str:
        """A short multi-line summary for stderr."""
        width = 16
        lines = [
            f"{'files':<{width}}{self.files:,}"
            + (f" ({len(self.capture_errors)} unreadable)" if self.capture_errors else ""),
            f"{'frames read':<{width}}{self.frames:,}",
            f"{'probes decoded':<{width}}{self.probes:,}",
            f"{'not PT':<{width}}{self.not_pt:,}",
            f"{'malformed':<{width}}{self.malformed_total:,}",
        ]
        lines += [f"  {reason}: {n:,}" for reason, n in sorted(self.malformed.items())]
        lines += [
            f"{'elapsed':<{width}}{self.elapsed_s:.3f} s",
            f"{'rate':<{width}}{self.probes_per_s:,.0f} probes/s",
        ]
        return "\n".join(lines)


async def replay(
    files: Iterable[str | Path],
    decoder: Decoder,
    sink: Sink,
    on_batch: Callable[[ReplayStats], None] | None = None,
    stats: ReplayStats | None = None,
) -> ReplayStats:
    """Decode every frame of `files` into `sink`; `on_batch` sees the counters as they grow.

    Decoding is synchronous; the sink's write is awaited once per batch, which is
    where backpressure (a full Kafka queue, say) slows the replay down. `stats`
    are filled as it goes, so they survive an interruption.
    """
    stats = stats if stats is not None else ReplayStats()
    started = time.perf_counter()
    try:
        await _replay(files, decoder, sink, on_batch, stats)
    finally:  # a sink that failed (OutputError) stops the replay: what was counted stands
        stats.elapsed_s = time.perf_counter() - started
    return stats


async def _replay(
    files: Iterable[str | Path],
    decoder: Decoder,
    sink: Sink,
    on_batch: Callable[[ReplayStats], None] | None,
    stats: ReplayStats,
) -> None:
    files = list(files)
    stats.bytes_total = sum(_size(path) for path in files)
    decode = decoder.decode
    write_frames = sink.write_frames if getattr(sink, "wants_frames", False) else None  # type: ignore[attr-defined]
    batch: list[Record] = []
    frames: list[Frame] = []
    for path in files:
        stats.files += 1
        done = stats.bytes_read
        capture = read_capture(path)
        try:
            for linktype, capture_ns, frame in capture:
                stats.frames += 1
                try:
                    record = decode(frame, capture_ns, linktype)
                except DecodeError as exc:
                    stats.malformed[exc.key] += 1
                    continue
                if record is None:
                    stats.not_pt += 1
                    continue
                batch.append(record)
                if write_frames:
                    frames.append((linktype, capture_ns, frame))
                if len(batch) >= BATCH:
                    stats.probes += len(batch)
                    await (write_frames(batch, frames) if write_frames else sink.write(batch))
                    batch, frames = [], []
                    if on_batch:
                        stats.bytes_read = done + capture.offset
                        on_batch(stats)
        except (CaptureError, OSError) as exc:
            stats.capture_errors.append(str(exc))
        stats.bytes_read = done + _size(path)
    if batch:
        stats.probes += len(batch)
        await (write_frames(batch, frames) if write_frames else sink.write(batch))
    await sink.flush()


def _size(path: str | Path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
