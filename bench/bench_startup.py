#!/usr/bin/env python3
"""What a `ptc` start costs, and the replay command with it: this checkout next to another one, in one run.

    python bench/bench_startup.py --before DIR [--count 600000] [--repeat 5] [--tts-shift 18]

DIR holds the other code to compare, a checkout or `git archive` of it with its built engine
(pt_collector/_native*.so copied in), e.g. for the main branch:

    mkdir -p /tmp/before && git archive main pt_collector | tar -x -C /tmp/before
    cp pt_collector/_native.abi3.so /tmp/before/pt_collector/

Each tree's pt_collector is copied twice into bench/out/startup/: once with its bytecode compiled (as any
install has it: pip compiles a wheel's modules), once without, run with PYTHONDONTWRITEBYTECODE=1 (every
start compiles ptc's own modules, as in an editable checkout where bytecode is not written). Each is run
with this interpreter (`python -P`, PYTHONPATH the copy), pinned to one core, interleaved, best of
--repeat, in CPU time (getrusage of the child: user + system):
  --version        `ptc --version`
  replay --help    `ptc replay --help`
  replay 1 probe   `ptc replay ONE -o /dev/null`: start-up and the command's own set-up
  replay FILE      `ptc replay FILE -o /dev/null` on the realistic capture of bench_decode.py
"""

from __future__ import annotations

import argparse
import compileall
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_decode import capture, cpu_model  # noqa: E402

PTC = "import sys; from pt_collector.cli.main import main; sys.exit(main(prog_name='ptc'))"


def prepare(name: str, source: Path, compiled: bool) -> Path:
    """A copy of `source`/pt_collector under bench/out/startup/, with or without its bytecode."""
    root = HERE / "out" / "startup" / f"{name}-{'compiled' if compiled else 'source'}"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(source / "pt_collector", root / "pt_collector", ignore=shutil.ignore_patterns("__pycache__"))
    if compiled:
        compileall.compile_dir(root / "pt_collector", quiet=1)
    return root


def cpu_seconds(root: Path, compiled: bool, args: list[str]) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PTC_")} | {"PYTHONPATH": str(root)}
    if compiled:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    cmd = [sys.executable, "-P", "-c", PTC, *args]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="the other tree (holding pt_collector/)")
    parser.add_argument("--count", type=int, default=600_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tts-shift", default="18")
    parser.add_argument("--sources", type=int, default=256)
    args = parser.parse_args()

    big, one = capture(args.count, args.sources, f"decode-{args.sources}"), capture(1, 1, "decode-1")
    replay = ["-o", "/dev/null", "--quiet", "--no-progress", "--tts-shift", args.tts_shift]
    cases = {
        "--version": ["--version"],
        "replay --help": ["replay", "--help"],
        "replay 1 probe": ["replay", str(one), *replay],
        f"replay {args.count:,} probes": ["replay", str(big), *replay],
    }
    trees = {
        (name, compiled): prepare(name, source, compiled)
        for name, source in (("before", args.before), ("after", HERE.parent))
        for compiled in (True, False)
    }
    best: dict[tuple[str, str, bool], float] = {}
    for _ in range(args.repeat):  # interleaved, so drift on a shared machine hits every variant
        for case, case_args in cases.items():
            for (name, compiled), root in trees.items():
                seconds = cpu_seconds(root, compiled, case_args)
                key = (case, name, compiled)
                best[key] = min(best.get(key, seconds), seconds)

    cpu = cpu_model()
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}")
    print(f"# CPU seconds of the child, one core, best of {args.repeat}, interleaved; before: {args.before}")
    print(f"{'':28} {'before':>9} {'after':>9}   (bytecode compiled)  {'before':>9} {'after':>9}   (from source)")
    for case in cases:
        row = [best[(case, name, compiled)] for compiled in (True, False) for name in ("before", "after")]
        print(f"{case:<28} {row[0]:>8.3f}s {row[1]:>8.3f}s {'':22} {row[2]:>8.3f}s {row[3]:>8.3f}s")
    last = f"replay {args.count:,} probes"
    for compiled in (True, False):
        rates = [args.count / best[(last, name, compiled)] for name in ("before", "after")]
        how = "bytecode compiled" if compiled else "from source"
        print(f"{'command rate, ' + how:<40} {rates[0]:>12,.0f} -> {rates[1]:>12,.0f} probes/s")
        work = [best[(last, name, compiled)] - best[("replay 1 probe", name, compiled)] for name in ("before", "after")]
        print(f"{'  less its start-up (1-probe replay)':<40} {work[0]:>11.3f}s -> {work[1]:>11.3f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
