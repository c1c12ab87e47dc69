"""Encode -> decode -> equal, over the probe variants, and against scapy-built probes."""

from __future__ import annotations

import pytest
from pt_scapy import pt_tlv, scapy_probe

from pt_collector import Decoder, Hop, Node, Record
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
from pt_collector.codec.wire import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_RAW,
    NH_HOP_BY_HOP,
    NH_IPV6,
    NH_NONE,
    NH_ROUTING,
    NH_UDP,
)

SRC, SINK, COLLECTOR = "2001:db8:1::1", "2001:db8:e::1", "2001:db8:c011::1"
T_SRC, T_SINK = 1_700_000_000_123_456_789, 1_700_000_000_143_456_789


def expected(segments, mcds, *, sink=True, hop_limit=64, tc=0, fl=0, session=3, seq=9, capture_ns=0):
    """The record the schema defines for a probe built from these inputs (mcds newest first)."""
    hops = tuple(Hop(i, load, tts, None) for i, load, tts in reversed(mcds))
    return Record(
        1, capture_ns, session, seq, Node(SRC, 11, 1, T_SRC),
        Node(SINK, 21, 2, T_SINK) if sink else None, segments[-1] if segments else "fcbb:bb00:9::",
        tuple(segments), hops, T_SINK - T_SRC if sink else None, tc, fl, hop_limit,
    )  # fmt: skip


def build(segments, mcds, *, sink=True, **kw):
    dst = segments[-1] if segments else "fcbb:bb00:9::"
    packet = probe(SRC, dst, segments, PtTlv(11, 1, T_SRC, 3, 9), [mcd(*m) for m in mcds], **kw)
    return encapsulate(packet, SINK, COLLECTOR, PtTlv(21, 2, T_SINK)) if sink else packet


@pytest.mark.parametrize("count", range(13))
@pytest.mark.parametrize("sink", [True, False], ids=["encap", "bare"])
def test_mcd_counts(count, sink):
    mcds = [(100 + k, k % 16, (7 * k + 1) % 256) for k in range(count)]
    segments = ("fcbb:bb00:2::", "fcbb:bb00:3::", "fcbb:bb00:4::")
    record = Decoder().decode(ethernet(build(segments, mcds, sink=sink)))
    assert record == expected(segments, mcds, sink=sink)


@pytest.mark.parametrize("segments", [(), ("fcbb::1",), tuple(f"fcbb::{k}" for k in range(1, 9))])
def test_segment_counts(segments):
    mcds = [(5, 0, 9)]
    assert Decoder().decode(ethernet(build(segments, mcds))) == expected(segments, mcds)


PADN, PAD1, HMAC = bytes((4, 2, 0, 0)), b"\x00" * 4, bytes((5, 38)) + bytes(38)


@pytest.mark.parametrize(
    "before, after",
    [(PADN, PADN), (PAD1, PAD1), (HMAC, b""), (b"", bytes((200, 6)) + bytes(6))],
    ids=["padn", "pad1", "hmac", "unknown-tlv"],
)
def test_srh_tlvs_beside_the_pt_tlv(before, after):
    segments, mcds = ("fcbb::1", "fcbb::2"), [(7, 3, 200)]
    frame = ethernet(build(segments, mcds, srh_tlvs_before=before, srh_tlvs_after=after))
    assert Decoder().decode(frame) == expected(segments, mcds)


def test_header_fields_and_payload_after_the_srh():
    segments, mcds = ("fcbb::1",), [(1, 15, 255)]
    frame = build(
        segments, mcds, hop_limit=3, traffic_class=0xB8, flow_label=0xABCDE,
        payload_next_header=NH_UDP, payload=bytes(12),
    )  # fmt: skip
    assert Decoder().decode(ethernet(frame)) == expected(segments, mcds, hop_limit=3, tc=0xB8, fl=0xABCDE)


@pytest.mark.parametrize("opt_data_len", [0, 3, 12, 48, 60])
def test_any_opt_data_len_that_is_a_multiple_of_3(opt_data_len):
    mcds = [(9, 1, 2)] if opt_data_len else []
    segments = ("fcbb::1",)
    frame = ethernet(build(segments, mcds, opt_data_len=opt_data_len))
    assert Decoder().decode(frame) == expected(segments, mcds)


def test_pt_option_after_other_hbh_options():
    stack = mcd(9, 1, 2) + bytes(33)
    for before in (pad_options(1), pad_options(4), bytes((0x3E, 2, 1, 2))):  # Pad1, PadN, an unknown option
        hbh = hop_by_hop(NH_ROUTING, stack, before=before)
        inner = ipv6(SRC, "fcbb::1", NH_HOP_BY_HOP, hbh + srh(NH_NONE, ("fcbb::1",), PtTlv(11, 1, T_SRC, 3, 9).pack()))
        record = Decoder().decode(ethernet(encapsulate(inner, SINK, COLLECTOR, PtTlv(21, 2, T_SINK))))
        assert record == expected(("fcbb::1",), [(9, 1, 2)])


