"""Replay: capture files (or streams: `-` is stdin) -> decode -> batches -> a sink.

Every frame ends in exactly one counter: decoded, not PT, or malformed
(by reason); a file that cannot be read to its end is named in
`capture_errors`, with the frames before the damage still decoded.
A capture's bytes go to the engine as they are (`Engine.open_capture`):
a file mapped whole, a stream (a pipe, a FIFO, stdin) as it comes, the
event loop free while a stream waits for more.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..capture.pcap import STDIN, CaptureError, CaptureSource
from .core_rules import bind_rules
from .engine import CaptureDecoder, Decoded, Engine
from .sinks import Sink, hand_over


@dataclass
class ReplayStats:
    files: int = 0
    frames: int = 0
    probes: int = 0
    not_pt: int = 0
    malformed: Counter[str] = field(default_factory=Counter)
    capture_errors: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    bytes_total: int | None = 0  # of the capture files, for progress (None: a stream, no size known)
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
    bind_rules(engine, sink)
    sizes = [_size(path) for path in files]
    stats.bytes_total = None if None in sizes else sum(s or 0 for s in sizes)
    for path, size in zip(files, sizes, strict=True):
        stats.files += 1
        done = stats.bytes_read
        try:
            with CaptureSource(path) as source:
                await _replay_capture(source, engine.open_capture(sink.wants_frames), sink, on_batch, stats, done)
        except CaptureError as exc:  # cannot be opened, or a stream that cannot be read on
            stats.capture_errors.append(str(exc))
        stats.bytes_read = done + size if size is not None else stats.bytes_read
    await sink.flush()


async def _replay_capture(
    source: CaptureSource,
    decoder: CaptureDecoder,
    sink: Sink,
    on_batch: Callable[[ReplayStats], None] | None,
    stats: ReplayStats,
    done: int,
) -> None:
    """Every frame of one capture into the sink; a capture that cannot be read on is named in capture_errors."""
    while True:
        buf, start, last = source.window()
        batches, used, error = decoder.decode(buf, start, last)
        source.advance(used)
        for decoded in batches:
            await _hand(decoded, sink, stats)
        stats.bytes_read = done + source.offset
        if on_batch:
            on_batch(stats)
        if error is not None:
            stats.capture_errors.append(f"{source.name}: {error}")
            return
        if last and not source.left():
            return
        if not used:  # the next record is not whole yet: read on
            if last:  # (the reader says so itself: never loop)
                stats.capture_errors.append(f"{source.name}: capture cut short at byte {source.offset}")
                return
            await _more(source)


async def _more(source: CaptureSource) -> None:
    """More of a stream; while it has none, the event loop runs on (a Kafka sink delivers, a signal stops)."""
    if not source.ready():
        loop = asyncio.get_running_loop()
        readable = loop.create_future()
        try:
            loop.add_reader(source.fileno(), lambda: readable.done() or readable.set_result(None))
        except (OSError, ValueError, NotImplementedError):  # cannot be polled: read it waiting
            pass
        else:
            try:
                await readable
            finally:
                loop.remove_reader(source.fileno())
    source.more()


async def _hand(decoded: Decoded, sink: Sink, stats: ReplayStats) -> None:
    stats.frames += decoded.seen
    stats.not_pt += decoded.not_pt
    stats.malformed.update(decoded.malformed)
    if decoded.records:
        stats.probes += len(decoded.records)
        await hand_over(sink, decoded.records, decoded.frames)


def _size(path: str | Path) -> int | None:
    """A capture file's size; None for a stream (stdin, a pipe, a FIFO), 0 for what cannot be looked at."""
    if str(path) == STDIN:
        return None
    try:
        info = os.stat(path)
    except OSError:
        return 0
    return info.st_size if stat.S_ISREG(info.st_mode) else None
