#!/usr/bin/env python3
"""The compiled engine (pt_collector._native) next to the pure-Python engine and the per-field baseline, one run.

    python bench/bench_native.py [--count 600000] [--sources 256] [--hostile 100000] [--repeat 3]
                                 [--python-count 100000] [--diff 0]

Realistic traffic: `--count` encapsulated probes (5 MCDs, 3 segments) on `--sources` ECMP paths, every probe
with its own sequence, times, loads and TTS (pt_collector.codec.generate, as `ptc generate`), TTS shift 18, made
once into bench/out/. Pinned to one core; rates in CPU time (time.process_time). Figures, best of --repeat,
interleaved:
  native pcap -> JSON lines / msgpack   decode_capture over the mapped file, 4,096 frames a call: read in place,
                                        decode, encode, the bytes handed over as memoryview(batch) (no copy)
  native pcap -> json bytes             the same, the bytes handed over as Batch.data (one copy into a bytes)
  native frames -> JSON lines / msgpack decode_frames over (capture_ns, bytes) lists of 4,096 frames
  python engine -> JSON lines           decode.Decoder + record.to_json_lines per 1,024 (on --python-count)
  baseline -> JSON lines                bench/baseline_decoder.py + to_json_lines (on --python-count)
  hostile frames                        --hostile random mutations of the traffic, frames/s, native and python
Before timing, both engines must give the same bytes for the first 20,000 probes and the hostile frames
(else no figures). --diff N: also compare the engines on N mutated frames (a million in `make bench-native`).
"""

from __future__ import annotations

import argparse
import mmap
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from baseline_decoder import BaselineDecoder  # noqa: E402
from bench_decode import cpu_model  # noqa: E402
from native_diff import mutations, native_engine, python_engine  # noqa: E402

from pt_collector.capture.pcap import PcapWriter, read_capture  # noqa: E402
from pt_collector.codec.decode import DecodeError, Decoder  # noqa: E402
from pt_collector.codec.encode import ethernet  # noqa: E402
from pt_collector.codec.generate import generate  # noqa: E402
from pt_collector.codec.record import to_json_lines  # noqa: E402

try:
    from pt_collector import _native
except ImportError:
    sys.exit("pt_collector._native is not built: run `make setup` with cargo on the PATH")

SHIFT = 18
CHUNK = 4096


def capture(count: int, sources: int) -> Path:
    path = HERE / "out" / f"native-{count}-{sources}.pcap"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            writer = PcapWriter(f, 1)
            for capture_ns, packet in generate(count, hops=5, segments=3, sources=sources, tts_shift=SHIFT):
                writer.write(capture_ns, ethernet(packet))
        tmp.rename(path)
    return path


def native_file_rate(path: Path, fmt: str, copy: bool = False) -> tuple[float, int]:
    """decode_capture over the mapped file; the encoded bytes handed to Python as a memoryview of the batch
    (no copy), or with `copy` as the `bytes` of Batch.data."""
    decoder = _native.Decoder(SHIFT, None, fmt)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        view = memoryview(data)
        reader, probes, size = _native.CaptureReader(), 0, 0
        started = time.process_time()
        while reader.offset < len(data):
            batch, _, error = decoder.decode_capture(reader, view[reader.offset :], True, CHUNK)
            assert error is None, error
            probes += batch.decoded
            size += len(batch.data if copy else memoryview(batch))  # the bytes handed over, as a sink takes them
        elapsed = time.process_time() - started
        view.release()
    return probes / elapsed, size


def native_frames_rate(frames: list, fmt: str) -> float:
    decoder = _native.Decoder(SHIFT, None, fmt)
    lists = [[(ns, f) for _, ns, f in frames[i : i + CHUNK]] for i in range(0, len(frames), CHUNK)]
    started = time.process_time()
    for chunk in lists:
        memoryview(decoder.decode_frames(chunk))  # the bytes are the work's product
    return len(frames) / (time.process_time() - started)


def python_rate(frames: list, decoder: object) -> float:
    decode = decoder.decode  # type: ignore[attr-defined]
    started = time.process_time()
    batch = []
    for linktype, capture_ns, frame in frames:
        try:
            record = decode(frame, capture_ns, linktype)
        except DecodeError:
            continue
        if record is not None:
            batch.append(record)
            if len(batch) == 1024:
                to_json_lines(batch)
                batch = []
    to_json_lines(batch)
    return len(frames) / (time.process_time() - started)


