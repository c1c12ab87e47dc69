"""Crafted layouts cost the decoder a bounded amount of work per frame (issue 10, item 3).

Valid probes of one frame length, each with its own layout (MCD count,
segment count, Destination Options size, PadN size: tests/crafted.py),
used to make every frame check every cached layout of its length in turn:
quadratic, 251 frames/s at 5,000 layouts. The work per frame is counted
here (guard and value unpacks, walks), not timed; bench/bench_layouts.py
has the rates. Over a real veth pair, a crafted flood next to legitimate
probes costs no probe and no kernel drop.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import random
import struct

import pytest
from crafted import CRAFTED_SOURCE, FRAME_SIZE, crafted_frames, crafted_packet, mutations
from test_collect_veth import Collector, expected_records, without_capture_time
from test_flood import interleave

from pt_collector import DecodeError
from pt_collector.codec import decode
from pt_collector.codec.decode import Decoder
from pt_collector.codec.encode import ethernet
from pt_collector.codec.generate import generate
from pt_collector.codec.record import from_json_lines

MAX_GUARDS = 4  # the promise: at most this many guard checks per frame, then at most one walk
CRAFTED = 3000


class Work:
    """Counts struct unpacks (guard checks and value reads) and walks, per decoded frame."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.unpacks = self.walks = 0
        structs: dict[str, object] = {}
        walk = decode._walk

        def counted_walk(w, linktype):
            self.walks += 1
            return walk(w, linktype)

        def counted_compiled(fmt: str):
            if fmt not in structs:  # one wrapper per format, so that equal formats compare equal
                structs[fmt] = _CountingStruct(struct.Struct(fmt), self)
            return structs[fmt]

        monkeypatch.setattr(decode, "_walk", counted_walk)
        monkeypatch.setattr(decode, "_compiled", counted_compiled)

    def per_frame(self, decoder: Decoder, frames: list[bytes]) -> list[tuple[int, int]]:
        """(unpacks, walks) for each frame in turn."""
        out = []
        for frame in frames:
            unpacks, walks = self.unpacks, self.walks
            with contextlib.suppress(DecodeError):  # malformed frames cost work too
                decoder.decode(frame)
            out.append((self.unpacks - unpacks, self.walks - walks))
        return out


class _CountingStruct:
    def __init__(self, compiled: struct.Struct, work: Work) -> None:
        self.compiled, self.work = compiled, work

    def unpack_from(self, frame: bytes) -> tuple:
        self.work.unpacks += 1
        return self.compiled.unpack_from(frame)

    def unpack(self, data: bytes) -> tuple:
        return self.compiled.unpack(data)


def test_distinct_layouts_of_one_length_cost_a_bounded_number_of_checks(monkeypatch):
    frames = crafted_frames(CRAFTED)
    assert len({len(frame) for frame in frames}) == 1
    work = Work(monkeypatch)
    decoder = Decoder(18)
    costs = work.per_frame(decoder, frames + frames[:100])  # and again: the first ones are no longer cached
    assert max(walks for _, walks in costs) == 1
    # at most MAX_GUARDS guard checks, then one walk, which reads the values and (if it compiles) the guard once
    assert max(unpacks for unpacks, _ in costs) <= MAX_GUARDS + 2, max(costs)
    assert decode.GUARDS_PER_LENGTH == MAX_GUARDS


def test_mutations_cost_a_bounded_number_of_checks(monkeypatch):
    probes = [ethernet(packet) for _, packet in generate(200, sources=16, seed=5)]
    work = Work(monkeypatch)
    costs = work.per_frame(Decoder(18), mutations(probes, 20_000))
    assert max(walks for _, walks in costs) == 1
    assert max(unpacks for unpacks, _ in costs) <= MAX_GUARDS + 2, max(costs)


def test_a_flood_of_one_off_layouts_does_not_evict_the_legitimate_ones(monkeypatch):
    """Legitimate probes of the flood's frame length keep their cached layout among the flood's.

    A one-off kind of frame compiles no guard and the guards of a length are
    tried busiest first: the flood neither evicts the legitimate guard nor
    goes before it.
    """
    legit = [crafted_packet(5, 3, 0, 0, n=n) for n in range(2000)]  # one layout, values differing per probe
    flood = crafted_frames(CRAFTED)  # the same frame length, none with the legitimate layout (5, 3, 0, 0)
    assert {len(frame) for frame in legit + flood} == {FRAME_SIZE}
    frames = interleave(legit, flood, seed=9)
    work = Work(monkeypatch)
    costs = work.per_frame(Decoder(18), frames)
    legit_set = set(legit)
    legit_costs = [cost for frame, cost in zip(frames, costs, strict=True) if frame in legit_set]
    assert sum(walks for _, walks in legit_costs) <= 2  # learnt by the second at the latest
    assert max(unpacks for unpacks, _ in legit_costs[2:]) == 2  # then one guard check and one read of the values
    assert max(unpacks for unpacks, _ in costs) <= MAX_GUARDS + 2


