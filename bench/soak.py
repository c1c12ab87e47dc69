#!/usr/bin/env python3
"""Memory over a long run: `ptc collect` under steady probe traffic, its RSS sampled.

    python bench/soak.py [--rate 5000] [--minutes 10] [--sample-s 5] [--max-growth-pct 10]

Needs root (a network namespace, a packet socket). A veth pair joins a
namespace of its own to the root namespace (tests/netns.py's veth_pair);
`ptc collect --iface RX --output /dev/null --tts-shift 18` captures on the
root end. In the namespace a small paced sender (LOOP_SENDER) loops a pcap
of --frames generated probes (from --sources sources, so the decoder sees
many layouts, addresses and MCDs) at --rate frames a second for --minutes:
the pool is built once, a few MB, and sent round and round. Every --sample-s
seconds the collector's VmRSS (/proc/PID/status) and its last counters line
(probes decoded, kernel drops) are noted. At the end: a table, the sender's
achieved rate, the final counters, and the verdict: RSS at minute 1 (after
warm-up: the caches fill, the allocator settles) against RSS at the end.
Exit status 1 if it grew by more than --max-growth-pct percent, or if the
collector died; 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from netns import veth_pair  # noqa: E402

from pt_collector.capture.pcap import PcapWriter  # noqa: E402
from pt_collector.codec.encode import ethernet  # noqa: E402
from pt_collector.codec.generate import generate  # noqa: E402

# Loops the frames of one pcap out of an interface at a steady rate for a number of seconds:
# each wakeup (about every millisecond) sends the frames due by then, so the rate holds on average
# without a system call per frame for sleeping. Prints "sent N SECONDS CPU_SECONDS".
LOOP_SENDER = """
import socket, sys, time
from pt_collector.capture.pcap import read_capture

iface, path, rate, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
frames = [frame for _, _, frame in read_capture(path)]
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
sock.bind((iface, 0))
started, cpu, sent, n = time.monotonic(), time.process_time(), 0, len(frames)
while True:
    elapsed = time.monotonic() - started
    if elapsed >= seconds:
        break
    due = int(elapsed * rate)
    while sent < due:
        sock.send(frames[sent % n])
        sent += 1
    time.sleep(0.001)
