"""Replay: capture files -> decode -> batches -> a sink.

Every frame ends in exactly one counter: decoded, not PT, or malformed
(by reason); a file that cannot be read to its end is named in
`capture_errors`, with the frames before the damage still decoded.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..capture import Captured
from ..capture.pcap import CaptureError, Frame, read_capture
from .engine import Engine
from .sinks import Sink, hand_over

BATCH = 1024


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
    engine: str = ""  # the engine that decoded: native or python

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
            f"{'engine':<{width}}{self.engine}",
        ]
        return "\n".join(lines)


async def replay(
    files: Iterable[str | Path],
    engine: Engine,
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
    stats.engine = engine.name
    started = time.perf_counter()
    try:
        await _replay(files, engine, sink, on_batch, stats)
    finally:  # a sink that failed (OutputError) stops the replay: what was counted stands
        stats.elapsed_s = time.perf_counter() - started
    return stats


async def _replay(
    files: Iterable[str | Path],
    engine: Engine,
    sink: Sink,
    on_batch: Callable[[ReplayStats], None] | None,
    stats: ReplayStats,
) -> None:
    files = list(files)
    stats.bytes_total = sum(_size(path) for path in files)
    for path in files:
        stats.files += 1
        done = stats.bytes_read
        capture = read_capture(path)
        for linktype, frames in _chunks(capture, stats.capture_errors):
            await _decode_into(engine, linktype, frames, sink, stats)
            if on_batch:
                stats.bytes_read = done + capture.offset
                on_batch(stats)
        stats.bytes_read = done + _size(path)
    await sink.flush()


def _chunks(capture: Iterable[Frame], errors: list[str]) -> Iterator[tuple[int, list[Captured]]]:
    """The capture's frames as (link type, up to BATCH frames of it); a file that cannot be read on is named in
    `errors`, and the frames before the damage still come out."""
    frames: list[Captured] = []
    current = -1
    try:
        for linktype, capture_ns, data in capture:
            if linktype != current or len(frames) >= BATCH:
                if frames:
                    yield current, frames
                frames, current = [], linktype
            frames.append((capture_ns, data))
    except (CaptureError, OSError) as exc:
        errors.append(str(exc))
    if frames:
        yield current, frames


async def _decode_into(engine: Engine, linktype: int, frames: list[Captured], sink: Sink, stats: ReplayStats) -> None:
    decoded = engine.decode_batch(frames, linktype, keep_frames=sink.wants_frames)
    stats.frames += len(frames)
    stats.not_pt += decoded.not_pt
    stats.malformed.update(decoded.malformed)
    if decoded.records:
        stats.probes += len(decoded.records)
        await hand_over(sink, decoded.records, decoded.frames)


def _size(path: str | Path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
