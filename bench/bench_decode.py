#!/usr/bin/env python3
"""Decode speed: ptc's decoder next to a per-field struct.unpack_from baseline, in one run.

    python bench/bench_decode.py [--count 300000] [--repeat 3] [--tts-shift 18]

Typical encapsulated probes (5 MCDs, 3 segments, 4 sources) are generated
once into bench/out/. Three figures per decoder, best of --repeat:
  replay   `ptc replay --output /dev/null`: read pcap, decode, JSON lines out
  decode   decoding only, over frames already in memory
and, for ptc, the `ptc replay` command itself, pinned to one core, and the
two stages around decoding on their own (reading the pcap, encoding JSON).
The records of both decoders are compared first: equal work, or no figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
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
from pt_collector.pipeline.engine import PythonEngine  # noqa: E402
from pt_collector.pipeline.replay import replay  # noqa: E402
from pt_collector.pipeline.sinks import JsonLinesSink  # noqa: E402


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


def replay_rate(path: Path, decoder: object) -> float:
    with open(os.devnull, "wb") as out:
        stats = asyncio.run(replay([path], PythonEngine(decoder), JsonLinesSink(out)))
    return stats.probes / stats.elapsed_s


def decode_rate(frames: list[tuple[int, int, bytes]], decoder: object) -> float:
    decode = decoder.decode  # type: ignore[attr-defined]
    started = time.perf_counter()
    for linktype, capture_ns, frame in frames:
        decode(frame, capture_ns, linktype)
    return len(frames) / (time.perf_counter() - started)


def read_rate(path: Path) -> float:
    started = time.perf_counter()
    count = sum(1 for _ in read_capture(path))
    return count / (time.perf_counter() - started)


def json_rate(records: list) -> float:
    started = time.perf_counter()
    for i in range(0, len(records), 1024):
        to_json_lines(records[i : i + 1024])
    return len(records) / (time.perf_counter() - started)


def cli_rate(path: Path, count: int, tts_shift: int | None) -> float:
    ptc = shutil.which("ptc") or str(Path(sys.executable).parent / "ptc")
    cmd = [ptc, "replay", str(path), "--output", "/dev/null", "--quiet", "--no-progress"]
    if tts_shift is not None:
        cmd += ["--tts-shift", str(tts_shift)]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    started = time.perf_counter()
    subprocess.run(cmd, check=True)
    return count / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tts-shift", type=int, default=None)
    args = parser.parse_args()

    path = capture(args.count)
    frames = list(read_capture(path))
    ours, base = Decoder(args.tts_shift), BaselineDecoder(args.tts_shift)
    for linktype, capture_ns, frame in frames[:5000]:
        if ours.decode(frame, capture_ns, linktype) != base.decode(frame, capture_ns, linktype):
            sys.exit("the decoders disagree: no figures")

    records = [ours.decode(frame, capture_ns, linktype) for linktype, capture_ns, frame in frames]
    best: dict[str, float] = {}
    for _ in range(args.repeat):  # interleaved, so drift on a shared machine hits both
        for name, rate in (
            ("ptc replay (in process)", replay_rate(path, Decoder(args.tts_shift))),
            ("baseline replay (in process)", replay_rate(path, BaselineDecoder(args.tts_shift))),
            ("ptc decode only", decode_rate(frames, Decoder(args.tts_shift))),
            ("baseline decode only", decode_rate(frames, BaselineDecoder(args.tts_shift))),
            ("`ptc replay --output /dev/null`", cli_rate(path, args.count, args.tts_shift)),
            ("stage: pcap read only", read_rate(path)),
            ("stage: JSON lines encoding only", json_rate(records)),
        ):
            best[name] = max(best.get(name, 0.0), rate)

    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), "?")
    print(f"# {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}")
    print(f"# {args.count:,} encapsulated probes (5 MCDs, 3 segments), tts-shift {args.tts_shift}")
    print(f"# best of {args.repeat}, interleaved")
    for name, rate in best.items():
        print(f"{name:<34} {rate:>12,.0f} probes/s   {1e6 / rate:6.2f} us/probe")
    replay_ratio = best["ptc replay (in process)"] / best["baseline replay (in process)"]
    print(f"{'ratio replay (ptc / baseline)':<34} {replay_ratio:>12.1f} x")
    print(f"{'ratio decode (ptc / baseline)':<34} {best['ptc decode only'] / best['baseline decode only']:>12.1f} x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
