"""Capture files and streams: read pcap (us and ns) and pcapng, write pcap.

A capture comes from a `CaptureSource`: a regular file, mapped whole, or a
stream (`-` for stdin, `/dev/stdin`, a pipe, a FIFO), read as it comes with
no seek and no size. A `PcapReader` turns its bytes into frames, fed in
order, chunk by chunk: (linktype, capture time in ns, frame bytes). Its error
messages name no file (the native engine's reader, native/src/pcap.rs, gives
the same ones); `read_capture(path)` yields a file's frames and raises
CaptureError naming the file: before the first frame for a file that is not
a capture, after the frames before the damage for one cut short or corrupt.
"""

from __future__ import annotations

import mmap
import os
import select
import stat
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BYTE_ORDER = 0x1A2B3C4D
PCAPNG_IDB = 1
PCAPNG_PB = 2  # obsolete Packet Block
PCAPNG_SPB = 3
PCAPNG_EPB = 6
OPT_IF_TSRESOL = 9
MAX_FRAME = 262144  # larger captured lengths mean a corrupt file
U64_MAX = (1 << 64) - 1

STDIN = "-"  # the path that means standard input
STDIN_FILENO = 0
STDIN_NAME = "<stdin>"  # how messages name it
READ_SIZE = 1 << 20  # a stream is read this much at a time at most
MAP_AHEAD = 8 << 20  # a mapped file's pages are mapped in (MADV_POPULATE_READ) this far ahead of the reader
MADV_POPULATE_READ = 22  # Linux 5.14: one call maps a range in, instead of a page fault per 4 KiB

Frame = tuple[int, int, bytes]  # linktype, capture time (ns since the epoch), frame bytes
Bytes = bytes | mmap.mmap  # what a reader reads: slices of it are bytes


class CaptureError(Exception):
    """A capture file that cannot be read (on, or from some point on)."""