print("sent", sent, time.monotonic() - started, time.process_time() - cpu, flush=True)
"""


def rss_kib(pid: int) -> tuple[int, int] | None:
    """(VmRSS, RssAnon) of a process in KiB, None once it is gone.

    VmRSS also counts the pages of the capture ring (mmap'ed from the kernel, up to --ring-blocks x
    --ring-block-size) that the kernel has written to at least once; RssAnon is the heap alone.
    """
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(fields["VmRSS"].split()[0]), int(fields["RssAnon"].split()[0])


class Collector:
    """`ptc collect` with JSON log lines; the last counters are kept as they come."""

    def __init__(self, iface: str, stats_s: float) -> None:
        cmd = [
            sys.executable, "-m", "pt_collector.cli.main", "collect", "--iface", iface, "--output", "/dev/null",
            "--tts-shift", "18", "--log-format", "json", "--stats-interval", str(stats_s),
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, preexec_fn=_before_other_work)
        self.last: dict = {}
        self.other: list[str] = []  # lines that are neither counters nor the final one
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                event = json.loads(line)
            except ValueError:
                self.other.append(line.rstrip())
                continue
            if event.get("event") in ("counters", "stopped"):
                self.last = event
                self.ready.set()
            else:
                self.other.append(line.rstrip())

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=60)


def _before_other_work() -> None:
    """Sender and collector at nice NICE, as in bench_capture.py: on a shared machine, other work waits first."""
    os.nice(NICE)


def write_pool(path: Path, frames: int, sources: int) -> None:
    with path.open("wb") as f:
        writer = PcapWriter(f, 1)
        for capture_ns, packet in generate(frames, sources=sources, seed=7):
            writer.write(capture_ns, ethernet(packet))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=5000, help="probes a second (default 5000)")
    ap.add_argument("--minutes", type=float, default=10, help="how long (default 10)")
    ap.add_argument("--sample-s", type=float, default=5, help="RSS sampling period (default 5 s)")
    ap.add_argument("--warmup-s", type=float, default=60, help="the baseline sample's time (default 60 s)")
    ap.add_argument("--max-growth-pct", type=float, default=10, help="RSS growth after warm-up that fails")
    ap.add_argument("--frames", type=int, default=30000, help="distinct frames in the looped pool")
    ap.add_argument("--sources", type=int, default=64, help="probe sources in the pool")
    ap.add_argument("--table-every-s", type=float, default=30, help="rows of the final table")
    args = ap.parse_args()
    seconds = args.minutes * 60

    with tempfile.TemporaryDirectory() as tmp, veth_pair() as veth:
        pool = Path(tmp) / "pool.pcap"
        write_pool(pool, args.frames, args.sources)
        collector = Collector(veth.rx_iface, args.sample_s)
        if not collector.ready.wait(30):
            print(f"ptc collect did not start: {collector.other[-5:]}", file=sys.stderr)
            collector.proc.kill()
            return 1
        pid = collector.proc.pid
        sender = subprocess.Popen(
            ["ip", "netns", "exec", veth.netns, sys.executable, "-c", LOOP_SENDER,
             veth.tx_iface, str(pool), str(args.rate), str(seconds)],
            stdout=subprocess.PIPE, text=True, preexec_fn=_before_other_work,
        )  # fmt: skip
        started = time.monotonic()
        samples: list[Sample] = []
        print(
            f"soak: {args.rate:,.0f} probes/s for {args.minutes:g} min into ptc collect (pid {pid}) on {veth.rx_iface}"
        )
        print(HEADER)
        next_at = started
        while sender.poll() is None:
            next_at += args.sample_s
            time.sleep(max(0.0, next_at - time.monotonic()))
            rss = rss_kib(pid)
            if rss is None:
                break
            last = collector.last
            samples.append(
                Sample(time.monotonic() - started, *rss, last.get("decoded", 0), last.get("kernel_dropped", 0))
            )
            print(samples[-1].row(), flush=True)
        sent_line = sender.communicate(timeout=30)[0].split()
        time.sleep(1)  # the last ring block is handed over within --ring-timeout-ms
        code = collector.stop() if collector.proc.poll() is None else collector.proc.returncode
        final = collector.last

    return report(args, samples, sent_line, final, code, collector.other)


NICE = -10
HEADER = f"{'time':>7} {'RSS MiB':>9} {'anon MiB':>9} {'probes':>12} {'kernel drops':>13}"


@dataclass
class Sample:
    t: float  # seconds since the sender started
    rss_kib: int  # VmRSS
    anon_kib: int  # RssAnon
    probes: int  # decoded so far (the collector's last counters line)
    kernel_dropped: int

    def row(self) -> str:
        return (
            f"{self.t:6.0f}s {self.rss_kib / 1024:9.1f} {self.anon_kib / 1024:9.1f} "
            f"{self.probes:12,} {self.kernel_dropped:13,}"
        )


def every(samples: list[Sample], period_s: float) -> list[Sample]:
    """The first sample at or past each multiple of `period_s`, and the last one."""
    shown, mark = [], 0.0
    for sample in samples:
        if sample.t >= mark:
            shown.append(sample)
            while mark <= sample.t:
                mark += period_s
    if samples and shown[-1] is not samples[-1]:
        shown.append(samples[-1])
    return shown


def report(args, samples: list[Sample], sent_line: list[str], final: dict, code: int, other: list[str]) -> int:
    sent, sent_s = int(sent_line[1]), float(sent_line[2])
    print(f"\nsender: {sent:,} frames in {sent_s:.1f} s = {sent / sent_s:,.0f}/s (asked {args.rate:,.0f}/s)")
    print(
        f"collector: exit {code}; {final.get('frames', 0):,} frames, {final.get('decoded', 0):,} probes, "
        f"{final.get('not_pt', 0):,} not PT, {sum(final.get('malformed', {}).values()):,} malformed, "
        f"{final.get('kernel_dropped', 0):,} kernel drops"
    )
    for line in other[-5:]:
        print(f"collector said: {line}")
    print(f"\n{HEADER}")
    for sample in every(samples, args.table_every_s):
        print(sample.row())
    if code != 0 or not samples:
        print("\nverdict: FAIL, the collector did not run to the end")
        return 1
    base = next((s for s in samples if s.t >= args.warmup_s), samples[0])
    end = samples[-1]
    growth_mib = (end.rss_kib - base.rss_kib) / 1024
    growth_pct = 100 * (end.rss_kib - base.rss_kib) / base.rss_kib
    anon_mib = (end.anon_kib - base.anon_kib) / 1024
    ok = growth_pct <= args.max_growth_pct
    print(
        f"\nRSS at {base.t:.0f} s: {base.rss_kib / 1024:.1f} MiB; at the end ({end.t:.0f} s): "
        f"{end.rss_kib / 1024:.1f} MiB; growth {growth_mib:+.1f} MiB ({growth_pct:+.1f}%), of which heap "
        f"(RssAnon) {anon_mib:+.1f} MiB; peak {max(s.rss_kib for s in samples) / 1024:.1f} MiB"
    )
    middle = min(samples, key=lambda s: abs(s.t - end.t / 2))
    print(
        "RSS at the start, middle and end: "
        + ", ".join(f"{s.rss_kib / 1024:.1f} MiB at {s.t:.0f} s" for s in (samples[0], middle, end))
        + f"; kernel drops {end.kernel_dropped:,}"
    )
    print(f"verdict: {'PASS' if ok else 'FAIL'} (threshold {args.max_growth_pct:g}% after warm-up)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