def test_more_than_twelve_midpoints_keep_the_newest_twelve():
    packet = build(("fcbb::1",), [], sink=False)
    for k in range(15):
        packet = push_mcd(packet, mcd(100 + k, 0, k + 1))
    record = Decoder().decode(ethernet(packet))
    assert [h.if_id for h in record.hops] == list(range(103, 115))


def test_probe_without_srh_has_no_source_tlv():
    inner = ipv6(SRC, "fcbb::9", NH_HOP_BY_HOP, hop_by_hop(NH_NONE, mcd(4, 0, 8) + bytes(33)))
    record = Decoder(tts_shift=18).decode(ethernet(encapsulate(inner, SINK, COLLECTOR, PtTlv(21, 2, T_SINK))))
    assert record.src == Node(SRC, 0, 0, 0)
    assert (record.session_id, record.sequence, record.segments, record.e2e_ns) == (0, 0, (), None)
    assert record.hops == (Hop(4, 0, 8, None),)
    assert record.sink == Node(SINK, 21, 2, T_SINK)


def test_outer_srh_with_segments_and_the_vpp_tlv_over_the_last_sid():
    inner = build(("fcbb::1",), [(3, 0, 1)], sink=False)
    with_segments = srh(NH_IPV6, ("fcbb:c::1", "fcbb:c::2"), PtTlv(21, 2, T_SINK).pack())
    assert Decoder().decode(ethernet(ipv6(SINK, COLLECTOR, NH_ROUTING, with_segments + inner))).sink == Node(
        SINK, 21, 2, T_SINK
    )
    # early VPP: the TLV written over the last SID (Segment List[n-1]), no TLV area
    buggy = bytearray(srh(NH_IPV6, ("fcbb:c::1", "fcbb:c::2"), b""))
    buggy[8 + 16 : 8 + 32] = PtTlv(21, 2, T_SINK).pack()
    record = Decoder().decode(ethernet(ipv6(SINK, COLLECTOR, NH_ROUTING, bytes(buggy) + inner)))
    assert record.sink == Node(SINK, 21, 2, T_SINK)


def test_plain_srv6_encapsulation_of_a_probe_has_no_sink():
    inner = build(("fcbb::1",), [(3, 0, 1)], sink=False)
    outer = ipv6(SINK, COLLECTOR, NH_ROUTING, srh(NH_IPV6, ("fcbb:c::1",), bytes(8)) + inner)
    assert Decoder().decode(ethernet(outer)) == expected(("fcbb::1",), [(3, 0, 1)], sink=False)


@pytest.mark.parametrize(
    "linktype, frame_of",
    [
        (LINKTYPE_ETHERNET, lambda p: ethernet(p, vlans=[(0x8100, 10)])),
        (LINKTYPE_ETHERNET, lambda p: ethernet(p, vlans=[(0x88A8, 20), (0x8100, 10)])),
        (LINKTYPE_LINUX_SLL, linux_sll),
        (LINKTYPE_LINUX_SLL2, linux_sll2),
        (LINKTYPE_RAW, lambda p: p),
        (LINKTYPE_IPV6, lambda p: p),
    ],
    ids=["802.1q", "802.1ad", "sll", "sll2", "raw", "ipv6"],
)
def test_link_types(linktype, frame_of):
    segments, mcds = ("fcbb::1",), [(3, 0, 1), (4, 0, 2)]
    assert Decoder().decode(frame_of(build(segments, mcds)), 42, linktype) == expected(segments, mcds, capture_ns=42)


@pytest.mark.parametrize("sink", [True, False])
def test_scapy_built_probes_decode_to_the_same_record(sink):
    segments, mcds = ("fcbb:bb00:2::", "fcbb:bb00:3::"), [(62, 0, 184), (52, 1, 184), (21, 2, 184)]
    sec, nsec = divmod(T_SRC, 10**9)
    sink_sec, sink_nsec = divmod(T_SINK, 10**9)
    frame = scapy_probe(
        SRC, segments[-1], segments, pt_tlv(11, 1, sec, nsec, 3, 9), mcds,
        sink=(SINK, pt_tlv(21, 2, sink_sec, sink_nsec)) if sink else None, hop_limit=61, tc=4, fl=77,
    )  # fmt: skip
    record = Decoder().decode(frame)
    assert record == expected(segments, mcds, sink=sink, hop_limit=61, tc=4, fl=77)
    ours = ethernet(build(segments, mcds, sink=sink, hop_limit=61, traffic_class=4, flow_label=77))
    assert ours[14:] == frame[14:]  # the encoder twin writes the bytes scapy writes
