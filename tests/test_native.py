"""The compiled engine (pt_collector._native) against the pure-Python one, byte for byte.

Same frames through both: the encoded records (JSON lines and msgpack, in input order and per source node
as the Kafka messages are cut) must be the same bytes, and the counters (frames, decoded, not PT,
malformed by `layer: reason`) the same numbers. Inputs: every bundled capture, the fuzz corpus,
hypothesis-generated probes and mutations, and many random mutations of realistic traffic
(PTC_NATIVE_MUTATIONS, default 20,000; `make bench-native` runs a million), under several TTS shifts and
per-source shifts. Skipped, saying so, when the module is not built (pip install without Rust).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from native_diff import SHIFTS, mutations, native_engine, native_outcome, python_engine, realistic
from test_properties import LINKTYPES, SETTINGS, mutated, probes

from pt_collector.capture.pcap import CaptureError, PcapWriter, read_capture
from pt_collector.codec.encode import PtTlv, encapsulate, ethernet, mcd, probe
from pt_collector.codec.record import Record, json_encoder, msgpack_encoder

if os.environ.get("PTC_REQUIRE_NATIVE"):  # CI builds it: a missing module there is a failure, not a skip
    import pt_collector._native as native
else:
    native = pytest.importorskip("pt_collector._native", reason="pt_collector._native is not built (no Rust toolchain)")

CORPUS = sorted(p for p in (Path(__file__).parent / "corpus").iterdir() if p.is_file())
FORMATS = ("json", "msgpack")
MUTATIONS = int(os.environ.get("PTC_NATIVE_MUTATIONS", "20000"))


def assert_same(frames, tts_shift=None, shifts=None, fmts=FORMATS):
    for fmt in fmts:
        expected = python_engine(frames, tts_shift, shifts or {}, fmt)
        got = native_engine(frames, tts_shift, shifts or {}, fmt)
        if got != expected:  # the first differing record says more than two long byte strings
            for i, (a, b) in enumerate(zip(expected.data.splitlines(), got.data.splitlines(), strict=False)):
                assert b == a, f"{fmt}, record {i}"
        assert asdict(got) == asdict(expected), fmt
    return expected


def captures(pcaps: Path) -> list[Path]:
    return sorted(p for p in pcaps.iterdir() if p.suffix in (".pcap", ".pcapng"))


@pytest.mark.parametrize(("tts_shift", "shifts"), SHIFTS)
def test_every_bundled_capture(pcaps, tts_shift, shifts):
    decoded = 0
    for path in captures(pcaps):
        decoded += assert_same(list(read_capture(path)), tts_shift, shifts).decoded
    assert decoded > 100  # the bundled captures are mostly probes: the comparison saw records


def decode_file(path: Path, decoder, chunk: int | None = None, max_frames: int | None = None):
    """All batches of a capture through decode_capture, whole or fed `chunk` bytes at a time; and the error."""
    data = path.read_bytes()
    reader, batches, size = native.CaptureReader(), [], chunk or len(data)
    while True:
        end = min(len(data), reader.offset + size)
        batch, used, error = decoder.decode_capture(reader, data[reader.offset : end], end == len(data), max_frames)
        batches.append(batch)
        if error is not None or (reader.offset == len(data) and batch.frames < (max_frames or 1 << 62)):
            return batches, error
        if used == 0:  # a record larger than the chunk: read a bigger one
            size *= 2


def test_capture_files_read_in_place_whole_or_in_chunks(pcaps):
    for path in captures(pcaps):
        frames = list(read_capture(path))
        for fmt in FORMATS:
            expected = python_engine(frames, 18, {}, fmt)
            for chunk, max_frames in ((None, None), (64, None), (1000, 3), (None, 1)):
                batches, error = decode_file(path, native.Decoder(18, None, fmt), chunk, max_frames)
                assert error is None, (path, error)
                assert b"".join(b.data for b in batches) == expected.data, (path, chunk, max_frames)
                assert sum(b.frames for b in batches) == len(frames)
                assert sum(b.not_pt for b in batches) == expected.not_pt


def test_capture_errors_are_pcap_py_messages_after_the_frames_before_the_damage(pcaps, tmp_path):
    whole = (pcaps / "encap.pcap").read_bytes()
    cases = {
        "cut.pcap": whole[:-7],
        "empty.pcap": b"",
        "short.pcap": b"\xd4\xc3",
        "gif.pcap": b"GIF89a-not-a-capture",
        "header.pcap": whole[:20],
        "huge-record.pcap": whole[:24] + b"\0" * 8 + (10**6).to_bytes(4, "little") + b"\0" * 4,
        "cut.pcapng": (pcaps / "mixed.pcapng").read_bytes()[:-5],
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        frames, message = [], None
        try:
            frames.extend(read_capture(path))
        except CaptureError as exc:
            message = str(exc).removeprefix(f"{path}: ")
        assert message is not None, name
        batches, error = decode_file(path, native.Decoder(None, None, "json"))
        assert error == message, name
        assert b"".join(b.data for b in batches) == python_engine(frames, None, {}, "json").data, name


@pytest.mark.parametrize(("tts_shift", "shifts"), SHIFTS)
def test_the_fuzz_corpus_under_every_link_type(tts_shift, shifts):
    frames = [(linktype, 1_700_000_000 * 10**9, path.read_bytes()) for path in CORPUS for linktype in LINKTYPES]
    outcome = assert_same(frames, tts_shift, shifts)
    assert outcome.malformed  # the corpus is made of edge cases: some are malformed


@pytest.mark.parametrize(("tts_shift", "shifts"), SHIFTS)
def test_realistic_traffic_and_its_mutations(tts_shift, shifts):
    frames = realistic(3000, sources=64)
    outcome = assert_same(frames, tts_shift, shifts)
    assert outcome.decoded == 3000 and len(outcome.groups) == 64
    if tts_shift == 18:  # the generator stamps TTS at shift 18: the midpoint times are reconstructed
        assert b'"time_ns":null' not in outcome.data
    hostile = list(mutations(frames, MUTATIONS // len(SHIFTS)))
    outcome = assert_same(hostile, tts_shift, shifts)
    assert outcome.decoded and outcome.not_pt and len(outcome.malformed) > 10  # every verdict is exercised


@SETTINGS
@given(st.lists(probes(), min_size=1, max_size=8), st.sampled_from(SHIFTS))
def test_hypothesis_probes(cases, shift):
    assert_same([(linktype, ns, frame) for frame, linktype, ns, _ in cases], *shift)


@SETTINGS
@given(
    st.lists(st.one_of(mutated(), st.tuples(st.binary(max_size=200), st.sampled_from(LINKTYPES))), max_size=8),
    st.sampled_from(SHIFTS),
)
def test_hypothesis_mutations_and_random_bytes(cases, shift):
    assert_same([(linktype, 5, frame) for frame, linktype in cases], *shift)


def test_address_text_is_pythons():
    """ipaddress's compressed form: longest zero run (the first of equal ones), a lone zero kept, IPv4-mapped."""
    texts = ["::", "::1", "1::", "1:0:2:0:0:3:0:0", "1:0:0:2:0:0:3:4", "::ffff:1.2.3.4", "::1.2.3.4",
             "abcd:ef01:2345:6789:abcd:ef01:2345:6789", "fe80::1:0:0:0:1", "2001:db8:0:1:1:1:1:1"]  # fmt: skip
    frames = []
    for n, text in enumerate(texts):
        packet = probe(text, texts[-1 - n], (text, "::"), PtTlv(5, 1, 10**18, 3, n), [mcd(1, 2, 3)])
        frames.append((1, n, ethernet(encapsulate(packet, text, "2001:db8:c::1", PtTlv(7, 2, 10**18 + 5)))))
    outcome = assert_same(frames, 0)
    assert outcome.decoded == len(texts)


