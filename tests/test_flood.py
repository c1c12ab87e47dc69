"""A flood of malformed PT-looking frames on the capture interface, over a real veth pair.

Thousands of frames that claim to be PT but are inconsistent (four kinds),
IPv6 Hop-by-Hop frames without PT, and valid probes interleaved among them,
sent as fast as the sender goes: `ptc collect` must deliver every valid
probe exactly once, count every bad frame by its reason, and keep its log
to a few lines (counters, never one line per bad packet).
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter

import pytest
from test_collect_veth import Collector, expected_records, frames_to_send, without_capture_time

from pt_collector import DecodeError, Decoder
from pt_collector.codec.encode import ethernet, ipv6
from pt_collector.codec.generate import generate
from pt_collector.codec.record import from_json_lines
from pt_collector.codec.wire import NH_HOP_BY_HOP, NH_NONE

VALID, PER_KIND, NOT_PT = 2000, 800, 400
HBH = 14 + 40 + 24 + 40  # Ethernet, outer IPv6, the sink's SRH (no segments), inner IPv6: the probe's HbH
SRH = HBH + 40  # HbH with the 12-MCD stack
PT_TLV = SRH + 8 + 3 * 16  # generated probes have 3 segments


def edit(frame: bytes, offset: int, value: int) -> bytes:
    data = bytearray(frame)
    data[offset] = value
    return bytes(data)


KINDS = {
    "hbh-pt: opt data len not a multiple of 3": lambda f: edit(f, HBH + 3, 35),
    "srh: truncated frame": lambda f: f[: SRH + 20],  # cut inside the probe's SRH
    "hbh: header runs past the packet": lambda f: edit(f, HBH + 1, 200),  # HbH of 1,608 bytes
    "srh: no PT TLV": lambda f: edit(f, PT_TLV, 4),  # the PT TLV turned into PadN
}


def malformed_frames() -> list[tuple[str, bytes]]:
    """(reason, frame): each made from its own generated probe, the kinds in turn."""
    probes = [ethernet(packet) for _, packet in generate(PER_KIND * len(KINDS), seed=31)]
    kinds = list(KINDS.items())
    return [(kinds[i % len(kinds)][0], kinds[i % len(kinds)][1](frame)) for i, frame in enumerate(probes)]


def hbh_without_pt(n: int) -> bytes:
    """An IPv6 Hop-by-Hop frame (passes the kernel filter) with an IOAM-like option, no PT: not PT."""
    option = bytes((NH_NONE, 0, 0x31, 4)) + n.to_bytes(4, "big")
    return ethernet(ipv6("2001:db8:77::1", "2001:db8:77::2", NH_HOP_BY_HOP, option))


def interleave(valid: list[bytes], bad: list[bytes], seed: int = 5) -> list[bytes]:
    """`valid` in order, `bad` spread among them at random places."""
    slots = [True] * len(valid) + [False] * len(bad)
    random.Random(seed).shuffle(slots)
    valid_it, bad_it = iter(valid), iter(bad)
    return [next(valid_it) if is_valid else next(bad_it) for is_valid in slots]


@pytest.mark.parametrize("capture", ["ring", "socket"])
def test_a_flood_of_malformed_frames_is_counted_and_every_probe_delivered(veth, tmp_path, capture):
    probes, _ = frames_to_send(VALID, seed=30)  # a third VLAN-tagged
    malformed = malformed_frames()
    decoder = Decoder()
    for reason, frame in malformed[: len(KINDS)]:  # the frames are what they claim to be
        with pytest.raises(DecodeError) as raised:
            decoder.decode(frame)
        assert raised.value.key == reason
    frames = interleave(probes, [frame for _, frame in malformed] + [hbh_without_pt(n) for n in range(NOT_PT)])
    out = tmp_path / "out.jsonl"

    collector = Collector(
        "--iface", veth.rx_iface, "--output", str(out), "--capture", capture,
        "--log-format", "json", "--stats-interval", "1",
    )  # fmt: skip
    collector.wait_for(lambda line: '"event":"counters"' in line)  # capturing
    started = time.monotonic()
    veth.send(frames)
    collector.wait_for(lambda line: json.loads(line).get("frames") == len(frames))
    assert collector.stop() == 0
    elapsed = time.monotonic() - started

    events = [json.loads(line) for line in collector.lines]  # every line is one JSON object
    final = events[-1]
    assert final["event"] == "stopped", final
    assert final["kernel_dropped"] == 0 and final["frames"] == len(frames)
    assert final["decoded"] == VALID and final["acked"] == VALID
    assert final["not_pt"] == NOT_PT
    assert Counter(final["malformed"]) == Counter(reason for reason, _ in malformed)
    assert all(count == PER_KIND for count in final["malformed"].values())

    records = from_json_lines(out.read_bytes())
    assert without_capture_time(records) == without_capture_time(expected_records(probes))

    # bounded log: counters lines (one a second) and the final one; no line per bad frame, no errors
    assert [e for e in events if e["event"] not in ("counters", "stopped")] == []
    assert len(events) <= elapsed / 1 + 5, [e["event"] for e in events]
    assert len(events) < 30
