"""Fuzz the decoder with atheris (libFuzzer for Python): `make fuzz`, docs/reliability.md.

The contract (docs/decoding.md): for any bytes, `Decoder.decode(frame,
capture_ns, linktype)` returns a Record, returns None (not PT) or raises
DecodeError (claims PT, inconsistent). Anything else is a crash, and so is
a record the JSON encoder cannot write. Each input is one frame, decoded
under every link type the decoder knows (and one it does not) by two
long-lived decoders (no TTS shift; a shift plus per-source shifts at the
ends of their range, 0 and 24), and these, whose layout caches are warm,
must answer exactly as fresh ones do.

    python fuzz/fuzz_decode.py --write-seeds DIR        # frames of pcaps/*.pcap* into DIR
    python fuzz/fuzz_decode.py DIR [SEED_DIR...] [-max_total_time=S -artifact_prefix=tests/corpus/ ...]

libFuzzer adds the inputs it finds interesting to the first DIR only, and
stops at the first crash, writing the input to the artifact prefix
(`crash-<sha1>`). A crash prints its signature: the exception type and the
chain of pt_collector functions down to where it was raised. To fuzz on
past a crash already reported, name its signature in FUZZ_KNOWN_CRASHES
(comma-separated); inputs that raise it are counted, not reported.
"""

from __future__ import annotations

import hashlib
import os
import sys
import traceback
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["pt_collector"]):
    from pt_collector import DecodeError, Decoder, Record
    from pt_collector.capture.pcap import read_capture
    from pt_collector.codec.record import json_encoder

ROOT = Path(__file__).resolve().parent.parent
# Ethernet, Linux SLL, SLL2, the raw IPv6 ones (DLT_RAW differs per OS, IPv6), and one the decoder does not know
LINKTYPES = (1, 113, 276, 101, 12, 14, 229, 147)
DECODER_ARGS = ({}, {"tts_shift": 18, "shift_by_source": {"2001:db8::/32": 24, "fc00::/7": 0}})
CAPTURE_NS = 1_643_211_426 * 10**9
KNOWN = {s.strip() for s in os.environ.get("FUZZ_KNOWN_CRASHES", "").split(",") if s.strip()}

warm = [Decoder(**args) for args in DECODER_ARGS]
known_seen: dict[str, int] = {}


class KnownCrash(Exception):
    """An input that raised a crash signature named in FUZZ_KNOWN_CRASHES."""


def signature(exc: BaseException) -> str:
    """`IndexError@_learn>_walk>_probe>u8`: the root cause's type and its pt_collector functions, outermost first."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    frames = [f.name for f in traceback.extract_tb(exc.__traceback__) if "pt_collector" in f.filename]
    return f"{type(exc).__name__}@{'>'.join(frames) or '(harness)'}"


def verdict(decoder: Decoder, frame: bytes, linktype: int) -> Record | str | None:
    """What `decoder` makes of `frame`: a Record, None, or the DecodeError's key; anything else raises."""
    try:
        record = decoder.decode(frame, CAPTURE_NS, linktype)
    except DecodeError as exc:
        return exc.key
    except Exception as exc:
        sig = signature(exc)
        if sig in KNOWN:
            raise KnownCrash(sig) from exc
        print(f"\ncrash signature: {sig} (link type {linktype})", file=sys.stderr)
        raise
    if record is not None:
        assert isinstance(record, Record), f"decode returned {type(record).__name__}, not a Record"
        json_encoder.encode(record)  # what every sink does with it
    return record


def test_one_input(data: bytes) -> None:
    try:
        for linktype in LINKTYPES:
            for args, decoder in zip(DECODER_ARGS, warm, strict=True):
                got = verdict(decoder, data, linktype)
                fresh = verdict(Decoder(**args), data, linktype)
                assert got == fresh, f"link type {linktype}, {args}: warm decoder {got!r}, fresh one {fresh!r}"
    except KnownCrash as known:
        sig = str(known)
        known_seen[sig] = known_seen.get(sig, 0) + 1
        if known_seen[sig] & (known_seen[sig] - 1) == 0:  # 1, 2, 4, 8, ...: a trace, not a flood
            print(f"known crash {sig}: {known_seen[sig]} inputs so far", file=sys.stderr)


def write_seeds(corpus: Path) -> int:
    """Every frame of the bundled captures as one seed file, named by its hash; how many were new."""
    corpus.mkdir(parents=True, exist_ok=True)
    new = 0
    for capture in sorted((ROOT / "pcaps").glob("*.pcap*")):
        for _, _, frame in read_capture(capture):
            seed = corpus / hashlib.sha1(frame).hexdigest()
            if not seed.exists():
                seed.write_bytes(frame)
                new += 1
    return new


def main() -> None:
    if sys.argv[1:2] == ["--write-seeds"]:
        print(f"{write_seeds(Path(sys.argv[2]))} new seed frames in {sys.argv[2]}")
        return
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
