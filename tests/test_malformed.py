"""Frames that are not PT, and PT frames that are inconsistent."""

from __future__ import annotations

import pytest

from pt_collector import DecodeError, Decoder
from pt_collector.codec.encode import PtTlv, encapsulate, ethernet, hop_by_hop, ipv6, mcd, probe, srh
from pt_collector.codec.wire import LINKTYPE_ETHERNET, NH_HOP_BY_HOP, NH_IPV6, NH_NONE, NH_ROUTING, NH_UDP

SRC, SINK, COLLECTOR = "2001:db8:1::1", "2001:db8:e::1", "2001:db8:c::1"
INNER = 40 + 24  # inner IPv6 header in an encapsulated probe (outer SRH without segments)
HBH = INNER + 40


def bare() -> bytes:
    return probe(SRC, "fcbb::2", ("fcbb::1", "fcbb::2"), PtTlv(11, 0, 10**18, 1, 2), [mcd(5, 0, 7)])


def encap() -> bytes:
    return encapsulate(bare(), SINK, COLLECTOR, PtTlv(21, 0, 10**18 + 5))


def edit(packet: bytes, offset: int, value: int) -> bytes:
    data = bytearray(packet)
    data[offset] = value
    return bytes(data)


def decode(packet: bytes) -> object:
    return Decoder().decode(ethernet(packet))


NOT_PT = {
    "ipv4": ethernet(b"\x45" + bytes(19), ethertype=0x0800),
    "arp": ethernet(bytes(28), ethertype=0x0806),
    "ipv6-udp": ethernet(ipv6(SRC, "fcbb::2", NH_UDP, bytes(8))),
    "ioam-hbh": ethernet(ipv6(SRC, "fcbb::2", NH_HOP_BY_HOP, bytes((NH_NONE, 0, 0x31, 4, 0, 0, 0, 0)))),
    "plain-srv6": ethernet(ipv6(SRC, "fcbb::2", NH_ROUTING, srh(NH_UDP, ("fcbb::2",), bytes(8)) + bytes(8))),
    "srv6-encap-of-ipv6": ethernet(
        ipv6(SINK, COLLECTOR, NH_ROUTING, srh(NH_IPV6, ("fcbb::2",), bytes(8)) + ipv6(SRC, "fcbb::2", NH_UDP, bytes(8)))
    ),
    "short-ethernet": b"\x00" * 10,
    "truncated-ipv6-header": ethernet(bare()[:30]),
    "version-4-in-ipv6-ethertype": ethernet(edit(bare(), 0, 0x45)),
    "empty": b"",
}


@pytest.mark.parametrize("frame", NOT_PT.values(), ids=NOT_PT.keys())
def test_not_pt_frames_decode_to_none(frame):
    assert Decoder().decode(frame, 0, LINKTYPE_ETHERNET) is None


def test_unknown_link_type_is_not_pt():
    assert Decoder().decode(ethernet(encap()), 0, 147) is None


MALFORMED = {
    "opt-data-len-not-multiple-of-3": (edit(encap(), HBH + 3, 35), "hbh-pt: opt data len not a multiple of 3"),
    "pt-option-past-hbh": (edit(encap(), HBH + 3, 39), "hbh-pt: option runs past the header"),
    "hbh-past-packet": (edit(bare(), 41, 200), "hbh: header runs past the packet"),
    "no-pt-tlv": (edit(bare(), 80 + 8 + 32, 4), "srh: no PT TLV"),
    "pt-tlv-length": (edit(bare(), 80 + 8 + 32 + 1, 12), "pt-tlv: length is not 14"),
    "srh-tlv-past-header": (edit(bare(), 80 + 8 + 32 + 1, 200), "srh: TLV runs past the header"),
    "segments-past-srh": (edit(bare(), 80 + 4, 9), "srh: segment list runs past the header"),
    "truncated": (encap()[:-10], "srh: truncated frame"),
    "inner-payload-length-past-outer": (
        edit(encap(), INNER + 5, 255),
        "inner-ipv6: payload length runs past the enclosing packet",
    ),
    "sink-tlv-then-no-probe": (
        ipv6(
            SINK,
            COLLECTOR,
            NH_ROUTING,
            srh(NH_IPV6, (), PtTlv(1, 0, 5).pack()) + ipv6(SRC, "fcbb::2", NH_UDP, bytes(8)),
        ),
        "encapsulation: PT TLV without an inner probe",
    ),
    "sink-tlv-then-not-ipv6": (
        ipv6(SINK, COLLECTOR, NH_ROUTING, srh(NH_UDP, (), PtTlv(1, 0, 5).pack()) + bytes(8)),
        "encapsulation: PT TLV without an inner probe",
    ),
}


@pytest.mark.parametrize("packet, key", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_pt_frames_raise_decode_error(packet, key):
    with pytest.raises(DecodeError) as raised:
        decode(packet)
    assert raised.value.key == key
    assert 0 <= raised.value.offset < len(packet) + 14
    assert str(raised.value).startswith(f"{raised.value.layer} at byte {raised.value.offset}: ")


def test_the_same_malformed_frame_twice_raises_twice():
    decoder = Decoder()
    packet = ethernet(edit(encap(), HBH + 3, 35))
    for _ in range(2):
        with pytest.raises(DecodeError):
            decoder.decode(packet)


def test_trailing_bytes_after_the_packet_are_ignored():
    """Ethernet pads short frames: bytes past the IPv6 payload length are not the probe's."""
    assert Decoder().decode(ethernet(encap()) + bytes(20)) == Decoder().decode(ethernet(encap()))


def test_hbh_without_pt_inside_a_sink_encapsulation_is_malformed():
    inner = ipv6(SRC, "fcbb::2", NH_HOP_BY_HOP, hop_by_hop(NH_NONE, b"", before=bytes((0x3E, 1, 0)))[:0] + bytes(8))
    with pytest.raises(DecodeError, match="PT TLV without an inner probe"):
        decode(ipv6(SINK, COLLECTOR, NH_ROUTING, srh(NH_IPV6, (), PtTlv(1, 0, 5).pack()) + inner))
