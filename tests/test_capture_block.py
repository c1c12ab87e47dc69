"""Ring blocks decoded in place by the native engine, against the pure engine's frames, over a real veth pair.

`ptc collect --capture ring` on the native engine hands each TPACKET_V3 block of
the mapped ring to the Rust engine as a memoryview (no bytes object per frame);
on the pure engine it reads the frames out one by one. Both must deliver
the same records and count every frame the same way, malformed by reason.
"""

from __future__ import annotations

import asyncio
import io
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
from pt_collector.capture import OUTSIDE_BLOCK, RingReceiver, kernel_stats
from pt_collector.capture.ring import BLOCK_HEADER, BLOCK_STATUS_OFFSET, FRAME_HEADER
from pt_collector.codec.record import from_json_lines, to_json_lines
from pt_collector.codec.wire import LINKTYPE_ETHERNET
from pt_collector.pipeline.collect import BURST, Worker
from pt_collector.pipeline.engine import NATIVE, NativeEngine, PythonEngine
from pt_collector.pipeline.sinks import JsonLinesSink
from pt_collector.pipeline.stats import CollectStats

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


class CountingEngine(NativeEngine):
    """The native engine, noting how many frames each decode_block call was given (in `log` too)."""

    def __init__(self, log: list[tuple[str, int]]) -> None:
        super().__init__()
        self.calls: list[int] = []
        self.log = log

    def decode_block(self, block: memoryview, at: int, count: int, linktype: int):  # type: ignore[no-untyped-def]
        self.calls.append(count)
        self.log.append(("decode", count))
        return super().decode_block(block, at, count, linktype)


class CountingSink(JsonLinesSink):
    """JSON lines into memory, noting how many records each write carried (in `log` too)."""

    def __init__(self, log: list[tuple[str, int]]) -> None:
        self.out = io.BytesIO()
        super().__init__(self.out)
        self.writes: list[int] = []
        self.log = log

    async def write(self, records) -> None:  # type: ignore[no-untyped-def]
        self.writes.append(len(records))
        self.log.append(("write", len(records)))
        await super().write(records)


def run_worker_until(receiver: RingReceiver, engine: NativeEngine, sink: JsonLinesSink, frames: int) -> CollectStats:
    """A worker on `receiver` until it has taken `frames` frames (or 10 s), then stopped: its final counters."""
    worker = Worker(receiver, engine, sink, kernel_stats=lambda: kernel_stats(receiver.sock))

    async def scenario() -> CollectStats:
        task = asyncio.create_task(worker.run())
        deadline = time.monotonic() + 10
        while worker.stats.frames < frames and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        worker.stop()
        return await task

    return asyncio.run(scenario())


def test_a_block_of_more_frames_than_a_drain_is_one_engine_call_and_one_write(veth):
    """A ring block holding more frames than one socket drain takes (BURST) is decoded by one engine call and
    written by one sink write: whole blocks per wakeup (fewer calls, writes and wakeups per probe), every
    frame counted once."""
    probes, _ = frames_to_send(BURST + 1500, seed=8)
    settings = {"block_size": 4 << 20, "block_count": 4, "block_timeout_ms": 1000}  # all of them in one block
    log: list[tuple[str, int]] = []
    engine, sink = CountingEngine(log), CountingSink(log)
    with RingReceiver(veth.rx_iface, **settings) as receiver:
        veth.send(probes)
        assert wait_readable(receiver, 5)
        stats = run_worker_until(receiver, engine, sink, len(probes))
    assert engine.calls == [len(probes)]
    assert sink.writes == [len(probes)]
    assert stats.frames == stats.decoded == len(probes)
    assert stats.kernel_received == stats.frames + stats.kernel_dropped + stats.left_at_stop
    assert sink.out.getvalue().count(b"\n") == len(probes)


def test_each_block_is_written_before_the_next_is_decoded(veth):
    """Several blocks ready at one wakeup: each block's records go to the sink before the next block is decoded,
    so that one block's output is in memory at a time (not a wakeup's); every frame counted once."""
    probes, _ = frames_to_send(600, seed=9)
    settings = {"block_size": 1 << 16, "block_count": 16, "block_timeout_ms": 1000}  # some 200 probes a block
    log: list[tuple[str, int]] = []
    engine, sink = CountingEngine(log), CountingSink(log)
    with RingReceiver(veth.rx_iface, **settings) as receiver:
        veth.send(probes)
        time.sleep(1.2)  # the last block handed over on the timeout: all of them ready at the first wakeup
        stats = run_worker_until(receiver, engine, sink, len(probes))
    assert len(engine.calls) >= 3 and sum(engine.calls) == len(probes)
    assert log == [entry for count in engine.calls for entry in (("decode", count), ("write", count))]
    assert stats.frames == stats.decoded == len(probes)
    assert stats.kernel_received == stats.frames + stats.kernel_dropped + stats.left_at_stop
    assert sink.out.getvalue().count(b"\n") == len(probes)
