#!/usr/bin/env python3
"""Write the small captures in pcaps/ (see pcaps/README.md). Deterministic: rerun to rebuild.

Probe bytes come from ptc's encoder twin; the non-PT traffic and the pcapng
writer come from scapy, so those files do not depend on ptc's own code.
"""

from __future__ import annotations

import sys
from pathlib import Path

from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import HBHOptUnknown, IPv6, IPv6ExtHdrHopByHop, IPv6ExtHdrSegmentRouting
from scapy.layers.l2 import ARP, Ether
from scapy.utils import PcapNgWriter

from pt_collector.capture.pcap import PcapWriter
from pt_collector.codec.encode import (
    PtTlv,
    encapsulate,
    ethernet,
    hop_by_hop,
    ipv6,
    linux_sll,
    linux_sll2,
    mcd,
    pad_options,
    probe,
    push_mcd,
    srh,
)
from pt_collector.codec.generate import COLLECTOR, DEFAULT_START_NS, generate, tts_of
from pt_collector.codec.wire import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_RAW,
    NH_HOP_BY_HOP,
    NH_IPV6,
    NH_NONE,
    NH_ROUTING,
    NH_UDP,
    TLV_HMAC,
    TLV_PADN,
    t64_to_ns,
)

OUT = Path(__file__).resolve().parent.parent / "pcaps"
SRC, DST, SINK = "2001:db8:1::1", "fcbb:bb00:9::", "2001:db8:e::1"
T0 = DEFAULT_START_NS


def write_pcap(name: str, linktype: int, frames: list[bytes], step_ns: int = 1_000_000) -> None:
    with open(OUT / name, "wb") as f:
        writer = PcapWriter(f, linktype)
        for i, frame in enumerate(frames):
            writer.write(T0 + i * step_ns, frame)
    print(f"{name}: {len(frames)} frames")


def write_generated(name: str, count: int, **kw: object) -> None:
    """What `ptc generate` writes: the generator's own capture times."""
    with open(OUT / name, "wb") as f:
        writer = PcapWriter(f, LINKTYPE_ETHERNET)
        for capture_ns, packet in generate(count, **kw):  # type: ignore[arg-type]
            writer.write(capture_ns, ethernet(packet))
    print(f"{name}: {count} frames")


def walked(mcds: int, seq: int, segments: tuple[str, ...] = ("fcbb:bb00:2::", DST), **kw: object) -> bytes:
    """A probe after `mcds` midpoints (each 1 ms apart), encapsulated by the sink."""
    t = T0 + seq * 10_000_000
    packet = probe(SRC, segments[-1] if segments else DST, segments, PtTlv(11, 1, t, 7, seq), **kw)  # type: ignore[arg-type]
    for k in range(mcds):
        t += 1_000_000
        packet = push_mcd(packet, mcd(100 + k, k % 16, tts_of(t, 18)))
    return encapsulate(packet, SINK, COLLECTOR, PtTlv(21, 2, t + 1_000_000))


def testbed() -> list[bytes]:
    """The three probes of pt-wire-format.md section 5.

    Row 2 gives no source time: it is written as a probe without an SRH (no source TLV).
    """
    rows = [
        ("03e029 02b02e 016032", 7049743939458283446, 7049743940258383836),
        ("03e047 034046 015046", None, 7057538678452034330),
        ("03e0b8 0340b8 0150b8", 7057539335188787818, 7057539335209112773),
    ]
    frames = []
    for seq, (stack, src_t64, sink_t64) in enumerate(rows, 1):
        mcds = b"".join(bytes.fromhex(m) for m in stack.split())
        if src_t64 is None:
            inner = ipv6(SRC, DST, NH_HOP_BY_HOP, hop_by_hop(NH_NONE, mcds + bytes(36 - len(mcds))))
        else:
            inner = probe(SRC, DST, ("fcbb:bb00:2::", DST), PtTlv(11, 0, t64_to_ns(src_t64), 1, seq), [mcds])
        frames.append(ethernet(encapsulate(inner, SINK, COLLECTOR, PtTlv(21, 0, t64_to_ns(sink_t64)))))
    return frames


