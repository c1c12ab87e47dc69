"""Property tests: the decoder's contract holds for any input.

For any bytes and any link type, decode returns a Record or None, or raises
DecodeError: nothing else. And the layout cache never changes an answer: a
decoder that has seen other frames answers exactly like a fresh one.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pt_collector import DecodeError, Decoder, Hop, Node, Record
from pt_collector.codec.encode import PtTlv, encapsulate, ethernet, linux_sll, linux_sll2, mcd, probe
from pt_collector.codec.wire import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW

LINKTYPES = [LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW, 0, 147]
FRAMERS = {LINKTYPE_ETHERNET: ethernet, LINKTYPE_LINUX_SLL: linux_sll, LINKTYPE_LINUX_SLL2: linux_sll2,
           LINKTYPE_RAW: lambda p: p}  # fmt: skip
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

addresses = st.integers(0, 2**128 - 1).map(lambda n: str(__import__("ipaddress").IPv6Address(n)))
mcd_fields = st.tuples(st.integers(1, 4095), st.integers(0, 15), st.integers(0, 255))
times = st.integers(0, 2**32 - 1).flatmap(lambda s: st.integers(0, 999_999_999).map(lambda n: s * 10**9 + n))


@st.composite
def probes(draw):
    """(frame, linktype, the record the schema defines for it)."""
    src, dst, sink = draw(addresses), draw(addresses), draw(addresses)
    segments = tuple(draw(st.lists(addresses, max_size=5)))
    mcds = draw(st.lists(mcd_fields, max_size=12))
    slots = draw(st.integers(len(mcds), 14))
    src_if, sink_if = draw(mcd_fields), draw(mcd_fields)
    t_src, t_sink = draw(times), draw(times)
    session, seq = draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 0xFFFF))
    tc, fl, hl = draw(st.integers(0, 255)), draw(st.integers(0, 0xFFFFF)), draw(st.integers(0, 255))
    packet = probe(
        src, dst, segments, PtTlv(src_if[0], src_if[1], t_src, session, seq), [mcd(*m) for m in mcds],
        opt_data_len=3 * slots, traffic_class=tc, flow_label=fl, hop_limit=hl,
    )  # fmt: skip
    encapsulated = draw(st.booleans())
    if encapsulated:
        packet = encapsulate(packet, sink, "2001:db8:c::1", PtTlv(sink_if[0], sink_if[1], t_sink))
    linktype = draw(st.sampled_from(sorted(FRAMERS)))
    capture_ns = draw(st.integers(0, 2**63))
    record = Record(
        1, capture_ns, session, seq, Node(src, src_if[0], src_if[1], t_src),
        Node(sink, sink_if[0], sink_if[1], t_sink) if encapsulated else None, dst, segments,
        tuple(Hop(i, load, tts, None) for i, load, tts in reversed(mcds)),
        t_sink - t_src if encapsulated else None, tc, fl, hl,
    )  # fmt: skip
    return FRAMERS[linktype](packet), linktype, capture_ns, record


def outcome(decoder: Decoder, frame: bytes, linktype: int) -> object:
    try:
        return decoder.decode(frame, 0, linktype)
    except DecodeError as exc:
        assert exc.key and isinstance(exc.offset, int)
        return exc.key


@SETTINGS
@given(probes())
def test_round_trip(case):
    frame, linktype, capture_ns, record = case
    assert Decoder().decode(frame, capture_ns, linktype) == record


@SETTINGS
@given(st.binary(max_size=300), st.sampled_from(LINKTYPES))
def test_random_bytes_only_decode_error(frame, linktype):
    result = outcome(Decoder(tts_shift=18), frame, linktype)
    assert result is None or isinstance(result, (Record, str))


@st.composite
def mutated(draw):
    frame, linktype, _, _ = draw(probes())
    data = bytearray(frame)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "truncate", "extend", "set-length-byte"]))
        if kind == "flip" and data:
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate" and data:
            del data[draw(st.integers(0, len(data) - 1)) :]
        elif kind == "extend":
            data += draw(st.binary(min_size=1, max_size=40))
        elif data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.sampled_from([0, 1, 2, 3, 4, 35, 36, 128, 255]))
    return bytes(data), linktype


@SETTINGS
@given(st.lists(st.one_of(mutated(), probes().map(lambda c: (c[0], c[1]))), min_size=1, max_size=12))
def test_mutated_frames_and_the_layout_cache(frames):
    warm = Decoder(tts_shift=16)
    for frame, linktype in frames + frames:  # twice: the second pass takes the cached layouts
        result = outcome(warm, frame, linktype)
        assert result is None or isinstance(result, (Record, str))
        assert result == outcome(Decoder(tts_shift=16), frame, linktype)


def test_cache_keeps_working_past_its_bound(monkeypatch):
    import pt_collector.codec.decode as decode_module

    monkeypatch.setattr(decode_module, "MAX_LAYOUTS", 4)
    decoder = Decoder()
    frames = [ethernet(probe(f"2001:db8::{n}", "fcbb::1", ("fcbb::1",), PtTlv(1, 0, n, 1, n))) for n in range(1, 12)]
    first = [decoder.decode(f) for f in frames]
    assert [r.src.addr for r in first] == [f"2001:db8::{n}" for n in range(1, 12)]
    assert [decoder.decode(f) for f in frames] == first


@SETTINGS
@given(probes(), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=30))
def test_same_length_edits_never_hit_a_wrong_layout(case, edits):
    """Frames of one length that differ in any byte: the cache must tell them apart."""
    frame, linktype, _, _ = case
    warm = Decoder()
    warm.decode(frame, 0, linktype)
    for at, value in edits:
        data = bytearray(frame)
        data[at % len(data)] = value
        assert outcome(warm, bytes(data), linktype) == outcome(Decoder(), bytes(data), linktype)


def test_every_single_byte_edit_of_the_bundled_captures(pcaps):
    """Each byte of the first frame of every bundled capture, set to a few values."""
    from pt_collector.capture.pcap import read_capture

    for path in sorted(pcaps.iterdir()):
        if path.suffix not in (".pcap", ".pcapng"):
            continue
        linktype, _, frame = next(iter(read_capture(path)))
        warm = Decoder(tts_shift=18)
        for at in range(len(frame)):
            for value in {0, 1, 4, 0x32, 128, 255, frame[at] ^ 0x10}:
                data = bytearray(frame)
                data[at] = value
                assert outcome(warm, bytes(data), linktype) == outcome(Decoder(tts_shift=18), bytes(data), linktype), (
                    path.name,
                    at,
                    value,
                )
