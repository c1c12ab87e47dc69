#!/usr/bin/env python3
"""The collect worker's per-block path in one process, fed TPACKET_V3 blocks laid out as the kernel lays them out.

    python bench/bench_block_path.py [--laps 5] [--blocks 64] [--block-size 1048576] [--stage engine,worker]
                                     [--idle-ms 0] [--python <other checkout>/.venv/bin/python] [--repeat 3]

An anonymous mapping of --blocks x --block-size bytes is filled once with
realistic encapsulated probes (256 sources, 5 MCDs, 3 segments, every value
differing per probe; 230-byte frames at the kernel's V3 layout: frame header,
82 bytes to the MAC header, 16-byte aligned: 3,276 frames in 1 MiB), as a
ring in which every block has been handed to user space. Then, on CPU 1,
each lap reads every block:

  engine  the native engine's decode_block on each block (no event loop, no sink);
          with --idle-ms, a sleep before each block, as a live worker waits for the next one
  worker  ptc collect's Worker reading it through RingReceiver.drain_blocks (the ring
          code proper, run on the mapping), decoding and writing JSON lines to
          /dev/null on an asyncio loop: what a live worker does after poll() wakes it

and this harness gives the blocks back to "user space" between laps (the
kernel's part). Reported per probe, best lap of the best try: CPU (user +
system, getrusage) and minor page faults; with `--python` the same for
another install's pt_collector (e.g. the main checkout's venv), interleaved.
No capture and no sender: the receiver's own work without the other core's;
`valgrind --tool=callgrind python bench/bench_block_path.py --child --stage
worker --laps N --blocks 8` counts its instructions (the difference between
N=2 and N=1 is one lap). Findings: docs/benchmarks.md, "Where a live probe's
CPU goes".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import mmap
import os
import resource
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BLOCK_SIZE, BLOCK_COUNT = 1 << 20, 64  # as --ring-block-size, --ring-blocks (--block-size, --blocks here)
FIRST = 48  # struct tpacket_block_desc: the first frame header's offset in a block
MAC = 82  # TPACKET_ALIGN(TPACKET3_HDRLEN + 16) - ETH_HLEN: the kernel's tp_mac for an Ethernet frame
ALIGN = 16  # TPACKET_ALIGNMENT
CPU = 1


def frames_for(count: int) -> list[bytes]:
    """`count` distinct realistic probe frames, cached in bench/out/ (generating them takes a while)."""
    cache = HERE / "out" / f"block-path-{count}.frames"
    if cache.exists():
        data = cache.read_bytes()
        out, at = [], 0
        while at < len(data):
            (n,) = struct.unpack_from("=H", data, at)
            out.append(data[at + 2 : at + 2 + n])
            at += 2 + n
        return out
    from pt_collector.codec.encode import ethernet
    from pt_collector.codec.generate import generate

    out = [ethernet(packet) for _, packet in generate(count, hops=5, segments=3, encap=True, sources=256)]
    cache.parent.mkdir(exist_ok=True)
    cache.write_bytes(b"".join(struct.pack("=H", len(f)) + f for f in out))
    return out


def fill_ring(ring: mmap.mmap, frames: list[bytes], blocks: int, block_size: int = BLOCK_SIZE) -> int:
    """Lay `frames` out in `blocks` blocks of `ring` as TPACKET_V3 does, every block handed over; frames laid out."""
    laid, index = 0, 0
    for block in range(blocks):
        base, at, count = block * block_size, FIRST, 0
        while True:
            frame = frames[index % len(frames)]
            step = -(-(MAC + len(frame)) // ALIGN) * ALIGN
            if at + step > block_size:
                break
            ns = 1_700_000_000_000_000_000 + index * 1000
            # tp_next_offset, tp_sec, tp_nsec, tp_snaplen, tp_len, tp_status, tp_mac, tp_net
            struct.pack_into("=IIIIIIHH", ring, base + at, step, ns // 10**9, ns % 10**9, len(frame), len(frame), 1,
                             MAC, MAC + 14)  # fmt: skip
            ring[base + at + MAC : base + at + MAC + len(frame)] = frame
            at, count, index = at + step, count + 1, index + 1
        struct.pack_into("=IIIII", ring, base, 1, FIRST - 40, 0, count, FIRST)  # version, priv, status, pkts, first
        struct.pack_into("=Q", ring, base + 24, block)  # seq_num
        laid += count
    return laid


def hand_over(ring: mmap.mmap, blocks: int, block_size: int) -> None:
    """The kernel's part between laps: every block back to user space (TP_STATUS_USER)."""
    for block in range(blocks):
        struct.pack_into("=I", ring, block * block_size + 8, 1)