def diff(frames: list, count: int) -> None:
    done, step, started = 0, 50_000, time.process_time()
    hostile = mutations(frames, count, seed=11)
    while done < count:
        chunk = [next(hostile) for _ in range(min(step, count - done))]
        for fmt in ("json", "msgpack"):
            if native_engine(chunk, SHIFT, {}, fmt) != python_engine(chunk, SHIFT, {}, fmt):
                sys.exit(f"the engines disagree on mutated frames {done}..{done + len(chunk)} ({fmt})")
        done += len(chunk)
    print(f"# diff: {count:,} mutated frames, JSON lines and msgpack: byte-identical, same counters "
          f"({time.process_time() - started:.0f} s)")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=600_000)
    parser.add_argument("--sources", type=int, default=256)
    parser.add_argument("--hostile", type=int, default=100_000)
    parser.add_argument("--python-count", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--diff", type=int, default=0)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    path = capture(args.count, args.sources)
    frames = list(read_capture(path))
    hostile = list(mutations(frames[:20_000], args.hostile, seed=3))
    for sample in (frames[:20_000], hostile[:20_000]):
        for fmt in ("json", "msgpack"):
            if native_engine(sample, SHIFT, {}, fmt) != python_engine(sample, SHIFT, {}, fmt):
                sys.exit(f"the engines disagree ({fmt}): no figures")
    if args.diff:
        diff(frames[:20_000], args.diff)

    few = frames[: args.python_count]
    best: dict[str, float] = {}
    sizes: dict[str, int] = {}
    for _ in range(args.repeat):  # interleaved, so drift on a shared machine hits all
        for fmt in ("json", "msgpack"):
            rate, sizes[fmt] = native_file_rate(path, fmt)
            best[f"native pcap -> {fmt}"] = max(best.get(f"native pcap -> {fmt}", 0.0), rate)
            if fmt == "json":
                rate, _ = native_file_rate(path, fmt, copy=True)
                best["native pcap -> json bytes"] = max(best.get("native pcap -> json bytes", 0.0), rate)
            name = f"native frames -> {fmt}"
            best[name] = max(best.get(name, 0.0), native_frames_rate(frames, fmt))
        best["python engine -> json"] = max(best.get("python engine -> json", 0.0), python_rate(few, Decoder(SHIFT)))
        rate = python_rate(few, BaselineDecoder(SHIFT))
        best["baseline -> json"] = max(best.get("baseline -> json", 0.0), rate)
        best["native hostile frames"] = max(best.get("native hostile frames", 0.0), native_frames_rate(hostile, "json"))
        rate = python_rate(hostile[: args.python_count], Decoder(SHIFT))
        best["python hostile frames"] = max(best.get("python hostile frames", 0.0), rate)

    cpu = cpu_model()
    print(f"# {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores (pinned to one), {cpu}, "
          f"Python {platform.python_version()}, native {_native.VERSION}")  # fmt: skip
    print(f"# {args.count:,} encapsulated probes (5 MCDs, 3 segments) on {args.sources} paths, tts-shift {SHIFT}")
    print(f"# {args.hostile:,} hostile frames; python engines on {len(few):,}; best of {args.repeat}, interleaved")
    json_size, msgpack_size = sizes["json"] / args.count, sizes["msgpack"] / args.count
    print(f"# encoded: JSON lines {json_size:.0f} B/probe, msgpack {msgpack_size:.0f} B/probe")
    for name, rate in best.items():
        print(f"{name:<28} {rate:>12,.0f} /s   {1e9 / rate:8.0f} ns each")
    ratio = best["native pcap -> json"] / best["baseline -> json"]
    print(f"{'native / baseline (json)':<28} {ratio:>12.1f} x")
    ratio = best["native pcap -> json"] / best["python engine -> json"]
    print(f"{'native / python (json)':<28} {ratio:>12.1f} x")
    ratio = best["native hostile frames"] / best["native frames -> json"]
    print(f"{'native hostile / typical':<28} {ratio:>12.2f}")
    ratio = best["python hostile frames"] / best["python engine -> json"]
    print(f"{'python hostile / typical':<28} {ratio:>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
