"""Fuzz the decoder with atheris (libFuzzer for Python): `make fuzz`, docs/reliability.md.

The contract (docs/decoding.md): for any bytes, `Decoder.decode(frame,
capture_ns, linktype)` returns a Record, returns None (not PT) or raises
DecodeError (claims PT, inconsistent). Anything else is a crash, and so is
a record the JSON encoder cannot write. Each input is one frame, decoded
under every link type the decoder knows (and one it does not) by two
long-lived decoders (no TTS shift; a shift plus per-source shifts at the
ends of their range, 0 and 24), and these, whose layout caches are warm,
must answer exactly as fresh ones do.

The same input goes to the native engine (pt_collector._native, when built)
with the same settings, in both output formats, through both of its frame
entries: a list of frames (decode_frames) and a TPACKET_V3 ring block built
around the frame (decode_block, as live capture reads the ring). Its output
bytes must be what msgspec writes for the pure engine's Record, and its
counters the pure engine's verdict (not PT, or malformed by the same
reason): any difference is a crash, with the signature `engines differ`.

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
import struct
import sys
import traceback
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["pt_collector"]):
    from pt_collector import DecodeError, Decoder, Record
    from pt_collector.capture.pcap import read_capture
    from pt_collector.codec.record import json_encoder, msgpack_encoder

try:
    from pt_collector import _native
except ImportError:  # built without a Rust toolchain: the pure engine alone
    _native = None  # type: ignore[assignment]

ROOT = Path(__file__).resolve().parent.parent
# Ethernet, Linux SLL, SLL2, the raw IPv6 ones (DLT_RAW differs per OS, IPv6), and one the decoder does not know
LINKTYPES = (1, 113, 276, 101, 12, 14, 229, 147)
DECODER_ARGS = ({}, {"tts_shift": 18, "shift_by_source": {"2001:db8::/32": 24, "fc00::/7": 0}})
CAPTURE_NS = 1_643_211_426 * 10**9
KNOWN = {s.strip() for s in os.environ.get("FUZZ_KNOWN_CRASHES", "").split(",") if s.strip()}

warm = [Decoder(**args) for args in DECODER_ARGS]
FORMATS = ("json", "msgpack")
# the native twins of `warm`, per format (long-lived too: their caches warm up as the pure ones' do)
native_warm = (
    [{fmt: _native.Decoder(args.get("tts_shift"), args.get("shift_by_source"), fmt) for fmt in FORMATS}
     for args in DECODER_ARGS]
    if _native is not None
    else []
)  # fmt: skip
BLOCK_FIRST, FRAME_MAC = 48, 80  # where a ring block's first frame header is, and its frame after the header
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


def ring_block(frame: bytes) -> bytes:
    """A TPACKET_V3 block holding `frame` alone, as the kernel lays it out (block header, tpacket3_hdr, frame)."""
    header = struct.pack("=IIIII", 0, CAPTURE_NS // 10**9, CAPTURE_NS % 10**9, len(frame), len(frame))
    header += struct.pack("=IH", 0, FRAME_MAC)
    block = bytearray(BLOCK_FIRST + FRAME_MAC + len(frame))
    block[BLOCK_FIRST : BLOCK_FIRST + len(header)] = header
    block[BLOCK_FIRST + FRAME_MAC :] = frame
    return bytes(block)


def expected(pure: Record | str | None, fmt: str) -> tuple[bytes, int, int, dict[str, int]]:
    """(bytes, decoded, not PT, malformed by reason) that the native engine must give for the pure verdict."""
    if isinstance(pure, Record):
        data = json_encoder.encode_lines([pure]) if fmt == "json" else msgpack_encoder.encode(pure)
        return data, 1, 0, {}
    if pure is None:
        return b"", 0, 1, {}
    return b"", 0, 0, {pure: 1}


def compare_native(natives: dict, data: bytes, linktype: int, pure: Record | str | None) -> None:
    """The native engine's two entries against the pure verdict; a difference is a crash (`engines differ`)."""
    block = ring_block(data)
    for fmt, native in natives.items():
        want = expected(pure, fmt)
        for entry, (batch, *_) in (
            ("decode_frames", (native.decode_frames([(CAPTURE_NS, data)], linktype),)),
            ("decode_block", native.decode_block(block, BLOCK_FIRST, 1, linktype)),
        ):
            got = (batch.data, batch.decoded, batch.not_pt, batch.malformed)
            if got != want or batch.frames != 1:
                print(f"\ncrash signature: engines differ (link type {linktype}, {fmt}, {entry})", file=sys.stderr)
                raise AssertionError(f"native {entry} {fmt}: {got!r}; pure engine: {want!r}")


def test_one_input(data: bytes) -> None:
    try:
        for linktype in LINKTYPES:
            for i, (args, decoder) in enumerate(zip(DECODER_ARGS, warm, strict=True)):
                got = verdict(decoder, data, linktype)
                fresh = verdict(Decoder(**args), data, linktype)
                assert got == fresh, f"link type {linktype}, {args}: warm decoder {got!r}, fresh one {fresh!r}"
                if native_warm:
                    compare_native(native_warm[i], data, linktype, got)
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
    if _native is None:
        print("pt_collector._native is not built: fuzzing the pure engine alone", file=sys.stderr)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
