#!/usr/bin/env python3
"""What checking the TTS shift costs: each engine bare, and with the shift watch (fixed 18, and auto), one run.

    python bench/bench_shift_watch.py [--count 200000] [--sources 64] [--repeat 5] [--engine native|python|both]

Realistic traffic (pt_collector.codec.generate, 5 MCDs, TTS shift 18) in batches of 4,096 frames, as replay
decodes them. The watch has learnt every source before timing starts (a warm-up pass), so what is timed is the
steady state: one record in CHECK_EVERY sampled and weighed against the 25 shifts. CPU time (process_time),
best of --repeat, the three variants interleaved; the records are not read further (the native engine's stay
JSON lines, as for `replay -o FILE`): the sample is all the watch decodes.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pt_collector.codec.encode import ethernet
from pt_collector.codec.generate import generate
from pt_collector.codec.wire import LINKTYPE_ETHERNET
from pt_collector.pipeline import engine as engines
from pt_collector.pipeline.shift_watch import ShiftWatchingEngine

BATCH = 4096


def cpu_seconds(engine, batches) -> float:
    started = time.process_time()
    for frames in batches:
        engine.decode_batch(frames, LINKTYPE_ETHERNET)
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--sources", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--engine", choices=["native", "python", "both"], default="both")
    args = parser.parse_args()
    frames = [(t, ethernet(p)) for t, p in generate(args.count, sources=args.sources)]
    batches = [frames[i : i + BATCH] for i in range(0, len(frames), BATCH)]
    machine = f"{platform.node()} {platform.machine()}, Python {platform.python_version()}"
    print(f"{machine}; {args.count:,} probes from {args.sources} sources, batches of {BATCH:,}, best of {args.repeat}")
    names = ("native", "python") if args.engine == "both" else (args.engine,)
    for name in names if engines.NATIVE else ("python",):

        def make(shift, by_source=None, name=name):
            if name == "native":
                return engines.NativeEngine(shift, by_source)
            return engines.PythonEngine(engines.Decoder(shift, by_source))

        said: list[str] = []
        variants = {
            "bare, --tts-shift 18": make(18),
            "watched, --tts-shift 18": ShiftWatchingEngine(18, {}, said.append, make),
            "watched, --tts-shift auto": ShiftWatchingEngine("auto", {}, said.append, make),
        }
        for engine in variants.values():
            cpu_seconds(engine, batches)  # warm-up: layouts, and the watch learns every source
        best = dict.fromkeys(variants, float("inf"))
        for _ in range(args.repeat):
            for label, engine in variants.items():
                best[label] = min(best[label], cpu_seconds(engine, batches))
        base = best["bare, --tts-shift 18"]
        for label, seconds in best.items():
            per_probe = seconds / args.count * 1e9
            print(f"{name:<7} {label:<27} {args.count / seconds:>12,.0f} probes/s  {per_probe:8.0f} ns/probe  "
                  f"{(seconds / base - 1) * 100:+6.1f}%")  # fmt: skip
        learnt = sum("learnt from" in line for line in said)
        assert learnt == args.sources, said[:3]  # the auto variant learnt every source (18), the fixed one agreed


if __name__ == "__main__":
    main()