@pytest.mark.parametrize("seed", range(3))
def test_address_text_is_what_ipaddress_writes(seed):
    """inet_ntop where it agrees with ipaddress; IPv4-embedded forms (::a.b.c.d, ::ffff:a.b.c.d) by ipaddress."""
    rng = random.Random(seed)
    cases = [bytes(16), bytes(15) + b"\x01", bytes(10) + b"\xff\xff\x01\x02\x03\x04", bytes(12) + b"\x01\x02\x03\x04"]
    for _ in range(20_000):
        packed = bytearray(rng.randbytes(16))
        for word in range(8):  # zero runs of every length and place
            if rng.random() < 0.5:
                packed[2 * word : 2 * word + 2] = b"\0\0"
        cases.append(bytes(packed))
    for packed in cases:
        assert decode._address_text(packed) == str(ipaddress.IPv6Address(packed)), packed.hex()


FLOOD_LEGIT, FLOOD_CRAFTED, FLOOD_PPS = 6000, 3000, 3000


def test_a_crafted_layout_flood_costs_no_probe_over_veth(veth, tmp_path):
    """Legitimate probes with distinct crafted layouts among them at 3,000 frames/s: every probe out, no kernel drop."""
    legit = [ethernet(packet) for _, packet in generate(FLOOD_LEGIT, sources=16, seed=21)]
    flood = crafted_frames(FLOOD_CRAFTED)
    frames = interleave(legit, flood, seed=8)
    out = tmp_path / "out.jsonl"
    collector = Collector(
        "--iface", veth.rx_iface, "--output", str(out), "--log-format", "json", "--stats-interval", "1"
    )  # fmt: skip
    collector.wait_for(lambda line: '"event":"counters"' in line)  # capturing
    veth.send(frames, rate_pps=FLOOD_PPS)
    collector.wait_for(lambda line: json.loads(line).get("frames") == len(frames), timeout=120)
    assert collector.stop() == 0

    final = json.loads(collector.lines[-1])
    assert final["event"] == "stopped", final
    assert final["kernel_dropped"] == 0, final
    assert final["frames"] == len(frames) and final["decoded"] == len(frames), final  # crafted probes are probes
    records = from_json_lines(out.read_bytes())
    got = [r for r in records if r.src.addr != CRAFTED_SOURCE]
    assert without_capture_time(got) == without_capture_time(expected_records(legit))
    assert len(records) == len(frames)


def _many_headers_probe(rng: random.Random) -> bytes:
    """A probe with up to 40 small options around the PT one, up to 40 extension headers before its SRH."""
    from pt_collector.codec.encode import PtTlv, encapsulate, hop_by_hop, ipv6, srh
    from pt_collector.codec.wire import NH_DEST_OPTS, NH_FRAGMENT, NH_HOP_BY_HOP, NH_NONE, NH_ROUTING

    def options() -> bytes:
        return b"".join(
            bytes((rng.choice((0x1E, 1, 0x3E)), n)) + rng.randbytes(n)
            for n in (rng.randrange(4) for _ in range(rng.randrange(40)))
        )

    kinds = [rng.choice((NH_DEST_OPTS, NH_ROUTING, NH_FRAGMENT, NH_HOP_BY_HOP)) for _ in range(rng.randrange(40))]
    chain = b""
    for kind, after in zip(kinds, [*kinds[1:], NH_ROUTING], strict=False):  # the last header leads to the SRH
        units = 0 if kind == NH_FRAGMENT else rng.randrange(3)
        body = bytes((after, units)) + bytes((rng.choice((0, 2, 4)),)) + rng.randbytes(units * 8 + 5)
        chain += body
    hbh = hop_by_hop(kinds[0] if kinds else NH_ROUTING, rng.randbytes(36), before=options(), after=options())
    tlv = PtTlv(1, 1, 10**18, 1, 2).pack()
    inner = ipv6("2001:db8:5::1", "fcbb::1", NH_HOP_BY_HOP, hbh + chain + srh(NH_NONE, ["fcbb::1"], tlv + bytes(8)))
    return ethernet(encapsulate(inner, "2001:db8:5::2", "2001:db8::c", PtTlv(2, 1, 10**18)))


def _outcome(frame: bytes) -> object:
    try:
        return Decoder(18).decode(frame)
    except DecodeError as exc:
        return (exc.key, exc.offset)


@pytest.mark.parametrize("seed", range(4))
def test_runs_of_options_and_headers_skipped_in_one_match_decode_as_walked_one_by_one(monkeypatch, seed):
    """Past MANY_OPTIONS, options, TLVs and plain extension headers are skipped by one regex match: same outcome."""
    rng = random.Random(seed)
    frames = []
    for _ in range(150):
        frame = bytearray(_many_headers_probe(rng))
        for _ in range(rng.randrange(3)):
            frame[rng.randrange(len(frame))] = rng.randrange(256)
        frames.append(bytes(frame[: rng.randrange(len(frame) // 2, len(frame) + 1)] if rng.random() < 0.2 else frame))
    fast = [_outcome(frame) for frame in frames]
    monkeypatch.setattr(decode, "MANY_OPTIONS", 10**9)  # every option, TLV and header walked one by one
    slow = [_outcome(frame) for frame in frames]
    assert fast == slow
    malformed = sum(isinstance(outcome, tuple) for outcome in fast)
    records = sum(outcome is not None and not isinstance(outcome, tuple) for outcome in fast)
    assert malformed > 10 and records > 10, (malformed, records)  # both kinds of outcome are compared
