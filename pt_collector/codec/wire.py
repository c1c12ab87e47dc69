"""Path Tracing on the wire: protocol numbers and fixed layouts.

Shared by the decoder and its encoder twin. Everything is big-endian; see
docs/wire-format.md for each layout and where its values come from.
"""

from __future__ import annotations

import struct

# IPv6 next-header values
NH_HOP_BY_HOP = 0
NH_TCP = 6
NH_UDP = 17
NH_IPV6 = 41
NH_ROUTING = 43
NH_FRAGMENT = 44
NH_ESP = 50
NH_AH = 51
NH_ICMPV6 = 58
NH_NONE = 59
NH_DEST_OPTS = 60

# extension headers whose length is (Hdr Ext Len + 1) * 8 bytes
EXT_HEADERS_8 = frozenset({NH_HOP_BY_HOP, NH_ROUTING, NH_DEST_OPTS})

ETH_P_IPV6 = 0x86DD
ETH_P_VLAN = (0x8100, 0x88A8, 0x9100)  # 802.1Q, 802.1ad, old QinQ

# pcap link types
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
LINKTYPES_RAW = (LINKTYPE_RAW, 12, 14, LINKTYPE_IPV6)  # DLT_RAW differs per OS

# HbH options
OPT_PAD1 = 0
OPT_PADN = 1
OPT_PT = 0x32  # HbH-PT: skip if unknown, data may change en route
MCD_SIZE = 3
MCD_SLOTS = 12
PT_OPT_DATA_LEN = MCD_SIZE * MCD_SLOTS  # what an encoder emits: 2 + 2 + 36 = 40

# SRH
ROUTING_TYPE_SRH = 4
SRH_FIXED = 8
SRH_NO_SEGMENTS = 255  # Last Entry of an SRH that carries no segment
TLV_PAD1 = 0
TLV_PADN = 4
TLV_HMAC = 5
TLV_PT = 128
PT_TLV_LEN = 14  # bytes after Type and Length
PT_TLV_SIZE = 2 + PT_TLV_LEN

IPV6_HEADER = 40
NS_PER_S = 1_000_000_000

# IPv6 fixed header: version/class/flow, payload length, next header, hop limit, src, dst
IPV6 = struct.Struct(">IHBB16s16s")
# SRH fixed part: next header, hdr ext len, routing type, segments left, last entry, flags, tag
SRH = struct.Struct(">BBBBBBH")
# PT TLV: type, length, if word (if_id << 4 | if_ld), T64 seconds, T64 nanoseconds, session, sequence
PT_TLV = struct.Struct(">BBHIIHH")


def if_word(if_id: int, if_load: int) -> int:
    """IF_ID (12 bits) and IF_LD (4 bits) as one 16-bit word."""
    return (if_id & 0xFFF) << 4 | (if_load & 0xF)


def mcd_value(if_id: int, if_load: int, tts: int) -> int:
    """An MCD as its 24-bit integer: OIF << 12 | OIL << 8 | TTS."""
    return (if_id & 0xFFF) << 12 | (if_load & 0xF) << 8 | (tts & 0xFF)


def t64_to_ns(t64: int) -> int:
    """The 64-bit word `sec << 32 | nsec` as nanoseconds since the epoch."""
    return (t64 >> 32) * NS_PER_S + (t64 & 0xFFFFFFFF)


def ns_to_t64(ns: int) -> int:
    sec, nsec = divmod(ns, NS_PER_S)
    return sec << 32 | nsec
