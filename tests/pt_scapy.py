"""PT probes built with scapy: an encoder independent of ptc's own, for cross-checks."""

from __future__ import annotations

import struct
from collections.abc import Sequence

from scapy.layers.inet6 import HBHOptUnknown, IPv6, IPv6ExtHdrHopByHop, IPv6ExtHdrSegmentRouting
from scapy.layers.inet6 import IPv6ExtHdrSegmentRoutingTLV as SrhTlv
from scapy.layers.l2 import Ether


def pt_tlv(if_id: int, if_load: int, sec: int, nsec: int, session: int = 0, seq: int = 0) -> SrhTlv:
    return SrhTlv(type=128, len=14, value=struct.pack(">HIIHH", if_id << 4 | if_load, sec, nsec, session, seq))


def scapy_probe(
    src: str,
    dst: str,
    segments_path_order: Sequence[str],
    src_tlv: SrhTlv,
    mcds: Sequence[tuple[int, int, int]],  # (if_id, load, tts), newest first
    sink: tuple[str, SrhTlv] | None = None,
    hop_limit: int = 64,
    tc: int = 0,
    fl: int = 0,
) -> bytes:
    stack = b"".join((i << 12 | load << 8 | tts).to_bytes(3, "big") for i, load, tts in mcds)
    stack += bytes(36 - len(stack))
    srh = IPv6ExtHdrSegmentRouting(
        nh=59,
        addresses=list(reversed(segments_path_order)),
        lastentry=len(segments_path_order) - 1 if segments_path_order else 255,
        segleft=max(len(segments_path_order) - 1, 0),
        tlv_objects=[src_tlv],
    )
    inner = (
        IPv6(src=src, dst=dst, hlim=hop_limit, tc=tc, fl=fl)
        / IPv6ExtHdrHopByHop(nh=43, options=[HBHOptUnknown(otype=0x32, optdata=stack)])
        / srh
    )
    if sink is None:
        return bytes(Ether() / inner)
    sink_addr, sink_tlv = sink
    outer_srh = IPv6ExtHdrSegmentRouting(nh=41, addresses=[], lastentry=255, segleft=0, tlv_objects=[sink_tlv])
    return bytes(Ether() / IPv6(src=sink_addr, dst="2001:db8:c011::1") / outer_srh / inner)
