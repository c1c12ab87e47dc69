#!/usr/bin/env python3
"""The flow rules' functions: cost per probe of pass, sample and histogram, in one run.

    python bench/bench_rules.py [--count 200000] [--repeat 5] [--tts-shift 18] [--engine python|native|both]

Typical encapsulated probes (5 MCDs, 3 segments, 16 sources) are generated
once into bench/out/ and read into memory. Each figure is the best of
--repeat, the setups interleaved so that drift on a shared machine hits
them all:
  decode only             Decoder.decode over the frames (what replay does without rules)
  decode + <function>     decoding, then RuleEngine.route per batch of 1024, and a final flush
  <function> alone        RuleEngine.route over records already decoded
with one rule matching every probe: pass, sample (1 in 10), histogram
(1000 ms windows, the default 12 bounds for end-to-end and per-hop
delays). Reported: ns of CPU time (time.process_time) per probe, and the
ratio to pass.

With --engine native (or both), the same over the native engine
(NativeEngine.decode_batch per 1024 frames): "native decode only" keeps its
records encoded, as a replay without rules does; "native decode + <function>"
matches the rules in Python on Record objects read back from the batch
(msgspec), the way before the core matched them (and still the way for a
batch the core did not route); "native core + <function>" has the core match
the rules as it decodes (NativeEngine.match_rules, pipeline/core_rules.py):
pass and sample outputs stay encoded, and a histogram rule's windows are
kept in the core (native/src/path_histogram.rs), fed without a Record. In
the native setups each output's bytes are made as a sink takes them
(to_json_lines). Each output is checked to be the same in both ways first.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench_decode import capture as decode_capture  # noqa: E402
from bench_decode import cpu_model  # noqa: E402

from pt_collector.capture.pcap import read_capture  # noqa: E402
from pt_collector.codec.decode import Decoder  # noqa: E402
from pt_collector.codec.record import to_json_lines  # noqa: E402
from pt_collector.pipeline.engine import NATIVE, NativeEngine  # noqa: E402
from pt_collector.pipeline.functions import RuleEngine  # noqa: E402
from pt_collector.pipeline.rules import parse_rules  # noqa: E402

BATCH = 1024  # as replay hands records to its sink
RULES = {
    "pass": {"function": "pass"},
    "sample": {"function": "sample", "one_in": 10},
    "histogram": {"function": "histogram", "interval_ms": 1000},
}


def capture(count: int) -> Path:
    return decode_capture(count, sources=16, name="rules")


def engine(function: str | None) -> RuleEngine | None:
    return None if function is None else RuleEngine(parse_rules([RULES[function]]), "pt-probes")


def decode_and_route(frames: list, tts_shift: int | None, function: str | None) -> float:
    """Seconds to decode every frame and route the records (no routing: `function` None)."""
    decode, rules = Decoder(tts_shift).decode, engine(function)
    started = time.process_time()
    for i in range(0, len(frames), BATCH):
        records = [decode(frame, capture_ns, linktype) for linktype, capture_ns, frame in frames[i : i + BATCH]]
        if rules is not None:
            rules.route(records)
    if rules is not None:
        rules.flush()
    return time.process_time() - started


def native_decode_and_route(frames: list, tts_shift: int | None, function: str | None, core: bool = False) -> float:
    """Seconds to decode every frame with the native engine and route the records, read back (None: keep them
    encoded, no routing), or matched in the core (`core`). Each output's bytes are made, as a sink would take them."""
    native, rules = NativeEngine(tts_shift), engine(function)
    if core and rules is not None:
        native.match_rules(rules.in_core())
    decode = native.decode_batch
    started = time.process_time()
    for i in range(0, len(frames), BATCH):
        records = decode(frames[i : i + BATCH], 1).records
        if rules is not None:
            emitted = rules.route(records)
            for _, _, items in emitted.outputs():
                to_json_lines(items)
    if rules is not None:
        rules.flush()
    return time.process_time() - started


