"""Ring blocks decoded in place by the native engine, against the pure engine's frames, over a real veth pair.

`ptc collect --capture ring` on the native engine hands each TPACKET_V3 block of
the mapped ring to the Rust engine as a memoryview (no bytes object per frame);
on the pure engine it reads the frames out one by one. Both must deliver
the same records and count every frame the same way, malformed by reason.
"""

from __future__ import annotations

import json
import os
import random
import struct
import time

import msgspec
import pytest
from netns import mark, marker, wait_readable
from test_collect_veth import PTC, CollectProcess, frames_to_send

from pt_collector import Decoder
from pt_collector.capture import OUTSIDE_BLOCK, RingReceiver
from pt_collector.capture.ring import BLOCK_HEADER, BLOCK_STATUS_OFFSET, FRAME_HEADER
from pt_collector.codec.record import from_json_lines, to_json_lines
from pt_collector.codec.wire import LINKTYPE_ETHERNET
from pt_collector.pipeline.engine import NATIVE, NativeEngine, PythonEngine

if os.environ.get("PTC_REQUIRE_NATIVE"):
    assert NATIVE, "pt_collector._native is not built"
pytestmark = pytest.mark.skipif(not NATIVE, reason="pt_collector._native is not built (no Rust toolchain)")


def traffic(count: int) -> tuple[list[bytes], list[bytes]]:
    """(probes, everything sent): the probes, non-PT noise, and probes cut short (malformed by several reasons)."""
    probes, noise = frames_to_send(count, seed=21)
    rng = random.Random(5)
    cut = [p[: rng.randrange(60, len(p))] for p in probes[: count // 4]]
    frames = probes[: count // 2] + noise + cut + probes[count // 2 :]
    return probes, frames


def collect(veth, tmp_path, engine: str, mode: str, frames: list[bytes], probes: int) -> tuple[dict, bytes]:
    """`ptc collect --capture MODE` (one worker, JSON log lines) on `engine` while `frames` are sent:
    (final counters, output)"""
    out = tmp_path / f"{engine}.jsonl"
    env = os.environ | {"PTC_ENGINE": engine}
    argv = [
        *PTC,
        "collect",
        "--capture",
        mode,
        "--log-format",
        "json",
        "--stats-interval",
        "0.2",
        "--iface",
        veth.rx_iface,
    ]
    collector = CollectProcess([*argv, "--output", str(out)], env=env)
    collector.wait_for(lambda line: '"event":"counters"' in line)
    veth.send(frames)
    collector.wait_for(lambda line: f'"decoded":{probes},' in line)
    assert collector.stop() == 0
    final = json.loads(collector.lines[-1])
    return final, out.read_bytes()


@pytest.mark.parametrize("mode", ["ring", "socket"])
def test_native_blocks_deliver_the_probes_and_count_as_the_pure_engine(veth, tmp_path, mode):
    """Ring: the mapped ring's blocks decoded in place; socket: frames read into one buffer laid out as a block."""
    probes, frames = traffic(400)
    native, native_out = collect(veth, tmp_path, "native", mode, frames, len(probes))
    python, python_out = collect(veth, tmp_path, "python", mode, frames, len(probes))
    names = ("kernel_received", "kernel_dropped", "frames", "decoded", "not_pt", "malformed", "left_at_stop")
    assert {n: native[n] for n in names} == {n: python[n] for n in names}
    assert native["kernel_received"] == native["frames"] and native["kernel_dropped"] == 0
    assert native["frames"] == len(probes) + 100  # the noise stops at the kernel's filter, the cut probes do not
    assert native["not_pt"] + sum(native["malformed"].values()) == 100 and len(native["malformed"]) >= 3
    records = from_json_lines(native_out)
    assert [msgspec.structs.replace(r, capture_ns=0) for r in records] == [Decoder().decode(p) for p in probes]
    assert all(r.capture_ns > 1_600_000_000 * 10**9 for r in records)  # the kernel's receive time, from the block
    zeroed = [msgspec.structs.replace(r, capture_ns=0) for r in from_json_lines(python_out)]
    assert [msgspec.structs.replace(r, capture_ns=0) for r in records] == zeroed


def ring_frames(receiver: RingReceiver) -> dict[int, int]:
    """The offsets of the frame headers in the ring's first block, by the frames' marks."""
    view = receiver._view
    status, count, at = BLOCK_HEADER.unpack_from(view, BLOCK_STATUS_OFFSET)
    assert status & 1, "the block is not handed over yet"
    found = {}
    for _ in range(count):
        next_offset, _, _, _, mac = FRAME_HEADER.unpack_from(view, at)
        found[marker(bytes(view[at + mac : at + mac + 12]))] = at
        at += next_offset
    return found


def spoil(receiver: RingReceiver, cut: int, lost: int) -> None:
    """Frame `cut` said to reach past the block's end; after frame `lost`, a header outside the block."""
    at = ring_frames(receiver)
    struct.pack_into("=I", receiver._view, at[cut] + 12, 1 << 20)  # tp_snaplen
    struct.pack_into("=I", receiver._view, at[lost], 1 << 21)  # tp_next_offset


def test_a_block_read_in_place_counts_as_its_frames_read_out(veth):
    """Two rings on one interface get the same frames in one block: one is decoded in place by the native
    engine, the other read out frame by frame and decoded by the pure engine; the kernel's headers are spoiled
    alike in both (a frame past the block's end, a header outside it): same records, same counters by reason."""
    probes, _ = frames_to_send(60, seed=3)
    frames = [mark(p, i) for i, p in enumerate(probes)]
    settings = {"block_size": 1 << 20, "block_count": 4, "block_timeout_ms": 200}
    with RingReceiver(veth.rx_iface, **settings) as in_place, RingReceiver(veth.rx_iface, **settings) as read_out:
        veth.send(frames)
        assert wait_readable(in_place, 5) and wait_readable(read_out, 5)
        time.sleep(0.1)
        for receiver in (in_place, read_out):
            spoil(receiver, cut=7, lost=50)
        native = NativeEngine()
        results = []

        def visit(block: memoryview, at: int, count: int) -> int:
            decoded, at = native.decode_block(block, at, count, LINKTYPE_ETHERNET)
            results.append(decoded)
            return at

        assert in_place.drain_blocks(visit, 1 << 20) == len(frames)
        got: list[tuple[int, bytes]] = []
        assert read_out.drain(got, 1 << 20) == len(frames)
        outside = read_out.take_outside()
        assert outside == 1 + (len(frames) - 51)  # the cut one, and every frame after the lost header
        assert read_out.take_outside() == 0
    (decoded,) = results
    pure = PythonEngine(Decoder()).decode_batch(got, LINKTYPE_ETHERNET)
    pure.malformed[OUTSIDE_BLOCK] += outside
    assert decoded.malformed == pure.malformed == {OUTSIDE_BLOCK: outside}
    assert decoded.not_pt == pure.not_pt == 0
    assert len(decoded.records) == len(frames) - outside
    zeroed = lambda records: [msgspec.structs.replace(r, capture_ns=0) for r in records]  # noqa: E731
    assert to_json_lines(zeroed(decoded.records)) == to_json_lines(zeroed(pure.records))  # to the byte
    # each socket has the kernel stamp its frames: the same instant, give or take the second socket's turn
    assert all(abs(a.capture_ns - b.capture_ns) < 10**8 for a, b in zip(decoded.records, pure.records, strict=True))
