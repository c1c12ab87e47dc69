"""Decoding the real values of pt-wire-format.md section 5."""

from __future__ import annotations

from pt_collector import Decoder
from pt_collector.codec.encode import PtTlv, encapsulate, ethernet, probe
from pt_collector.codec.wire import ns_to_t64, t64_to_ns

SRC, DST, SINK = "2001:db8:1::1", "fcbb:bb00:1:f0ef::", "2001:db8:e::1"


def row_frame(stack_hex: str, src_t64: int, sink_t64: int) -> bytes:
    mcds = [bytes.fromhex(m) for m in stack_hex.split()]
    inner = probe(SRC, DST, ["fcbb:bb00:2::", DST], PtTlv(11, 0, t64_to_ns(src_t64), 1, 7), mcds, hop_limit=250)
    return ethernet(encapsulate(inner, SINK, "2001:db8:c::1", PtTlv(21, 0, t64_to_ns(sink_t64))))


def test_row_one_interfaces_and_tts_in_path_order():
    record = Decoder().decode(row_frame("03e029 02b02e 016032", 7049743939458283446, 7049743940258383836))
    assert [h.if_id for h in record.hops] == [22, 43, 62]  # stack order is 62, 43, 22
    assert [h.tts for h in record.hops] == [50, 46, 41]
    assert all(h.if_load == 0 and h.time_ns is None for h in record.hops)


def test_row_one_800ms_path_is_not_reconstructed():
    # 800 ms between source and sink is far more than one TTS wrap (67 ms at shift 18)
    record = Decoder(tts_shift=18).decode(row_frame("03e029 02b02e 016032", 7049743939458283446, 7049743940258383836))
    assert [h.time_ns for h in record.hops] == [None, None, None]
    assert record.e2e_ns == 800_100_390


def test_row_three_end_to_end_delay_and_midpoint_time():
    record = Decoder(tts_shift=18).decode(
        row_frame("03e0b8 0340b8 0150b8", 7057539335188787818, 7057539335209112773), capture_ns=5
    )
    assert record.e2e_ns == 20_324_955  # 20.324955 ms, exact
    assert [h.if_id for h in record.hops] == [21, 52, 62]
    for hop in record.hops:
        assert hop.tts == 184
        assert ns_to_t64(hop.time_ns) == 7057539335198867456
        assert divmod(hop.time_ns, 10**9) == (1643211426, 115343360)
        assert hop.time_ns - record.src.time_ns == 10_079_638
        assert record.sink.time_ns - hop.time_ns == 10_245_317
    assert record.src.time_ns == 1643211426105263722
    assert record.sink.time_ns == 1643211426125588677
    assert (record.session_id, record.sequence, record.hop_limit, record.capture_ns) == (1, 7, 250, 5)
    assert record.segments == ("fcbb:bb00:2::", DST)


def test_row_two_tts_values():
    record = Decoder().decode(row_frame("03e047 034046 015046", 0, 7057538678452034330))
    assert [(h.if_id, h.tts) for h in record.hops] == [(21, 70), (52, 70), (62, 71)]


def test_schema_example_encodes_field_for_field():
    """The JSON of the record-schema.md example, in the doc's field order."""
    import json

    from pt_collector.codec.record import json_encoder

    frame = row_frame("03e0b8 0340b8 0150b8", 7057539335188787818, 7057539335209112773)
    record = Decoder(tts_shift=18).decode(frame, capture_ns=1643211426125601000)
    doc = json.loads(json_encoder.encode(record))
    assert list(doc) == [
        "v", "capture_ns", "session_id", "sequence", "src", "sink", "dst", "segments", "hops",
        "e2e_ns", "traffic_class", "flow_label", "hop_limit",
    ]  # fmt: skip
    assert doc["src"] == {"addr": SRC, "if_id": 11, "if_load": 0, "time_ns": 1643211426105263722}
    assert doc["sink"] == {"addr": SINK, "if_id": 21, "if_load": 0, "time_ns": 1643211426125588677}
    assert doc["hops"][0] == {"if_id": 21, "if_load": 0, "tts": 184, "time_ns": 1643211426115343360}
    assert doc["v"] == 1 and doc["e2e_ns"] == 20324955