def same_outputs(frames: list, tts_shift: int | None) -> bool:
    """Whether matching in the core gives each function's outputs and counters as matching read-back records does."""
    for function in RULES:
        found = []
        for core in (False, True):
            native, rules = NativeEngine(tts_shift), engine(function)
            assert rules is not None
            if core:
                native.match_rules(rules.in_core())
            lines = b"".join(
                bytes(to_json_lines(items))
                for i in range(0, len(frames), BATCH)
                for _, _, items in rules.route(native.decode_batch(frames[i : i + BATCH], 1).records).outputs()
            )
            lines += b"".join(bytes(to_json_lines(items)) for _, _, items in rules.flush().outputs())
            found.append((lines, [vars(c) for _, c in rules.rule_counters()]))
        if found[0] != found[1]:
            return False
    return True


def route_only(records: list, function: str) -> float:
    rules = engine(function)
    assert rules is not None
    started = time.process_time()
    for i in range(0, len(records), BATCH):
        rules.route(records[i : i + BATCH])
    rules.flush()
    return time.process_time() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tts-shift", type=int, default=18, help="18: every midpoint's time, per-hop delays")
    parser.add_argument("--engine", choices=("python", "native", "both"), default="python")
    args = parser.parse_args()
    if args.engine != "python" and not NATIVE:
        sys.exit("the native engine is not built (make setup)")

    frames = list(read_capture(capture(args.count)))
    records = [Decoder(args.tts_shift).decode(f, t, link) for link, t, f in frames]
    checked = engine("histogram")
    assert checked is not None
    emitted = checked.route(records)
    emitted.histograms["pt-probes"] += checked.flush().histograms["pt-probes"]
    if sum(h.count for h in emitted.histograms["pt-probes"]) != len(records):
        sys.exit("the histograms do not count every probe: no figures")

    if args.engine != "python" and not same_outputs(frames[: 20 * BATCH], args.tts_shift):
        sys.exit("the core's routing differs from the records read back: no figures")

    setups: dict[str, Callable[[], float]] = {}
    if args.engine != "native":
        setups["decode only"] = lambda: decode_and_route(frames, args.tts_shift, None)
        for function in RULES:
            setups[f"decode + {function}"] = lambda f=function: decode_and_route(frames, args.tts_shift, f)
    if args.engine != "python":
        setups["native decode only"] = lambda: native_decode_and_route(frames, args.tts_shift, None)
        for function in RULES:
            setups[f"native decode + {function}"] = lambda f=function: native_decode_and_route(
                frames, args.tts_shift, f
            )
        for function in RULES:
            setups[f"native core + {function}"] = lambda f=function: native_decode_and_route(
                frames, args.tts_shift, f, core=True
            )
    for function in RULES:
        setups[f"{function} alone"] = lambda f=function: route_only(records, f)
    best: dict[str, float] = {}
    for _ in range(args.repeat):
        for name, timed in setups.items():
            best[name] = min(best.get(name, float("inf")), timed())

    cpu = cpu_model()
    print(f"# {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}")
    print(f"# {args.count:,} encapsulated probes (5 MCDs, 3 segments, 16 sources), tts-shift {args.tts_shift}")
    print(f"# best of {args.repeat}, interleaved; one rule matching every probe")
    print(f"{'':<22} {'ns/probe':>10} {'probes/s':>12} {'vs pass':>8}")
    for name, seconds in best.items():
        ns = seconds / args.count * 1e9
        kind = name.split(" + ")[0] + " + pass" if " + " in name else "pass alone"
        ratio = f"{seconds / best[kind]:.2f}x" if not name.endswith("decode only") else ""
        print(f"{name:<26} {ns:>10,.0f} {args.count / seconds:>12,.0f} {ratio:>8}")
    for prefix in ("decode", "native decode", "native core"):
        if f"{prefix} + pass" in best:
            only = "native decode only" if prefix == "native core" else f"{prefix} only"
            extra = (best[f"{prefix} + histogram"] - best[f"{prefix} + pass"]) / args.count * 1e9
            rules = (best[f"{prefix} + pass"] - best[only]) / args.count * 1e9
            print(f"# {prefix}: rules (pass) add {rules:,.0f} ns/probe, histogram {extra:,.0f} ns/probe more than pass")
    return 0


if __name__ == "__main__":
    sys.exit(main())