def test_batch_api():
    frames = realistic(40, sources=4)
    decoder = native.Decoder(18, {"2001:db8:2::/48": 20}, "msgpack")
    assert (decoder.tts_shift, decoder.format, decoder.shift_for("2001:db8:2::1")) == (18, "msgpack", 20)
    junk = (1, 0, b"\x00" * 60)
    batch = decoder.decode_frames([junk, *frames, (frames[0][1], bytearray(frames[0][2])), junk], linktype=1)
    assert (batch.frames, batch.decoded, batch.not_pt, batch.malformed, len(batch)) == (43, 41, 2, {}, 41)
    assert batch.indices() == list(range(1, 42))
    expected = python_engine([*frames, frames[0]], 18, {"2001:db8:2::/48": 20}, "msgpack")
    groups = batch.groups(ends=True)
    for (src, data, count, ends_bytes), (src2, value, count2) in zip(groups, expected.groups, strict=True):
        ends = memoryview(ends_bytes).cast("Q")
        assert (src, count) == (src2, count2) and native.msgpack_array_header(count) + data == value
        assert len(ends) == count and ends[-1] == len(data)
        assert msgpack_encoder.encode(msgspec.msgpack.decode(data[: ends[0]], type=Record)) == data[: ends[0]]
    two_tuples = native.Decoder(None).decode_frames([(ns, memoryview(f)) for _, ns, f in frames[:3]])
    assert two_tuples.format == "json" and two_tuples.decoded == 3
    assert two_tuples.data.count(b"\n") == 3 and json_encoder.encode(None) in two_tuples.data


def test_bad_settings_are_value_errors_as_in_the_python_decoder():
    with pytest.raises(ValueError, match=r"TTS shift must be 0\.\.24, not 25"):
        native.Decoder(25)
    with pytest.raises(ValueError, match=r"TTS shift must be 0\.\.24, not -1"):
        native.Decoder(None, {"fc00::/7": -1})
    with pytest.raises(ValueError, match="does not appear to be an IPv6 network"):
        native.Decoder(None, {"10.0.0.0/8": 1})
    with pytest.raises(ValueError, match="has host bits set"):
        native.Decoder(None, [("fc00::1/64", 1)])
    with pytest.raises(ValueError, match="unknown format"):
        native.Decoder(None, None, "xml")
    with pytest.raises(OverflowError):
        native.Decoder(None).decode_frames([(-1, b"")])


def test_pcap_writer_round_trip_through_decode_capture(tmp_path):
    frames = realistic(500, sources=8)
    path = tmp_path / "t.pcap"
    with open(path, "wb") as f:
        writer = PcapWriter(f, 1)
        for _, ns, frame in frames:
            writer.write(ns, frame)
    batches, error = decode_file(path, native.Decoder(18, None, "json"), chunk=4096)
    assert error is None and len(batches) > 10
    assert b"".join(b.data for b in batches) == python_engine(frames, 18, {}, "json").data
    merged = native_outcome(native.Decoder(18).decode_frames(frames), "json")
    assert merged.groups == python_engine(frames, 18, {}, "json").groups
