"""The baseline: a straightforward per-field struct.unpack_from decoder.

How a quick Python collector decodes a PT probe: every field unpacked where
it stands, every address through ipaddress, every frame walked from the
start. It makes the same records as ptc's decoder (the benchmark checks
that), so the two are timed on equal work. Handles Ethernet (with VLAN
tags) and the forms the benchmark uses; no error taxonomy.
"""

from __future__ import annotations

import ipaddress
import struct

from pt_collector.codec.record import Hop, Node, Record
from pt_collector.codec.tts import midpoint_times


class BaselineDecoder:
    def __init__(self, tts_shift: int | None = None) -> None:
        self.tts_shift = tts_shift

    def decode(self, frame: bytes, capture_ns: int = 0, linktype: int = 1) -> Record | None:
        (ethertype,) = struct.unpack_from(">H", frame, 12)
        off = 14
        while ethertype in (0x8100, 0x88A8):
            (ethertype,) = struct.unpack_from(">H", frame, off + 2)
            off += 4
        if ethertype != 0x86DD:
            return None
        (nh,) = struct.unpack_from(">B", frame, off + 6)
        sink = None
        if nh == 43:  # an encapsulation: outer SRH with the sink's PT TLV
            outer_src = str(ipaddress.IPv6Address(frame[off + 8 : off + 24]))
            pos = off + 40
            srh_nh, hdr_len = struct.unpack_from(">BB", frame, pos)
            (last_entry,) = struct.unpack_from(">B", frame, pos + 4)
            tlv = pos + 8 + (0 if last_entry == 255 else 16 * (last_entry + 1))
            end = pos + 8 + 8 * hdr_len
            while tlv < end:
                tlv_type, tlv_len = struct.unpack_from(">BB", frame, tlv)
                if tlv_type == 128:
                    (word,) = struct.unpack_from(">H", frame, tlv + 2)
                    (sec,) = struct.unpack_from(">I", frame, tlv + 4)
                    (nsec,) = struct.unpack_from(">I", frame, tlv + 8)
                    sink = Node(outer_src, word >> 4, word & 0xF, sec * 10**9 + nsec)
                tlv += 2 + tlv_len
            if srh_nh != 41:
                return None
            off = end
            (nh,) = struct.unpack_from(">B", frame, off + 6)
        if nh != 0:
            return None
        (vtcfl,) = struct.unpack_from(">I", frame, off)
        (hop_limit,) = struct.unpack_from(">B", frame, off + 7)
        src = str(ipaddress.IPv6Address(frame[off + 8 : off + 24]))
        dst = str(ipaddress.IPv6Address(frame[off + 24 : off + 40]))
        pos = off + 40
        hbh_nh, hbh_len = struct.unpack_from(">BB", frame, pos)
        opt = pos + 2
        stack = []
        while opt < pos + 8 * (hbh_len + 1):
            (opt_type,) = struct.unpack_from(">B", frame, opt)
            if opt_type == 0:
                opt += 1
                continue
            (opt_len,) = struct.unpack_from(">B", frame, opt + 1)
            if opt_type == 0x32:
                for m in range(opt + 2, opt + 2 + opt_len, 3):
                    b0, b1, tts = struct.unpack_from(">BBB", frame, m)
                    if b0 == b1 == tts == 0:
                        break
                    stack.append((b0 << 4 | b1 >> 4, b1 & 0xF, tts))
            opt += 2 + opt_len
        pos += 8 * (hbh_len + 1)
        if hbh_nh != 43:
            return None
        (last_entry,) = struct.unpack_from(">B", frame, pos + 4)
        (hdr_len,) = struct.unpack_from(">B", frame, pos + 1)
        count = 0 if last_entry == 255 else last_entry + 1
        segments = [str(ipaddress.IPv6Address(frame[pos + 8 + 16 * i : pos + 24 + 16 * i])) for i in range(count)]
        tlv = pos + 8 + 16 * count
        end = pos + 8 + 8 * hdr_len
        session = sequence = src_if = src_load = src_ns = 0
        while tlv < end:
            tlv_type, tlv_len = struct.unpack_from(">BB", frame, tlv)
            if tlv_type == 128:
                (word,) = struct.unpack_from(">H", frame, tlv + 2)
                (sec,) = struct.unpack_from(">I", frame, tlv + 4)
                (nsec,) = struct.unpack_from(">I", frame, tlv + 8)
                (session,) = struct.unpack_from(">H", frame, tlv + 12)
                (sequence,) = struct.unpack_from(">H", frame, tlv + 14)
                src_if, src_load, src_ns = word >> 4, word & 0xF, sec * 10**9 + nsec
            tlv += 2 + tlv_len
        path = list(reversed(stack))
        times: list[int | None] = [None] * len(path)
        if self.tts_shift is not None and sink is not None:
            times = midpoint_times([tts for _, _, tts in path], self.tts_shift, src_ns, sink.time_ns)
        hops = tuple(Hop(i, load, tts, t) for (i, load, tts), t in zip(path, times, strict=True))
        return Record(
            1, capture_ns, session, sequence, Node(src, src_if, src_load, src_ns), sink, dst,
            tuple(reversed(segments)), hops, sink.time_ns - src_ns if sink else None,
            vtcfl >> 20 & 0xFF, vtcfl & 0xFFFFF, hop_limit,
        )  # fmt: skip
