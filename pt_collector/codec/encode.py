"""The encoder twin of the decoder: PT probes as bytes, for tests and traffic.

What the source node sends (`probe`), what each midpoint does to it
(`push_mcd`), what the sink sends to the collector (`encapsulate`), and the
link layers a capture may carry (`ethernet`, `linux_sll`, `linux_sll2`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from ipaddress import IPv6Address

from .wire import (
    ETH_P_IPV6,
    IPV6,
    IPV6_HEADER,
    MCD_SIZE,
    NH_HOP_BY_HOP,
    NH_IPV6,
    NH_NONE,
    NH_ROUTING,
    OPT_PT,
    PT_OPT_DATA_LEN,
    PT_TLV,
    PT_TLV_LEN,
    ROUTING_TYPE_SRH,
    SRH,
    SRH_NO_SEGMENTS,
    TLV_PT,
    if_word,
    mcd_value,
    ns_to_t64,
)


@lru_cache(maxsize=4096)
def packed(address: str) -> bytes:
    """An IPv6 address in its 16 bytes (addresses repeat: cached)."""
    return IPv6Address(address).packed


@dataclass(frozen=True)
class PtTlv:
    """The SRH PT TLV: a node's interface, load, T64 time, and the probe's session."""

    if_id: int
    if_load: int
    time_ns: int
    session_id: int = 0
    sequence: int = 0

    def pack(self) -> bytes:
        t64 = ns_to_t64(self.time_ns)
        word = if_word(self.if_id, self.if_load)
        return PT_TLV.pack(TLV_PT, PT_TLV_LEN, word, t64 >> 32, t64 & 0xFFFFFFFF, self.session_id, self.sequence)


def mcd(if_id: int, if_load: int, tts: int) -> bytes:
    """One 3-byte MCD."""
    return mcd_value(if_id, if_load, tts).to_bytes(MCD_SIZE, "big")


def pad_options(size: int) -> bytes:
    """HbH padding of `size` bytes: Pad1 or PadN."""
    if size == 0:
        return b""
    if size == 1:
        return b"\x00"
    return bytes((1, size - 2)) + bytes(size - 2)


def hop_by_hop(next_header: int, stack: bytes, before: bytes = b"", after: bytes = b"") -> bytes:
    """A HbH header with the PT option holding `stack`, padded to 8-byte units.

    `before`/`after` are other options (already encoded) around the PT option.
    """
    body = before + bytes((OPT_PT, len(stack))) + stack + after
    body += pad_options(-(len(body) + 2) % 8)
    return bytes((next_header, (len(body) + 2) // 8 - 1)) + body


def srh(
    next_header: int,
    segments: Sequence[str],
    tlvs: bytes,
    segments_left: int | None = None,
    flags: int = 0,
    tag: int = 0,
) -> bytes:
    """An SRH; `segments` in path order (stored reversed: Segment List[0] is the last)."""
    sids = b"".join(packed(s) for s in reversed(segments))
    body_len = len(sids) + len(tlvs)
    if body_len % 8:
        raise ValueError("SRH segments + TLVs must fill whole 8-byte units")
    last_entry = len(segments) - 1 if segments else SRH_NO_SEGMENTS
    left = max(len(segments) - 1, 0) if segments_left is None else segments_left
    fixed = SRH.pack(next_header, body_len // 8, ROUTING_TYPE_SRH, left, last_entry, flags, tag)
    return fixed + sids + tlvs


def ipv6(
    src: str,
    dst: str,
    next_header: int,
    payload: bytes,
    traffic_class: int = 0,
    flow_label: int = 0,
    hop_limit: int = 64,
) -> bytes:
    vtcfl = 6 << 28 | (traffic_class & 0xFF) << 20 | (flow_label & 0xFFFFF)
    head = IPV6.pack(vtcfl, len(payload), next_header, hop_limit, packed(src), packed(dst))
    return head + payload


def probe(
    src: str,
    dst: str,
    segments: Sequence[str],
    src_tlv: PtTlv,
    mcds: Sequence[bytes] = (),
    *,
    opt_data_len: int = PT_OPT_DATA_LEN,
    traffic_class: int = 0,
    flow_label: int = 0,
    hop_limit: int = 64,
    srh_tlvs_before: bytes = b"",
    srh_tlvs_after: bytes = b"",
    payload_next_header: int = NH_NONE,
    payload: bytes = b"",
) -> bytes:
    """A probe as the source sends it, with `mcds` (newest first) already in its stack."""
    stack = b"".join(mcds)
    if len(stack) > opt_data_len:
        raise ValueError("more MCDs than the stack holds")
    stack += bytes(opt_data_len - len(stack))
    routing = srh(payload_next_header, segments, srh_tlvs_before + src_tlv.pack() + srh_tlvs_after)
    packet = hop_by_hop(NH_ROUTING, stack) + routing + payload
    return ipv6(src, dst, NH_HOP_BY_HOP, packet, traffic_class, flow_label, hop_limit)


def push_mcd(packet: bytes, one_mcd: bytes) -> bytes:
    """What a PT midpoint does: push its MCD at stack offset 0; the deepest falls off."""
    start = IPV6_HEADER + 4  # HbH next header, length, option type, option length
    size = packet[IPV6_HEADER + 3]
    stack = (one_mcd + packet[start : start + size])[:size]
    return packet[:start] + stack + packet[start + size :]


def encapsulate(
    inner: bytes, outer_src: str, outer_dst: str, sink_tlv: PtTlv, segments: Sequence[str] = (), hop_limit: int = 64
) -> bytes:
    """What the sink sends to the collector: outer IPv6 + SRH with its PT TLV + the probe."""
    return ipv6(outer_src, outer_dst, NH_ROUTING, srh(NH_IPV6, segments, sink_tlv.pack()) + inner, hop_limit=hop_limit)


def ethernet(packet: bytes, vlans: Sequence[tuple[int, int]] = (), ethertype: int = ETH_P_IPV6) -> bytes:
    """An Ethernet II frame; `vlans` are (TPID, VLAN id) tags, outermost first."""
    tags = b"".join(tpid.to_bytes(2, "big") + (vid & 0xFFF).to_bytes(2, "big") for tpid, vid in vlans)
    macs = bytes.fromhex("020000000002020000000001")
    return macs + tags + ethertype.to_bytes(2, "big") + packet


def linux_sll(packet: bytes, ethertype: int = ETH_P_IPV6) -> bytes:
    """Linux cooked capture v1: packet type, ARPHRD, address length, address(8), protocol."""
    return bytes((0, 0, 0, 1, 0, 6)) + bytes.fromhex("020000000001") + b"\0\0" + ethertype.to_bytes(2, "big") + packet


def linux_sll2(packet: bytes, ethertype: int = ETH_P_IPV6, ifindex: int = 2) -> bytes:
    """Linux cooked capture v2: protocol, reserved, ifindex, ARPHRD, type, address length, address(8)."""
    head = ethertype.to_bytes(2, "big") + b"\0\0" + ifindex.to_bytes(4, "big") + bytes((0, 1, 0, 6))
    return head + bytes.fromhex("020000000001") + b"\0\0" + packet