def fake_ring(blocks: int, block_size: int):  # type: ignore[no-untyped-def]
    """A RingReceiver on an anonymous mapping instead of a packet socket's ring (its reading code as it is)."""
    from pt_collector.capture import ring as ring_module

    receiver = ring_module.RingReceiver.__new__(ring_module.RingReceiver)
    receiver.iface = "bench"
    receiver._block_size, receiver._block_count, receiver._block_timeout_ms = block_size, blocks, 100
    receiver._ring = mmap.mmap(-1, block_size * blocks)
    receiver._state = mmap.mmap(-1, ring_module.READ_STATE.size)
    receiver._view = memoryview(receiver._ring)
    receiver._outside = 0
    receiver.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # asked for SO_ERROR when a drain finds nothing
    receiver.ifindex = 0
    return receiver


def usage() -> tuple[float, float, int]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime, r.ru_minflt


def child(stage: str, laps: int, blocks: int, distinct: int, block_size: int, idle_ms: float = 0.0) -> dict:
    from pt_collector.codec.wire import LINKTYPE_ETHERNET
    from pt_collector.pipeline.collect import Worker
    from pt_collector.pipeline.engine import NativeEngine
    from pt_collector.pipeline.sinks import JsonLinesSink

    os.sched_setaffinity(0, {CPU})
    receiver, engine = fake_ring(blocks, block_size), NativeEngine()
    per_lap = fill_ring(receiver._ring, frames_for(distinct), blocks, block_size)
    out = open(os.devnull, "wb", buffering=0)  # noqa: SIM115  # as open_output gives it
    worker = Worker(receiver, engine, JsonLinesSink(out, os.devnull))

    async def worker_lap() -> None:
        while await worker._read(4096):  # BURST: as run() does after each wakeup
            pass

    def engine_lap() -> None:
        view = receiver._view
        for block in range(blocks):
            base = block * block_size
            if idle_ms:
                time.sleep(idle_ms / 1000)  # as a live worker waits for the next block (no CPU time)
            engine.decode_block(view[base : base + block_size], FIRST, per_lap // blocks, LINKTYPE_ETHERNET)

    async def run() -> dict:
        hand_over(receiver._ring, blocks, block_size)
        await worker_lap() if stage == "worker" else engine_lap()  # warm: first-touch faults of the heap
        best = None
        for _ in range(laps):
            hand_over(receiver._ring, blocks, block_size)
            u0, s0, f0 = usage()
            await worker_lap() if stage == "worker" else engine_lap()
            u1, s1, f1 = usage()
            lap = {"user_us": (u1 - u0) * 1e6 / per_lap, "sys_us": (s1 - s0) * 1e6 / per_lap,
                   "faults": (f1 - f0) / per_lap}  # fmt: skip
            if best is None or lap["user_us"] + lap["sys_us"] < best["user_us"] + best["sys_us"]:
                best = lap
        assert best is not None
        return best | {"probes_per_lap": per_lap, "decoded": worker.stats.decoded}

    return asyncio.run(run())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--laps", type=int, default=5, help="laps over the ring per try (the best lap is kept)")
    parser.add_argument("--blocks", type=int, default=BLOCK_COUNT)
    parser.add_argument("--block-size", type=int, default=BLOCK_SIZE)
    parser.add_argument("--idle-ms", type=float, default=0.0, help="engine stage: sleep this long before each block")
    parser.add_argument("--distinct", type=int, default=65536, help="distinct probes laid out (cycled)")
    parser.add_argument("--stage", default="engine,worker", help="comma-separated: engine, worker")
    parser.add_argument("--python", action="append", default=[], help="another interpreter (install) to compare")
    parser.add_argument("--repeat", type=int, default=3, help="tries per interpreter and stage, interleaved")
    parser.add_argument("--child", action="store_true", help="measure in this process (one stage), print JSON")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.stage, args.laps, args.blocks, args.distinct, args.block_size, args.idle_ms)))
        return 0
    frames_for(args.distinct)  # the cache, once
    pythons = [sys.executable, *args.python]
    stages = [s.strip() for s in args.stage.split(",") if s.strip()]
    best: dict[tuple[str, str], dict] = {}
    load = os.getloadavg()
    for _ in range(args.repeat):
        for stage in stages:
            for python in pythons:
                cmd = [python, __file__, "--child", "--stage", stage, "--laps", str(args.laps),
                       "--blocks", str(args.blocks), "--distinct", str(args.distinct),
                       "--block-size", str(args.block_size), "--idle-ms", str(args.idle_ms)]  # fmt: skip
                got = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
                key = (python, stage)
                total = got["user_us"] + got["sys_us"]
                if key not in best or total < best[key]["user_us"] + best[key]["sys_us"]:
                    best[key] = got
    load = tuple(round((a + b) / 2, 2) for a, b in zip(load, os.getloadavg(), strict=True))
    print(f"load average (1, 5, 15 min; mean of start and end): {load}, {time.strftime('%Y-%m-%d %H:%M UTC')}")
    print(f"{'interpreter':<40} {'stage':<7} {'CPU us/probe':>12} {'user':>7} {'sys':>7} {'faults/probe':>12}")
    for (python, stage), got in best.items():
        total = got["user_us"] + got["sys_us"]
        print(f"{python:<40} {stage:<7} {total:>12.3f} {got['user_us']:>7.3f} {got['sys_us']:>7.3f} "
              f"{got['faults']:>12.4f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