class CaptureSource:
    """The bytes of one capture, as a reader consumes them.

    A regular file is mapped whole (`size` is its size); anything else (stdin as `-`, `/dev/stdin`, a pipe,
    a FIFO) is a stream, read as it comes (`size` is None: there is no seek and no size). `window()` is what
    is there to read, `advance(n)` consumes n bytes of it, `more()` reads more of a stream (blocking until
    some comes or it ends; `ready()` says whether that would return at once). Errors are CaptureError
    naming the capture (`name`: the path, or "<stdin>").
    """

    def __init__(self, path: str | Path) -> None:
        self.name = STDIN_NAME if str(path) == STDIN else str(path)
        self.offset = 0  # bytes consumed
        self._file: BinaryIO | None = None
        self._buf: Bytes = b""
        self._start = 0  # where the bytes not yet consumed begin in _buf
        self._mapped_in = 0  # a mapped file's bytes before this are mapped in (see window)
        try:
            if str(path) == STDIN:
                self._fd = STDIN_FILENO
            else:
                self._file = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by close()
                self._fd = self._file.fileno()
            info = os.fstat(self._fd)
        except OSError as exc:
            self.close()
            raise CaptureError(f"{self.name}: {getattr(exc, 'strerror', None) or exc}") from None
        self.size: int | None = info.st_size if stat.S_ISREG(info.st_mode) else None
        self.ended = self.size is not None  # everything there is is in the window
        if self.size:
            self._buf = mmap.mmap(self._fd, 0, access=mmap.ACCESS_READ)
        elif self.size is None and os.isatty(self._fd):
            self.close()
            raise CaptureError(f"{self.name}: a terminal, not a capture (pipe one in: tcpdump -w - | ptc replay -)")

    def window(self) -> tuple[Bytes, int, bool]:
        """(bytes, start, last): the capture from `offset` on is bytes[start:]; `last`: nothing comes after."""
        if isinstance(self._buf, mmap.mmap) and self._mapped_in - self._start < MAP_AHEAD // 2:
            self._map_in()
        return self._buf, self._start, self.ended

    def _map_in(self) -> None:
        """Map the next MAP_AHEAD bytes of a mapped file in at once (where the kernel can), not a fault a page."""
        buf = self._buf
        assert isinstance(buf, mmap.mmap)
        start = max(self._mapped_in, self._start) // mmap.PAGESIZE * mmap.PAGESIZE
        length = min(MAP_AHEAD, len(buf) - start)
        self._mapped_in = start + MAP_AHEAD
        if length > 0:
            try:
                buf.madvise(MADV_POPULATE_READ, start, length)
            except OSError:  # an older kernel: the pages fault in one by one, as they would
                self._mapped_in = len(buf)

    def advance(self, used: int) -> None:
        self._start += used
        self.offset += used

    def fileno(self) -> int:
        return self._fd

    def left(self) -> int:
        """Bytes in the window not yet consumed."""
        return len(self._buf) - self._start

    def ready(self) -> bool:
        """Whether `more()` would return without waiting (data or the end is there)."""
        if self.ended:
            return True
        try:
            return bool(select.select([self._fd], [], [], 0)[0])
        except (OSError, ValueError):
            return True  # more() will say what is wrong

    def more(self) -> None:
        """Read what a stream has (waiting for some); at its end, `ended` is set."""
        if self.ended:
            return
        try:
            chunk = os.read(self._fd, READ_SIZE)
        except OSError as exc:
            raise CaptureError(f"{self.name}: {exc.strerror or exc}") from None
        if not chunk:
            self.ended = True
        kept = self._buf[self._start :] if self._start else self._buf
        self._buf, self._start = kept + chunk if kept else chunk, 0

    def close(self) -> None:
        if isinstance(self._buf, mmap.mmap):
            self._buf.close()
        self._buf = b""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> CaptureSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PcapReader:
    """A pcap or pcapng capture's frames, from its bytes fed in order: what its headers said, and `offset`,
    the bytes consumed (the next buffer starts there). The twin of native/src/pcap.rs, message for message."""

    def __init__(self) -> None:
        self.offset = 0
        self._kind = ""  # "", "pcap" or "pcapng"
        self._order = "<"
        self._linktype = 0
        self._frac_ns = 1000
        self._interfaces: list[tuple[int, int, int, int]] = []  # linktype, snaplen, multiplier, divisor

    def read(
        self, buf: Bytes, start: int, last: bool, max_frames: int | None = None
    ) -> tuple[list[Frame], int, str | None]:
        """The frames of buf[start:] (the capture from `offset` on), up to `max_frames`, stopping at the last
        whole record. Returns (frames, bytes used, error or None); with `last` nothing comes after `buf`, and
        bytes left over that make no whole record are an error. After an error nothing more can be read."""
        frames: list[Frame] = []
        at, error = start, None
        limit = len(buf) if max_frames is None else max_frames
        try:
            if not self._kind:
                at = self._head(buf, at, last)
            if self._kind == "pcap":
                at = self._pcap(buf, at, start, last, limit, frames)
            elif self._kind == "pcapng":
                at = self._pcapng(buf, at, start, last, limit, frames)
        except _Stop as stop:
            at, error = stop.at, stop.message
        self.offset += at - start
        return frames, at - start, error

    def _cut_short(self, buf: Bytes, at: int, start: int, last: bool) -> None:
        if last and at != len(buf):
            raise _Stop(f"capture cut short at byte {self.offset + at - start}", at)

    def _head(self, buf: Bytes, at: int, last: bool) -> int:
        left = len(buf) - at
        if left < 4:
            if last:
                raise _Stop("too short to be a capture" if left else "empty file, not a capture", at)
            return at
        magic = buf[at : at + 4]
        if int.from_bytes(magic, "big") == PCAPNG_SHB:
            self._kind = "pcapng"
            return at
        if int.from_bytes(magic, "little") in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
            order = "<"
        elif int.from_bytes(magic, "big") in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
            order = ">"
        else:
            raise _Stop(f"not a pcap or pcapng file (magic {bytes(magic).hex()})", at)
        if left < 24:
            if last:
                raise _Stop("pcap header cut short", at)
            return at
        magic_value, _major, _minor, _zone, _sigfigs, _snaplen, network = struct.unpack_from(order + "IHHiIII", buf, at)
        self._kind, self._order = "pcap", order
        self._linktype = network & 0x0FFFFFFF  # upper bits may carry FCS information
        self._frac_ns = 1 if magic_value == PCAP_MAGIC_NS else 1000
        return at + 24

    def _pcap(self, buf: Bytes, at: int, start: int, last: bool, limit: int, frames: list[Frame]) -> int:
        record = struct.Struct(self._order + "IIII").unpack_from
        linktype, frac_ns, size = self._linktype, self._frac_ns, len(buf)
        append = frames.append
        for _ in range(limit):
            if at + 16 > size:
                break
            sec, frac, caplen, _origlen = record(buf, at)
            if caplen > MAX_FRAME:
                raise _Stop(f"record at byte {self.offset + at - start} claims {caplen} bytes: corrupt capture", at)
            end = at + 16 + caplen
            if end > size:
                break
            append((linktype, sec * 1_000_000_000 + frac * frac_ns, buf[at + 16 : end]))
            at = end
        else:
            return at  # max_frames reached
        self._cut_short(buf, at, start, last)
        return at

    def _pcapng(self, buf: Bytes, at: int, start: int, last: bool, limit: int, frames: list[Frame]) -> int:
        size, found = len(buf), 0
        while found < limit:
            if at + 12 > size:
                break
            where = self.offset + at - start
            block_type = int.from_bytes(buf[at : at + 4], "little" if self._order == "<" else "big")
            if block_type == PCAPNG_SHB:
                bom = buf[at + 8 : at + 12]
                if bom == PCAPNG_BYTE_ORDER.to_bytes(4, "little"):
                    self._order = "<"
                elif bom == PCAPNG_BYTE_ORDER.to_bytes(4, "big"):
                    self._order = ">"
                else:
                    raise _Stop(f"pcapng section at byte {where} has no byte-order magic", at)
                self._interfaces = []
            order = self._order
            (length,) = struct.unpack_from(order + "I", buf, at + 4)
            if length < 12 or length % 4 or at + length > size:
                if at + length > size and length >= 12:
                    break
                raise _Stop(f"pcapng block at byte {where} has bad length {length}", at)
            frame = self._pcapng_block(buf, at, length, block_type, where)
            if frame is not None:
                frames.append(frame)
                found += 1
            at += length
        else:
            return at  # max_frames reached
        self._cut_short(buf, at, start, last)
        return at

    def _pcapng_block(self, buf: Bytes, at: int, length: int, block_type: int, where: int) -> Frame | None:
        order, body, block_end = self._order, at + 8, at + length
        if block_type == PCAPNG_IDB:
            if body + 8 > len(buf):
                raise _Stop(f"interface block at byte {where} is inconsistent", at)
            linktype, _, snaplen = struct.unpack_from(order + "HHI", buf, body)
            self._interfaces.append((linktype, snaplen, *_tsresol_ns(buf[body + 8 : block_end - 4], order)))
        elif block_type in (PCAPNG_EPB, PCAPNG_PB):
            if body + 20 > len(buf):
                raise _Stop(f"packet block at byte {where} is inconsistent", at)
            if block_type == PCAPNG_EPB:
                iface, ts_high, ts_low, caplen = struct.unpack_from(order + "IIII", buf, body)
            else:
                iface, _drops, ts_high, ts_low, caplen = struct.unpack_from(order + "HHIII", buf, body)
            start = body + 20
            if iface >= len(self._interfaces) or start + caplen > block_end - 4:
                raise _Stop(f"packet block at byte {where} is inconsistent", at)
            linktype, _, mul, div = self._interfaces[iface]
            capture_ns = ((ts_high << 32 | ts_low) * mul) // div
            if capture_ns > U64_MAX:
                raise _Stop(f"packet block at byte {where}: time out of range", at)
            return linktype, capture_ns, buf[start : start + caplen]
        elif block_type == PCAPNG_SPB:
            if not self._interfaces:
                raise _Stop(f"simple packet block at byte {where} before any interface", at)
            (origlen,) = struct.unpack_from(order + "I", buf, body)
            linktype, snaplen = self._interfaces[0][:2]
            caplen = max(0, min(origlen, snaplen or origlen, length - 16))
            return linktype, 0, buf[body + 4 : body + 4 + caplen]
        return None


