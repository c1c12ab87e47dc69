"""The fuzz corpus: every file in tests/corpus/ is one frame the decoder must survive.

The decoder's contract (docs/decoding.md): a Record, None (not PT) or
DecodeError, for any bytes under any link type, and a warm decoder answers
as a fresh one. tests/corpus/ holds hand-made edge cases
(`fuzz/make_corpus.py`) and the inputs the fuzzer (`make fuzz`,
`fuzz/fuzz_decode.py`) saved as crashes (`crash-<sha1>`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pt_collector import DecodeError, Decoder, Record
from pt_collector.codec.record import json_decoder, json_encoder
from pt_collector.codec.wire import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPES_RAW

CORPUS = Path(__file__).parent / "corpus"
FILES = sorted(p for p in CORPUS.iterdir() if p.is_file())
LINKTYPES = (LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, *LINKTYPES_RAW, 147)  # 147: unknown
DECODER_ARGS = ({}, {"tts_shift": 18}, {"tts_shift": 0, "shift_by_source": {"2001:db8::/32": 24}})


def verdict(decoder: Decoder, frame: bytes, linktype: int) -> Record | str | None:
    """A Record, None, or the DecodeError's key; anything else propagates and fails the test."""
    try:
        record = decoder.decode(frame, 1_700_000_000 * 10**9, linktype)
    except DecodeError as exc:
        return exc.key
    assert record is None or isinstance(record, Record)
    return record


@pytest.mark.parametrize("path", FILES, ids=[path.name for path in FILES])
def test_every_corpus_input_is_a_record_none_or_decode_error(path):
    frame = path.read_bytes()
    for args in DECODER_ARGS:
        warm = Decoder(**args)
        for linktype in LINKTYPES:
            got = verdict(warm, frame, linktype)
            assert verdict(warm, frame, linktype) == got  # warm now: the cached layout answers the same
            assert verdict(Decoder(**args), frame, linktype) == got
            if isinstance(got, Record):
                assert json_decoder.decode(json_encoder.encode(got)) == got


def test_the_corpus_holds_records_not_pt_and_every_hand_made_malformed_kind():
    """Without this, an emptied or unreadable corpus would pass the test above vacuously."""
    seen: set[str] = set()
    kinds = {"record": 0, "none": 0}
    for path in FILES:
        for linktype in LINKTYPES:
            got = verdict(Decoder(), path.read_bytes(), linktype)
            if isinstance(got, str):
                seen.add(got)
            else:
                kinds["record" if got else "none"] += 1
    assert kinds["record"] >= 10 and kinds["none"] >= 10, kinds
    assert {
        "hbh-pt: opt data len not a multiple of 3",
        "hbh-pt: option runs past the header",
        "hbh: header runs past the packet",
        "srh: no PT TLV",
        "pt-tlv: length is not 14",
        "srh: TLV runs past the header",
        "srh: segment list runs past the header",
        "srh: truncated frame",
        "inner-ipv6: payload length runs past the enclosing packet",
        "encapsulation: PT TLV without an inner probe",
        "outer-srh: TLV runs past the header",  # the sink's PT TLV broken: malformed, not "not PT"
    } <= seen, seen


def test_what_the_fuzzer_found():
    """An extension header after the HbH-PT, cut off at the frame's end: the walk read past it (a crash)."""
    for name in ("crash-7b6a4309beaf17980e953ba746dab764417359e0", "crash-hbh-then-dest-opts-at-frame-end"):
        frame = (CORPUS / name).read_bytes()
        keys = {verdict(Decoder(), frame, linktype) for linktype in (LINKTYPE_ETHERNET, *LINKTYPES_RAW)}
        assert any(isinstance(key, str) and key.startswith("ipv6-ext: ") for key in keys), (name, keys)
