"""`ptc collect -w FILE [-C MB]`: the probes' frames also saved to a pcap file, rotated by size like tcpdump's.

The frames come the way the flow rules' raw function gets them: the sink asks for them
(`wants_frames`), so the engine keeps each record's frame (keep_frames). Frames that did not
decode into a record (not PT, malformed) are counted, not saved.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from ..capture.pcap import Frame, PcapWriter
from ..codec.record import Record
from .sinks import OutputError, Sink, hand_over

MB = 1_000_000  # tcpdump -C counts in millions of bytes


class RotatingPcap:
    """Frames into `path`; with `limit_bytes`, once the file is larger than that the next frame opens
    path1, then path2, ... (tcpdump -w -C names them so). An OSError is an OutputError naming the file."""

    def __init__(self, path: Path, limit_bytes: int | None = None) -> None:
        self.path = path
        self.limit_bytes = limit_bytes
        self.files = 0  # files opened
        self.frames = 0  # frames written
        self._stream: BinaryIO | None = None
        self._writer: PcapWriter | None = None
        self._linktype = -1

    def write(self, frames: Sequence[Frame]) -> None:
        try:
            for linktype, capture_ns, data in frames:
                if self._stream is None or linktype != self._linktype or self._full():
                    self.open(linktype)
                assert self._writer is not None
                self._writer.write(capture_ns, data)
                self.frames += 1
            if self._stream is not None:
                self._stream.flush()
        except OSError as exc:
            raise OutputError(f"cannot write {self.current}: {exc.strerror}") from None

    @property
    def current(self) -> Path:
        """The file being written (or about to be)."""
        number = max(0, self.files - 1)
        return self.path if number == 0 else self.path.with_name(f"{self.path.name}{number}")

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def _full(self) -> bool:
        return self.limit_bytes is not None and self._stream is not None and self._stream.tell() > self.limit_bytes

    def open(self, linktype: int) -> None:
        """Start the next file (the first: `path`), for frames of this link type."""
        self.close()
        self.files += 1
        self._stream = open(self.current, "wb")  # noqa: SIM115 - closed by close()
        self._writer = PcapWriter(self._stream, linktype)
        self._linktype = linktype


class SavingSink:
    """Writes each record's frame to a RotatingPcap, then hands the records on to `inner`."""

    wants_frames = True

    def __init__(self, inner: Sink, pcap: RotatingPcap) -> None:
        self.inner = inner
        self.pcap = pcap

    @property
    def held(self) -> int:
        return self.inner.held

    async def write(self, records: Sequence[Record]) -> None:  # only without frames: nothing to save
        await self.inner.write(records)

    async def write_frames(self, records: Sequence[Record], frames: list[Frame]) -> None:
        self.pcap.write(frames)
        await hand_over(self.inner, records, frames if self.inner.wants_frames else None)

    async def flush(self) -> None:
        await self.inner.flush()

    async def close(self, timeout_s: float | None = None) -> None:
        self.pcap.close()
        await self.inner.close(timeout_s)