def srh_variants() -> list[bytes]:
    segs3 = ("fcbb:bb00:2::", "fcbb:bb00:3::", DST)
    padn4 = bytes((TLV_PADN, 2, 0, 0))
    hmac = bytes((TLV_HMAC, 38)) + bytes(38)  # 2 reserved + 4 key id + 32 HMAC
    packets = [
        walked(3, 1, segments=()),  # 0 segments: Last Entry 255
        walked(3, 2, segments=segs3),
        walked(3, 3, srh_tlvs_before=padn4, srh_tlvs_after=padn4),  # PadN both sides
        walked(3, 4, srh_tlvs_before=b"\x00" * 4, srh_tlvs_after=b"\x00" * 4),  # Pad1s
        walked(3, 5, srh_tlvs_before=hmac),  # HMAC before the PT TLV
        walked(3, 6, opt_data_len=12),  # a 4-slot stack
        walked(3, 7, payload_next_header=NH_UDP, payload=bytes.fromhex("9c4013b0000c0000") + b"ping"),
    ]
    # PadN before the PT option in the HbH header
    t = T0 + 80_000_000
    stack = mcd(200, 1, tts_of(t, 18)) + bytes(33)
    hbh = hop_by_hop(NH_ROUTING, stack, before=pad_options(4))
    inner = ipv6(SRC, DST, NH_HOP_BY_HOP, hbh + srh(NH_NONE, (DST,), PtTlv(11, 0, t - 1_000_000, 7, 8).pack()))
    packets.append(encapsulate(inner, SINK, COLLECTOR, PtTlv(21, 0, t + 1_000_000)))
    # no SRH at all
    inner = ipv6(SRC, DST, NH_HOP_BY_HOP, hop_by_hop(NH_NONE, stack))
    packets.append(encapsulate(inner, SINK, COLLECTOR, PtTlv(21, 0, t + 2_000_000)))
    # the sink's TLV in an outer SRH with segments
    inner = probe(SRC, DST, (DST,), PtTlv(11, 0, t, 7, 9), [stack[:3]])
    outer_srh = srh(NH_IPV6, ("fcbb:bb00:c::", "fcbb:bb00:d::"), PtTlv(21, 0, t + 3_000_000).pack())
    packets.append(ipv6(SINK, COLLECTOR, NH_ROUTING, outer_srh + inner))
    return [ethernet(p) for p in packets]


def malformed() -> list[bytes]:
    good = walked(3, 1)
    inner = 40 + 24  # inner IPv6 header offset in the encapsulated packet
    hbh = inner + 40
    frames = [good]
    bad = bytearray(good)
    bad[hbh + 3] = 35  # Opt Data Len not a multiple of 3
    frames.append(bytes(bad))
    bad = bytearray(good)
    bad[hbh + 3] = 39  # option runs past the HbH header
    frames.append(bytes(bad))
    bare = walked(0, 2)[inner:]
    tlv_at = 40 + 40 + 8 + 32  # IPv6, HbH, SRH fixed, 2 SIDs
    bad = bytearray(bare)
    bad[tlv_at] = TLV_PADN  # no PT TLV in the SRH
    frames.append(bytes(bad))
    bad = bytearray(bare)
    bad[tlv_at + 1] = 12  # PT TLV with the wrong length
    frames.append(bytes(bad))
    frames.append(good[: len(good) - 10])  # truncated frame
    frames.append(good)
    return [ethernet(f) for f in frames]


def not_pt() -> list[bytes]:
    """Traffic a collector interface also sees, built with scapy."""
    ioam = HBHOptUnknown(otype=0x31, optdata=bytes(10))  # IOAM option, not PT
    plain_srh = IPv6ExtHdrSegmentRouting(addresses=[DST], nh=NH_UDP)
    return [
        bytes(Ether() / IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=1, dport=2)),
        bytes(Ether() / ARP(psrc="192.0.2.1", pdst="192.0.2.2")),
        bytes(Ether() / IPv6(src=SRC, dst=DST) / UDP(sport=1, dport=2)),
        bytes(Ether() / IPv6(src=SRC, dst=DST) / IPv6ExtHdrHopByHop(options=[ioam]) / UDP()),
        bytes(Ether() / IPv6(src=SRC, dst=DST) / plain_srh / UDP()),
    ]


def main() -> int:
    OUT.mkdir(exist_ok=True)
    write_generated("encap.pcap", 40, seed=1)  # ptc generate pcaps/encap.pcap -c 40 --seed 1
    write_generated("bare.pcap", 20, seed=2, encap=False)  # ptc generate pcaps/bare.pcap -c 20 --seed 2 --bare
    write_pcap("mcd-0-to-14.pcap", LINKTYPE_ETHERNET, [ethernet(walked(k, k + 1)) for k in range(15)])
    write_pcap("srh-variants.pcap", LINKTYPE_ETHERNET, srh_variants())
    write_pcap("testbed-vpp.pcap", LINKTYPE_ETHERNET, testbed())
    vlan = [ethernet(walked(2, 1), vlans=[(0x8100, 100)]), ethernet(walked(2, 2), vlans=[(0x88A8, 200), (0x8100, 100)])]
    write_pcap("vlan.pcap", LINKTYPE_ETHERNET, vlan)
    write_pcap("cooked-sll.pcap", LINKTYPE_LINUX_SLL, [linux_sll(walked(2, k)) for k in (1, 2)])
    write_pcap("cooked-sll2.pcap", LINKTYPE_LINUX_SLL2, [linux_sll2(walked(2, k)) for k in (1, 2)])
    write_pcap("raw-ipv6.pcap", LINKTYPE_RAW, [walked(2, k) for k in (1, 2)])
    write_pcap("malformed.pcap", LINKTYPE_ETHERNET, malformed())
    mixed = not_pt() + [ethernet(p) for _, p in generate(5, seed=3)]
    writer = PcapNgWriter(str(OUT / "mixed.pcapng"))
    for i, frame in enumerate(mixed):
        packet = Ether(frame)
        packet.time = (T0 + i * 1_000_000) / 1e9
        writer.write(packet)
    writer.close()
    print(f"mixed.pcapng: {len(mixed)} frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
