"""The two engines side by side: the same frames through the pure-Python decoder + msgspec and through
pt_collector._native, reduced to comparable bytes and counters (tests/test_native.py, bench/bench_native.py)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from pt_collector.codec.decode import DecodeError, Decoder
from pt_collector.codec.encode import ethernet
from pt_collector.codec.generate import generate
from pt_collector.codec.record import Record, json_encoder, msgpack_encoder

Frame = tuple[int, int, bytes]  # linktype, capture_ns, frame (pcap.Frame)

# (tts_shift, shift_by_source): no shift, the common ones, both ends of the range, and per-source shifts
# whose longest prefix must win (the generator's sources are 2001:db8:N::1)
SHIFTS: list[tuple[int | None, dict[str, int]]] = [
    (None, {}),
    (18, {}),
    (0, {}),
    (24, {}),
    (8, {"2001:db8::/32": 18, "2001:db8:1::/48": 12, "2001:db8:3::1/128": 20, "fc00::/7": 16}),
    (None, {"2001:db8:2::/48": 18, "::/0": 0}),  # no global shift: the prefixes alone, ::/0 as the catch-all
]


@dataclass
class Outcome:
    """What an engine made of some frames: comparable field by field."""

    data: bytes = b""  # every record in input order
    groups: list[tuple[str, bytes, int]] = field(default_factory=list)  # per source: address, message value, count
    frames: int = 0
    decoded: int = 0
    not_pt: int = 0
    malformed: dict[str, int] = field(default_factory=dict)


def python_engine(frames: Iterable[Frame], tts_shift: int | None, shifts: Mapping[str, int], fmt: str) -> Outcome:
    decoder = Decoder(tts_shift, shifts)
    records: list[Record] = []
    out = Outcome()
    malformed: Counter[str] = Counter()
    for linktype, capture_ns, frame in frames:
        out.frames += 1
        try:
            record = decoder.decode(frame, capture_ns, linktype)
        except DecodeError as exc:
            malformed[exc.key] += 1
            continue
        if record is None:
            out.not_pt += 1
        else:
            records.append(record)
    out.decoded, out.malformed = len(records), dict(malformed)
    by_source: dict[str, list[Record]] = {}
    for record in records:
        by_source.setdefault(record.src.addr, []).append(record)
    if fmt == "json":
        out.data = json_encoder.encode_lines(records)
        out.groups = [(src, json_encoder.encode_lines(rs), len(rs)) for src, rs in by_source.items()]
    else:
        out.data = b"".join(msgpack_encoder.encode(r) for r in records)
        out.groups = [(src, msgpack_encoder.encode(rs), len(rs)) for src, rs in by_source.items()]
    return out


def native_outcome(batch, fmt: str) -> Outcome:  # batch: pt_collector._native.Batch
    from pt_collector._native import msgpack_array_header

    groups = batch.groups()
    if fmt == "msgpack":
        groups = [(src, msgpack_array_header(n) + data, n) for src, data, n in groups]
    return Outcome(batch.data, groups, batch.frames, batch.decoded, batch.not_pt, batch.malformed)


def native_engine(frames: Iterable[Frame], tts_shift: int | None, shifts: Mapping[str, int], fmt: str) -> Outcome:
    from pt_collector._native import Decoder as NativeDecoder

    batch = NativeDecoder(tts_shift, shifts, fmt).decode_frames(list(frames))
    return native_outcome(batch, fmt)


def realistic(count: int, sources: int = 256, seed: int = 1) -> list[Frame]:
    """Encapsulated probes on `sources` paths (5 MCDs, 3 segments), every value differing per probe, as Ethernet."""
    return [(1, ns, ethernet(p)) for ns, p in generate(count, hops=5, segments=3, sources=sources, seed=seed)]


def mutations(frames: list[Frame], count: int, seed: int = 7) -> Iterator[Frame]:
    """`count` hostile frames: random edits of `frames` (bit flips, cuts, extensions, telling byte values,
    inserted and deleted bytes), at any byte, under the frame's link type or another."""
    rng = random.Random(seed)
    telling = (0, 1, 2, 3, 4, 14, 35, 36, 41, 43, 44, 50, 51, 59, 60, 0x32, 128, 255)
    for _ in range(count):
        linktype, capture_ns, frame = rng.choice(frames)
        data = bytearray(frame)
        for _ in range(rng.randint(1, 4)):
            kind = rng.randrange(6)
            at = rng.randrange(len(data)) if data else 0
            if kind == 0 and data:
                data[at] ^= 1 << rng.randrange(8)
            elif kind == 1:
                del data[at:]
            elif kind == 2:
                data += rng.randbytes(rng.randint(1, 40))
            elif kind == 3 and data:
                data[at] = rng.choice(telling)
            elif kind == 4:
                data[at:at] = rng.randbytes(rng.choice((1, 2, 8, 16)))
            elif data:
                del data[at : at + rng.choice((1, 2, 8, 16))]
        if rng.random() < 0.05:
            linktype = rng.choice((1, 101, 113, 276, 0))
        yield linktype, capture_ns, bytes(data)
