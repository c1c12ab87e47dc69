"""Sinks: where batches of records go. One method does the work: write(batch).

`Sink` is the seam every sink fills (a file here, Kafka in kafka/sink.py, the
flow rules' router in routing.py); `DirectSink` gives the sinks that deliver
as they write what they need beyond write and flush.
"""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Sequence
from typing import Any, BinaryIO, Protocol

from ..capture.pcap import Frame
from ..codec.record import Record, to_json_lines


class Sink(Protocol):
    """Takes batches of records; `flush` returns once everything written is delivered.

    `held`: records accepted and not yet delivered. `close` ends the sink: what it still holds after
    `timeout_s` is counted as failed. A sink that `wants_frames` (the flow rules' raw function) is given
    each record's frame too: `write_frames(records, frames)`, frames[i] being records[i]'s.
    """

    wants_frames: bool

    @property
    def held(self) -> int: ...

    async def write(self, records: Sequence[Record]) -> None: ...

    async def write_frames(self, records: Sequence[Record], frames: list[Frame]) -> None: ...

    async def flush(self) -> None: ...

    async def close(self, timeout_s: float | None = None) -> None: ...


async def hand_over(sink: Sink, records: Sequence[Record], frames: list[Frame] | None) -> None:
    """Records to the sink, with their frames when it wants them (Engine.decode_batch's keep_frames)."""
    if frames is None:
        await sink.write(records)
    else:
        await sink.write_frames(records, frames)


class DirectSink:
    """A sink that delivers as it writes: it holds nothing, and wants no frames."""

    wants_frames = False
    held = 0

    async def write(self, records: Sequence[Record]) -> None:
        raise NotImplementedError

    async def write_frames(self, records: Sequence[Record], frames: list[Frame]) -> None:
        await self.write(records)

    async def flush(self) -> None:
        pass

    async def close(self, timeout_s: float | None = None) -> None:
        await self.flush()


class OutputError(Exception):
    """An output that cannot be written (a full disk, /dev/full, a closed pipe): one line naming it.

    `reader_gone`: a pipe whose reader went away (`| head`), which ends a command quietly.
    """

    def __init__(self, message: str, *, reader_gone: bool = False) -> None:
        super().__init__(message)
        self.reader_gone = reader_gone


class LineWriter:
    """Lines onto a binary stream; counts the lines that reached it whole (`written`) and those that did not.

    Written through an unbuffered stream (open_output's), the counts are exact: a write the
    kernel took in part leaves only whole lines counted, and the cut line is taken back off the
    end of a regular file. After the first failure (OutputError) nothing more
    is written: every later line is counted as `failed` and raises the same error.
    """

    def __init__(self, stream: BinaryIO, name: str) -> None:
        self._stream = stream
        self.name = name  # for messages: a path, or "stdout"
        self.written = 0
        self.failed = 0
        self.error: OutputError | None = None

    def write(self, data: bytes | memoryview, lines: int) -> None:
        """Write `data`, `lines` whole lines; OutputError when the stream refuses it."""
        if self.error is not None:
            self.failed += lines
            raise self.error
        view, done = memoryview(data), 0
        try:
            while done < len(data):
                n = self._stream.write(view[done:])
                if n is None:  # a non-blocking stream that is full
                    raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))
                done += n
        except OSError as exc:
            taken = view[:done].tobytes()  # data may be any buffer (the native engine's batch)
            self._cut_back(done - (taken.rfind(b"\n") + 1))
            self._fail(exc, taken.count(b"\n"), lines)
        try:
            self._stream.flush()  # a buffered stream: what it held may not have gone out, so none of it counts
        except OSError as exc:
            self._fail(exc, 0, lines)
        self.written += lines

    def flush(self) -> None:
        if self.error is None:
            try:
                self._stream.flush()
            except OSError as exc:
                self._fail(exc, 0, 0)

    def summary(self) -> str:
        width = 16
        lines = [f"{'written':<{width}}{self.written:,}"]
        if self.failed:
            lines.append(f"{'not written':<{width}}{self.failed:,}")
        return "\n".join(lines)

    def _fail(self, exc: OSError, whole: int, lines: int) -> None:
        self.written += whole
        self.failed += lines - whole
        reason = exc.strerror or str(exc)
        self.error = OutputError(f"cannot write {self.name}: {reason}", reader_gone=isinstance(exc, BrokenPipeError))
        raise self.error from None

    def _cut_back(self, partial: int) -> None:
        """Take a cut line's `partial` bytes back off the end of a regular file, if nothing was written after them."""
        stream = self._stream
        if partial <= 0 or not isinstance(stream, io.FileIO):
            return
        try:
            if stream.seekable():
                end = stream.tell()  # appending (--workers share the file), the end of this process's write
                if os.fstat(stream.fileno()).st_size == end:
                    os.ftruncate(stream.fileno(), end - partial)
                    stream.seek(end - partial)
        except OSError:  # not a file we can cut: the line stays cut, and is counted as not written
            pass


class JsonLinesSink(DirectSink):
    """Records as JSON lines (record schema v1) on a binary stream, one write per batch, a reader sees whole batches.

    `lines` counts what reached the stream; a stream that refuses a write raises OutputError (see LineWriter).
    """

    def __init__(self, stream: BinaryIO, name: str = "the output") -> None:
        self.lines = LineWriter(stream, name)

    async def write(self, records: Sequence[Any]) -> None:  # records, or histograms through the flow rules
        self.lines.write(to_json_lines(records), len(records))

    async def flush(self) -> None:
        self.lines.flush()


class ListSink(DirectSink):
    """Keeps every record in memory (tests, library use)."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    async def write(self, records: Sequence[Record]) -> None:
        self.records.extend(records)
