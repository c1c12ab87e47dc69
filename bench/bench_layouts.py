#!/usr/bin/env python3
"""The decoder against crafted layouts: frames/s next to typical traffic, in one run.

    python bench/bench_layouts.py [--repeat 3] [--tts-shift 18] [--engine python|native] [--root DIR]

Typical traffic is what `ptc generate` makes with 16 sources (5 MCDs, 3
segments, values differing per probe): 100,000 encapsulated probes. Against
it, in the same run and interleaved (best of --repeat):
  crafted N       N valid probes of one frame length (600 bytes), each with its
                  own mix of MCD count, segment count, Destination Options size
                  and PadN size (tests/crafted.py): no two share a layout
  varied          20,000 such probes of distinct layouts and lengths (600-1,000 bytes)
  mutations       100,000 typical probes with 1 to 3 random bytes changed
  many options    3,000 probes of about 1,400 bytes, each with ~600 zero-length
                  HbH options of its own mix (the walk's worst case per byte)
  many headers    3,000 probes with ~150 8-byte extension headers of their own mix
Each figure is decoding only, over frames already in memory, with a fresh
Decoder (so typical traffic pays for learning its layouts too); frames that
are malformed or not PT count like the others. "x typical" is how many
times longer a frame takes than a typical one.

--root DIR decodes with the pt_collector package under DIR (say, another
worktree at an older commit) to measure before and after a change in the
same way.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def frame_sets(typical_count: int) -> dict[str, list[bytes]]:
    from crafted import crafted_frames, crafted_varied, many_headers, many_options, mutations

    from pt_collector.codec.encode import ethernet
    from pt_collector.codec.generate import generate

    typical = [ethernet(packet) for _, packet in generate(typical_count, sources=16, seed=11)]
    return {
        "typical (16 sources)": typical,
        "crafted 5,000 (one length)": crafted_frames(5000),
        "crafted 10,000 (one length)": crafted_frames(10000),
        "crafted 20,000 (one length)": crafted_frames(20000),
        "varied 20,000 (lengths too)": crafted_varied(20000),
        "mutations 100,000": mutations(typical[:1000], 100_000),
        "many options 3,000 (~1.4 KB)": many_options(3000),
        "many headers 3,000 (~1.4 KB)": many_headers(3000),
    }


def rate(frames: list[bytes], tts_shift: int | None, engine: str) -> tuple[float, int]:
    """(frames/s, records) of a fresh decoder over `frames`."""
    from pt_collector.codec.decode import DecodeError, Decoder

    if engine == "native":
        return native_rate(frames, tts_shift)

    decode = Decoder(tts_shift).decode
    records = 0
    started = time.process_time()  # CPU time: the machine is shared
    for frame in frames:
        with contextlib.suppress(DecodeError):  # malformed: counted like the others
            records += decode(frame) is not None
    return len(frames) / (time.process_time() - started), records


def native_rate(frames: list[bytes], tts_shift: int | None) -> tuple[float, int]:
    """The compiled engine, a batch of 1,024 frames at a time (decoded and encoded as JSON lines)."""
    from pt_collector.pipeline.engine import NativeEngine

    engine, batch = NativeEngine(tts_shift), [(0, frame) for frame in frames]
    records = 0
    started = time.process_time()
    for i in range(0, len(batch), 1024):
        records += len(engine.decode_batch(batch[i : i + 1024], 1).records)
    return len(frames) / (time.process_time() - started), records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tts-shift", type=int, default=18)
    parser.add_argument("--typical", type=int, default=100_000, help="typical probes (default 100,000)")
    parser.add_argument("--only", nargs="*", default=None, help="the sets to run, by first word")
    parser.add_argument("--engine", choices=("python", "native"), default="python", help="the engine to measure")
    parser.add_argument("--root", type=Path, default=HERE.parent, help="where pt_collector is imported from")
    args = parser.parse_args()
    sys.path[:0] = [str(args.root.resolve()), str(HERE.parent / "tests")]

    sets = frame_sets(args.typical)
    if args.only is not None:
        sets = {name: frames for name, frames in sets.items() if name.startswith(("typical", *args.only))}
    best: dict[str, float] = {}
    records: dict[str, int] = {}
    for _ in range(args.repeat):  # interleaved, so drift on a shared machine hits every set
        for name, frames in sets.items():
            per_s, records[name] = rate(frames, args.tts_shift, args.engine)
            best[name] = max(best.get(name, 0.0), per_s)

    from bench_decode import cpu_model  # its imports are the parent's only, not the children's

    import pt_collector.codec.decode

    cpu = cpu_model()
    print(f"# {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}")
    print(
        f"# {args.engine} engine ({pt_collector.codec.decode.__file__ if args.engine == 'python' else 'native/'}),"
        f" tts-shift {args.tts_shift},"
        f" best of {args.repeat}, interleaved"
    )
    typical = best["typical (16 sources)"]
    print(f"{'frames':<30} {'count':>8} {'records':>8} {'frames/s':>10} {'us/frame':>9} {'x typical':>10}")
    for name, per_s in best.items():
        count, ratio = len(sets[name]), typical / per_s
        print(f"{name:<30} {count:>8,} {records[name]:>8,} {per_s:>10,.0f} {1e6 / per_s:>9.2f} {ratio:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
