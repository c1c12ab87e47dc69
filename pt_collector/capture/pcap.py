"""Capture files: read pcap (us and ns) and pcapng, write pcap.

Reading yields (linktype, capture time in ns, frame bytes). A file that is
not a capture raises CaptureError before the first frame; a file cut short
or corrupt part-way raises CaptureError after the frames before the damage.
"""

from __future__ import annotations

import mmap
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

Frame = tuple[int, int, bytes]  # linktype, capture time (ns since the epoch), frame bytes


class CaptureError(Exception):
    """A capture file that cannot be read (on, or from some point on)."""


class Capture:
    """The frames of one pcap or pcapng file, in file order.

    `offset` is how far reading has got, in bytes, for progress displays.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = path
        self.offset = 0

    def __iter__(self) -> Iterator[Frame]:
        path = self.path
        with open(path, "rb") as f:
            try:
                data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except ValueError:  # an empty file cannot be mapped
                raise CaptureError(f"{path}: empty file, not a capture") from None
        with data:
            if len(data) < 4:
                raise CaptureError(f"{path}: too short to be a capture")
            magic = data[:4]
            if magic == PCAPNG_SHB.to_bytes(4, "big"):
                yield from _pcapng(data, str(path), self)
            elif PCAP_MAGIC_US.to_bytes(4, "big") in (magic, magic[::-1]) or PCAP_MAGIC_NS.to_bytes(4, "big") in (
                magic,
                magic[::-1],
            ):
                yield from _pcap(data, str(path), self)
            else:
                raise CaptureError(f"{path}: not a pcap or pcapng file (magic {magic.hex()})")


def read_capture(path: str | Path) -> Capture:
    """The frames of a pcap or pcapng file: (linktype, capture time in ns, frame bytes)."""
    return Capture(path)


def _pcap(data: mmap.mmap, name: str, progress: Capture) -> Iterator[Frame]:
    if len(data) < 24:
        raise CaptureError(f"{name}: pcap header cut short")
    order = "<" if int.from_bytes(data[:4], "little") in (PCAP_MAGIC_US, PCAP_MAGIC_NS) else ">"
    magic, _major, _minor, _zone, _sigfigs, _snaplen, network = struct.unpack_from(order + "IHHiIII", data, 0)
    linktype = network & 0x0FFFFFFF  # upper bits may carry FCS information
    frac_ns = 1 if magic == PCAP_MAGIC_NS else 1000
    record = struct.Struct(order + "IIII").unpack_from
    size, at = len(data), 24
    while at + 16 <= size:
        sec, frac, caplen, _origlen = record(data, at)
        if caplen > MAX_FRAME:
            raise CaptureError(f"{name}: record at byte {at} claims {caplen} bytes: corrupt capture")
        end = at + 16 + caplen
        if end > size:
            break
        yield linktype, sec * 1_000_000_000 + frac * frac_ns, data[at + 16 : end]
        at = progress.offset = end
    if at != size:
        raise CaptureError(f"{name}: capture cut short at byte {at}")


def _tsresol_ns(options: bytes, order: str) -> tuple[int, int]:
    """(multiplier, divisor) turning an interface's timestamp units into ns."""
    at = 0
    while at + 4 <= len(options):
        code, length = struct.unpack_from(order + "HH", options, at)
        if code == 0:
            break
        if code == OPT_IF_TSRESOL and length >= 1:
            value = options[at + 4]
            if value & 0x80:
                return 1_000_000_000, 1 << (value & 0x7F)
            return (10 ** (9 - value), 1) if value <= 9 else (1, 10 ** (value - 9))
        at += 4 + length + (-length % 4)
    return 1000, 1  # microseconds by default


def _pcapng(data: mmap.mmap, name: str, progress: Capture) -> Iterator[Frame]:
    size, at = len(data), 0
    order = "<"
    interfaces: list[tuple[int, int, int, int]] = []  # linktype, snaplen, multiplier, divisor
    while at + 12 <= size:
        block_type = int.from_bytes(data[at : at + 4], "little" if order == "<" else "big")
        if block_type == PCAPNG_SHB:
            bom = data[at + 8 : at + 12]
            if bom == PCAPNG_BYTE_ORDER.to_bytes(4, "little"):
                order = "<"
            elif bom == PCAPNG_BYTE_ORDER.to_bytes(4, "big"):
                order = ">"
            else:
                raise CaptureError(f"{name}: pcapng section at byte {at} has no byte-order magic")
            interfaces = []
        (length,) = struct.unpack_from(order + "I", data, at + 4)
        if length < 12 or length % 4 or at + length > size:
            if at + length > size and length >= 12:
                break
            raise CaptureError(f"{name}: pcapng block at byte {at} has bad length {length}")
        body = at + 8
        if block_type == PCAPNG_IDB:
            linktype, _, snaplen = struct.unpack_from(order + "HHI", data, body)
            interfaces.append((linktype, snaplen, *_tsresol_ns(data[body + 8 : at + length - 4], order)))
        elif block_type in (PCAPNG_EPB, PCAPNG_PB):
            if block_type == PCAPNG_EPB:
                iface, ts_high, ts_low, caplen = struct.unpack_from(order + "IIII", data, body)
                start = body + 20
            else:
                iface, _drops, ts_high, ts_low, caplen = struct.unpack_from(order + "HHIII", data, body)
                start = body + 20
            if iface >= len(interfaces) or start + caplen > at + length - 4:
                raise CaptureError(f"{name}: packet block at byte {at} is inconsistent")
            linktype, _, mul, div = interfaces[iface]
            yield linktype, ((ts_high << 32 | ts_low) * mul) // div, data[start : start + caplen]
        elif block_type == PCAPNG_SPB:
            if not interfaces:
                raise CaptureError(f"{name}: simple packet block at byte {at} before any interface")
            (origlen,) = struct.unpack_from(order + "I", data, body)
            linktype, snaplen = interfaces[0][:2]
            caplen = min(origlen, snaplen or origlen, length - 16)
            yield linktype, 0, data[body + 4 : body + 4 + caplen]
        at += length
        progress.offset = at
    if at != size:
        raise CaptureError(f"{name}: capture cut short at byte {at}")


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