class _Stop(Exception):
    """A reader error: its message (no file name) and where reading stopped."""

    def __init__(self, message: str, at: int) -> None:
        super().__init__(message)
        self.message, self.at = message, at


class Capture:
    """The frames of one pcap or pcapng capture (a file, or `-` for stdin), in order.

    `offset` is how far reading has got, in bytes, for progress displays.
    """

    BATCH = 4096

    def __init__(self, path: str | Path) -> None:
        self.path = path
        self.offset = 0

    def __iter__(self) -> Iterator[Frame]:
        with CaptureSource(self.path) as source:
            reader = PcapReader()
            while True:
                buf, start, last = source.window()
                frames, used, error = reader.read(buf, start, last, self.BATCH)
                source.advance(used)
                yield from frames
                self.offset = source.offset
                if error is not None:
                    raise CaptureError(f"{source.name}: {error}")
                if last and not source.left():
                    return
                if not used:  # a record not whole yet: read on
                    if last:  # (the reader says so itself: never loop)
                        raise CaptureError(f"{source.name}: capture cut short at byte {source.offset}")
                    source.more()


def read_capture(path: str | Path) -> Capture:
    """The frames of a pcap or pcapng file (or `-`, stdin): (linktype, capture time in ns, frame bytes)."""
    return Capture(path)


def _tsresol_ns(options: Bytes, order: str) -> tuple[int, int]:
    """(multiplier, divisor) turning an interface's timestamp units into ns."""
    at = 0
    while at + 4 <= len(options):
        code, length = struct.unpack_from(order + "HH", options, at)
        if code == 0:
            break
        if code == OPT_IF_TSRESOL and length >= 1:
            if at + 4 >= len(options):
                break
            value = options[at + 4]
            if value & 0x80:
                return 1_000_000_000, 1 << (value & 0x7F)
            return (10 ** (9 - value), 1) if value <= 9 else (1, 10 ** (value - 9))
        at += 4 + length + (-length % 4)
    return 1000, 1  # microseconds by default


class PcapWriter:
    """Writes a nanosecond pcap file."""

    def __init__(self, stream: BinaryIO, linktype: int, snaplen: int = 65535) -> None:
        self._stream = stream
        self._record = struct.Struct("<IIII").pack
        stream.write(struct.pack("<IHHiIII", PCAP_MAGIC_NS, 2, 4, 0, 0, snaplen, linktype))

    def write(self, capture_ns: int, frame: bytes, origlen: int | None = None) -> None:
        sec, nsec = divmod(capture_ns, 1_000_000_000)
        self._stream.write(self._record(sec, nsec, len(frame), len(frame) if origlen is None else origlen))
        self._stream.write(frame)
