#!/usr/bin/env python3
"""Decode speed: ptc's decoder next to a per-field struct.unpack_from baseline, in one run.

    python bench/bench_decode.py [--count 300000] [--repeat 3] [--tts-shift 18]

Realistic encapsulated probes (5 MCDs, 3 segments, --sources source nodes,
each on its own ECMP path) are generated once into bench/out/. Figures per
decoder, best of --repeat, interleaved, all in CPU time (time.process_time,
and getrusage for the commands, start-up included):
  replay   the replay pipeline in process: read pcap, decode, JSON lines to /dev/null
  decode   decoding only, over frames already in memory
  command  `ptc replay FILE --output /dev/null` itself, pinned to one core, per engine
and the stages around decoding on their own (reading the pcap in Python,
encoding JSON with msgspec, the command's start-up: `ptc replay` of a
one-probe file). The records of both decoders are compared first: equal
work, or no figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from baseline_decoder import BaselineDecoder  # noqa: E402

from pt_collector.capture.pcap import PcapWriter, read_capture  # noqa: E402
from pt_collector.codec.decode import Decoder  # noqa: E402
from pt_collector.codec.encode import ethernet  # noqa: E402
from pt_collector.codec.generate import generate  # noqa: E402
from pt_collector.codec.record import to_json_lines  # noqa: E402
from pt_collector.pipeline.engine import NATIVE, Engine, NativeEngine, PythonEngine  # noqa: E402
from pt_collector.pipeline.replay import replay  # noqa: E402
from pt_collector.pipeline.sinks import JsonLinesSink  # noqa: E402


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo, what lscpu shows), for the benchmarks' machine line."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    return next((line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), "?")


def capture(count: int, sources: int = 4, name: str = "decode") -> Path:
    """A capture of `count` encapsulated probes (5 hops, 3 segments), made once and kept in bench/out/."""
    path = HERE / "out" / f"{name}-{count}.pcap"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        with open(path, "wb") as f:
            writer = PcapWriter(f, 1)
            for capture_ns, packet in generate(count, hops=5, segments=3, encap=True, sources=sources):
                writer.write(capture_ns, ethernet(packet))
    return path


def replay_rate(path: Path, engine: Engine) -> float:
    with open(os.devnull, "wb") as out:
        started = time.process_time()
        stats = asyncio.run(replay([path], engine, JsonLinesSink(out)))
        return stats.probes / (time.process_time() - started)


def decode_rate(frames: list[tuple[int, int, bytes]], decoder: object) -> float:
    decode = decoder.decode  # type: ignore[attr-defined]
    started = time.process_time()
    for linktype, capture_ns, frame in frames:
        decode(frame, capture_ns, linktype)
    return len(frames) / (time.process_time() - started)


def read_rate(path: Path) -> float:
    started = time.process_time()
    count = sum(1 for _ in read_capture(path))
    return count / (time.process_time() - started)


def json_rate(records: list) -> float:
    started = time.process_time()
    for i in range(0, len(records), 1024):
        to_json_lines(records[i : i + 1024])
    return len(records) / (time.process_time() - started)


def cli_seconds(path: Path, tts_shift: int | None, engine: str) -> float:
    """CPU seconds (user + system) of `ptc replay PATH --output /dev/null`, start-up included, on one core."""
    ptc = shutil.which("ptc") or str(Path(sys.executable).parent / "ptc")
    cmd = [ptc, "replay", str(path), "--output", "/dev/null", "--quiet", "--no-progress"]
    if tts_shift is not None:
        cmd += ["--tts-shift", str(tts_shift)]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, env=dict(os.environ, PTC_ENGINE=engine))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def cli_rate(path: Path, count: int, tts_shift: int | None, engine: str) -> float:
    return count / cli_seconds(path, tts_shift, engine)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tts-shift", type=int, default=None)
    parser.add_argument("--sources", type=int, default=256, help="source nodes, each on its own ECMP path")
    args = parser.parse_args()

    path = capture(args.count, args.sources, f"decode-{args.sources}")
    frames = list(read_capture(path))
    ours, base = Decoder(args.tts_shift), BaselineDecoder(args.tts_shift)
    for linktype, capture_ns, frame in frames[:5000]:
        if ours.decode(frame, capture_ns, linktype) != base.decode(frame, capture_ns, linktype):
            sys.exit("the decoders disagree: no figures")

    records = [ours.decode(frame, capture_ns, linktype) for linktype, capture_ns, frame in frames]
    one = capture(1, 1, "decode-1")
    best: dict[str, float] = {}
    startup: dict[str, float] = {}
    for _ in range(args.repeat):  # interleaved, so drift on a shared machine hits both
        runs = [
            ("ptc replay (in process)", replay_rate(path, PythonEngine(Decoder(args.tts_shift)))),
            ("baseline replay (in process)", replay_rate(path, PythonEngine(BaselineDecoder(args.tts_shift)))),
            ("ptc decode only", decode_rate(frames, Decoder(args.tts_shift))),
            ("baseline decode only", decode_rate(frames, BaselineDecoder(args.tts_shift))),
            ("`ptc replay --output /dev/null`", cli_rate(path, args.count, args.tts_shift, "python")),
            ("stage: pcap read only", read_rate(path)),
            ("stage: JSON lines encoding only", json_rate(records)),
        ]
        if NATIVE:
            runs += [
                ("native replay (in process)", replay_rate(path, NativeEngine(args.tts_shift))),
                ("native `ptc replay -o /dev/null`", cli_rate(path, args.count, args.tts_shift, "native")),
            ]
        for name, rate in runs:
            best[name] = max(best.get(name, 0.0), rate)
        for engine in ("native", "python") if NATIVE else ("python",):
            seconds = cli_seconds(one, args.tts_shift, engine)
            startup[engine] = min(startup.get(engine, seconds), seconds)

    cpu = cpu_model()
    print(f"# {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, CPU time")
    print(f"# {args.count:,} encapsulated probes (5 MCDs, 3 segments), tts-shift {args.tts_shift}")
    print(f"# best of {args.repeat}, interleaved")
    for name, rate in best.items():
        print(f"{name:<34} {rate:>12,.0f} probes/s   {1e6 / rate:6.2f} us/probe")
    replay_ratio = best["ptc replay (in process)"] / best["baseline replay (in process)"]
    print(f"{'ratio replay (ptc / baseline)':<34} {replay_ratio:>12.1f} x")
    print(f"{'ratio decode (ptc / baseline)':<34} {best['ptc decode only'] / best['baseline decode only']:>12.1f} x")
    for engine, seconds in startup.items():
        print(f"{'start-up: ' + engine + ' `ptc replay` of 1 probe':<34} {seconds:>12.3f} s CPU")
    if NATIVE:
        native_ratio = best["native replay (in process)"] / best["baseline replay (in process)"]
        print(f"{'ratio replay (native / baseline)':<34} {native_ratio:>12.1f} x")
        command_ratio = best["native `ptc replay -o /dev/null`"] / best["baseline replay (in process)"]
        print(f"{'ratio command (native / baseline)':<34} {command_ratio:>12.1f} x")
        rest = args.count / best["native `ptc replay -o /dev/null`"] - startup["native"]
        print(f"{'native command less its start-up':<34} {args.count / rest:>12,.0f} probes/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
