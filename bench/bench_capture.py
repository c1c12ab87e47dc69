#!/usr/bin/env python3
"""Live capture at rising rates: `ptc collect` (ring and socket) next to a scapy baseline, in one run.

    python bench/bench_capture.py [--rates 25k,50k,100k,150k,200k,300k,max] [--seconds 5]
                                  [--receivers ring,socket,baseline,ring-capture,ring-decode] [--repeat 1]
                                  [--report docs/capture-benchmark.md] [--plot docs/capture-benchmark.png]

Needs root (network namespaces, packet sockets) and two Debian packages:
tcpreplay (paced sending) and netsniff-ng (trafgen, the fastest unpaced
sender). A veth pair joins a namespace of its own, where the sender sends
pre-built probe frames, to the root namespace, where the receiver captures;
IPv6 is off on both ends, so every frame on the link is a probe. Both are
deleted at the end. Traffic never leaves the pair.

The sender runs pinned to CPU 0, the receiver to CPU 1, both at nice -10
so that unrelated work on a shared machine takes less of their CPUs (each
point notes how much it took all the same). A veth delivers on the sending
CPU, so the kernel's receive path (the BPF filter, the copy into the ring or
socket queue) runs on CPU 0 as softirq work, the way a NIC's interrupts
would on a core of their own, and the receiver's CPU time is its own user
and system time: capture and decoding.

First the sender's top rate through the pair is measured with no receiver.
Then for each rate and each receiver: start the receiver, send --seconds
worth of probes at that rate (`tcpreplay --pps RATE`, which paces frame by
frame; `trafgen -b` would send each second's frames in one burst; "max" is
trafgen unpaced through its TX ring), wait until the receiver has read every
frame its socket accepted, stop it with SIGINT, read its final counters.
Receivers:

  ring          ptc collect --capture ring --output /dev/null (JSON lines, no Kafka)
  ring-base     the same with another install's ptc (--baseline-ptc, e.g. the main checkout's), for a same-run before
  ring-1m       ring with 1 MiB blocks x 64 (--ring-block-size 1048576 --ring-blocks 64, the default until 2026-12-03)
  socket        ptc collect --capture socket --output /dev/null
  baseline      bench/capture_baseline.py: blocking recv() + scapy, JSON lines to /dev/null
  ring-capture  ptc's RingReceiver alone in a poll loop: frames drained and counted, no decoding
  ring-decode   the same, each frame decoded by ptc's Decoder (records made and dropped): capture + decode

Per point: the achieved send rate (from the receiving interface's counter),
probes decoded, loss, kernel drops (ring or socket buffer full), how long
the receiver took to catch up after the last frame arrived (until it went
idle: under 5% of a CPU for 100 ms), and its CPU time (user + system, from
/proc/PID/task/*/schedstat) from the first frame sent until then, per probe. Results go to bench/out/capture.json, a
section of --report between markers (the rest of the file is kept) and a
PNG plot; `--from-json FILE` redraws both without measuring.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

SENDER_CPU, RECEIVER_CPU = 0, 1
NICE = -10  # sender and receiver before other work on a shared machine (CPU time is measured, not wall time)
STATS_INTERVAL_S = 0.2
READY_TIMEOUT_S = 60.0  # a receiver's first counters line (scapy's import is slow here)
DRAIN_TIMEOUT_S = 60.0
IDLE_WINDOW_S, IDLE_SHARE, IDLE_POLL_S = 0.1, 0.05, 0.01  # caught up: under 5% of a CPU for 100 ms
SEND_TIMEOUT_S = 300.0
MARK_BEGIN = "<!-- bench_capture.py: measured section, rewritten by each run -->"
MARK_END = "<!-- end of bench_capture.py section -->"
SENDERS = {"tcpreplay": "tcpreplay", "trafgen": "netsniff-ng"}  # command: Debian package
RECEIVERS = (
    "ring", "ring-base", "ring-1m", "ring-python", "ring-t10", "ring-malloc", "socket", "baseline",
    "ring-capture", "ring-decode", "ring-frames", "ring-blocks", "socket-frames", "socket-blocks",
)  # fmt: skip
# environment of a receiver besides the defaults: its engine (the others: native where built); ring-malloc: glibc's
# allocator told to keep freed memory (no trim, no mmap per block-sized allocation), a page-fault experiment
ENV_OF = {
    "ring-python": {"PTC_ENGINE": "python"},
    "ring-malloc": {"MALLOC_TRIM_THRESHOLD_": str(256 << 20), "MALLOC_MMAP_THRESHOLD_": str(64 << 20)},
}
# ptc collect options of a receiver besides the defaults (ring-t10: the block timeout, default until 2026-12-03)
OPTIONS_OF = {
    "ring-t10": ["--ring-timeout-ms", "10"],
    "ring-1m": ["--ring-block-size", str(1 << 20), "--ring-blocks", "64"],  # the default geometry until 2026-12-03
}
BASELINE_PTC: list[str] = []  # ring-base's ptc (--baseline-ptc)
TRAFGEN_NOISE = ("Cannot set system socket memory",)
TOPSPEED = 0  # the rate "top": tcpreplay --topspeed
TRAFGEN_FRAMES = 4096  # distinct frames trafgen cycles through (the rest only tcpreplay sends)


# --- the veth pair ---------------------------------------------------------------------------------------------------


def run(*cmd: str, timeout: float = 30.0) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout)
    if done.returncode != 0:
        reason = done.stderr.strip() or done.stdout.strip()
        raise RuntimeError(f"{shlex.join(cmd)} failed ({done.returncode}): {reason}")
    return done.stdout


@dataclass
class Link:
    netns: str
    rx: str  # root namespace: the receivers capture here
    tx: str  # in netns: trafgen sends here

    def rx_counters(self) -> tuple[int, int]:
        base = Path("/sys/class/net") / self.rx / "statistics"
        return int((base / "rx_packets").read_text()), int((base / "rx_dropped").read_text())

    def tx_counters(self) -> tuple[int, int]:
        (info,) = json.loads(run("ip", "-n", self.netns, "-j", "-s", "link", "show", self.tx))
        stats = info["stats64"]["tx"]
        return stats["packets"], stats["dropped"]


@contextlib.contextmanager
def veth_pair() -> Iterator[Link]:
    tag = f"{os.getpid() & 0xFFFF:04x}"
    link = Link(netns=f"ptc-bench-{tag}", rx=f"ptcbrx{tag}", tx=f"ptcbtx{tag}")
    run("ip", "netns", "add", link.netns)
    try:
        run("ip", "link", "add", link.rx, "type", "veth", "peer", "name", link.tx, "netns", link.netns)
        try:
            # IPv6 off before the links come up: no solicitations, no DAD; packet sockets still see the frames
            run("sysctl", "-qw", f"net.ipv6.conf.{link.rx}.disable_ipv6=1")
            run("ip", "netns", "exec", link.netns, "sysctl", "-qw", f"net.ipv6.conf.{link.tx}.disable_ipv6=1")
            run("ip", "-n", link.netns, "link", "set", link.tx, "up")
            run("ip", "link", "set", link.rx, "up")
            wait_running(link.rx)
            yield link
        finally:
            subprocess.run(["ip", "link", "del", link.rx], capture_output=True, check=False)
    finally:
        subprocess.run(["ip", "netns", "del", link.netns], capture_output=True, check=False)


def wait_running(iface: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while Path(f"/sys/class/net/{iface}/operstate").read_text().strip() != "up":
        if time.monotonic() > deadline:
            raise RuntimeError(f"{iface} did not come up")
        time.sleep(0.05)


# --- the sender ------------------------------------------------------------------------------------------------------


def probe_frames(distinct: int) -> list[bytes]:
    from pt_collector.codec.encode import ethernet
    from pt_collector.codec.generate import generate

    return [ethernet(packet) for _, packet in generate(distinct, hops=5, segments=3, encap=True, sources=256)]


@dataclass(frozen=True)
class SenderFiles:
    pcap: Path
    config: Path
    frames: int


def sender_files(frames: list[bytes]) -> SenderFiles:
    """The frames as a pcap (for tcpreplay) and a trafgen packet configuration, cached in bench/out/."""
    from pt_collector.capture.pcap import PcapWriter

    out = HERE / "out"
    out.mkdir(exist_ok=True)
    pcap, config = out / f"capture-{len(frames)}.pcap", out / f"capture-{len(frames)}.trafgen"
    if not pcap.exists():
        with open(pcap.with_suffix(".tmp"), "wb") as f:
            writer = PcapWriter(f, 1)
            for frame in frames:
                writer.write(0, frame)
        pcap.with_suffix(".tmp").replace(pcap)
    if not config.exists():  # trafgen compiles its configuration: the first TRAFGEN_FRAMES frames, cycled
        lines = ("{ " + ", ".join(f"0x{b:02x}" for b in frame) + " }\n" for frame in frames[:TRAFGEN_FRAMES])
        config.with_suffix(".tmp").write_text("".join(lines))
        config.with_suffix(".tmp").replace(config)
    return SenderFiles(pcap, config, len(frames))


@dataclass
class Sent:
    count: int
    rate_pps: float  # achieved: frames arrived on the receiving end over the time they took to arrive
    wall_s: float
    arrived: int  # the receiving interface's rx_packets
    if_dropped: int  # rx_dropped on the receiving end plus tx_dropped on the sending end
    last_arrival: float  # time.monotonic() when the last frame arrived on the receiving end


class ArrivalClock(threading.Thread):
    """Polls the receiving interface's rx_packets: when the first and the last frame arrived."""

    def __init__(self, link: Link, expect: int) -> None:
        super().__init__(daemon=True)
        self.link, self.expect = link, expect
        self.base = link.rx_counters()[0]
        self.first = self.last = 0.0
        self.seen = 0
        self.done = threading.Event()

    def run(self) -> None:
        path = Path("/sys/class/net") / self.link.rx / "statistics" / "rx_packets"
        with open(path, "rb", buffering=0) as f:
            while not self.done.is_set():
                f.seek(0)
                seen = int(f.read()) - self.base
                now = time.monotonic()
                if seen and not self.first:
                    self.first = now
                if seen != self.seen:
                    self.seen, self.last = seen, now
                    if seen >= self.expect:
                        return
                time.sleep(0.002)


def send(link: Link, files: SenderFiles, count: int, rate_pps: int | None) -> Sent:
    """Send `count` probe frames out of link.tx: paced at `rate_pps` by tcpreplay, or unpaced (None) by trafgen.

    tcpreplay paces frame by frame (`trafgen -b` sends each second's frames in
    one burst, then sleeps); trafgen's TX ring is the faster unpaced sender.
    """
    tool = "trafgen" if rate_pps is None else "tcpreplay"
    cmd = ["ip", "netns", "exec", link.netns, "nice", "-n", str(NICE), "taskset", "-c", str(SENDER_CPU)]
    if rate_pps is not None:  # TOPSPEED: tcpreplay --topspeed
        loops = str(-(-count // files.frames) + 1)
        pace = ["--topspeed"] if rate_pps == TOPSPEED else ["--pps", str(rate_pps)]
        cmd += ["tcpreplay", "-i", link.tx, "-K", *pace, "--limit", str(count), "--loop", loops]
        cmd += [str(files.pcap)]
    else:
        cmd += ["trafgen", "-i", str(files.config), "-o", link.tx, "-P", "1", "-n", str(count), "-Q", "-C"]
    rx0, drop0 = link.rx_counters()
    _, txdrop0 = link.tx_counters()
    clock = ArrivalClock(link, count)
    clock.start()
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=SEND_TIMEOUT_S)
    wall = time.monotonic() - started
    time.sleep(0.05)  # the last frames' softirq work
    clock.done.set()
    clock.join()
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if not line.startswith(TRAFGEN_NOISE)]
        raise RuntimeError(f"{tool} failed ({done.returncode}): {' '.join(errors)[-300:]}")
    rx1, drop1 = link.rx_counters()
    _, txdrop1 = link.tx_counters()
    span = clock.last - clock.first
    rate = (clock.seen - 1) / span if span > 0 else float("nan")
    return Sent(count, rate, wall, rx1 - rx0, (drop1 - drop0) + (txdrop1 - txdrop0), clock.last)


# --- the receivers ---------------------------------------------------------------------------------------------------


@dataclass
class Counters:
    kernel_received: int = 0
    kernel_dropped: int = 0
    frames: int = 0
    decoded: int = 0


PTC_LINE = re.compile(r"kernel ([\d,]+) received ([\d,]+) dropped \| ([\d,]+) frames: ([\d,]+) probes")


def parse_line(line: str) -> Counters | None:
    """A counters line of `ptc collect`, of the baseline or of a --capture-only receiver."""
    if line.startswith("{"):
        try:
            values = json.loads(line)
        except ValueError:
            return None
        return Counters(values["kernel_received"], values["kernel_dropped"], values["frames"], values["decoded"])
    match = PTC_LINE.search(line)
    if match is None:
        return None
    return Counters(*(int(group.replace(",", "")) for group in match.groups()))


def receiver_command(name: str, iface: str) -> list[str]:
    interval = str(STATS_INTERVAL_S)
    if name in ("ring", "socket", "ring-python", "ring-t10", "ring-malloc", "ring-base", "ring-1m"):
        ptc = shutil.which("ptc", path=str(Path(sys.executable).parent)) or "ptc"
        if name == "ring-base":
            if not BASELINE_PTC:
                raise ValueError("ring-base runs the ptc given by --baseline-ptc")
            ptc = BASELINE_PTC[0]
        mode = name.split("-")[0]
        options = ["--capture", mode, *OPTIONS_OF.get(name, [])]
        return [ptc, "collect", "-i", iface, *options, "--output", os.devnull, "--stats-interval", interval]
    if name == "baseline":
        return [sys.executable, str(HERE / "capture_baseline.py"), "--iface", iface, "--stats-interval", interval]
    if name in ("ring-capture", "ring-decode", "ring-frames", "ring-blocks", "socket-frames", "socket-blocks"):
        mode, how = name.split("-")
        only = [sys.executable, str(Path(__file__).resolve()), "--capture-only", mode, "--iface", iface]
        return only + {"decode": ["--decode"], "frames": ["--native"], "blocks": ["--blocks"]}.get(how, [])
    raise ValueError(f"no receiver named {name!r}; known: {', '.join(RECEIVERS)}")


class StillBusy(RuntimeError):
    """A receiver that kept its CPU busy long after the last frame."""


def _pin_receiver() -> None:
    os.sched_setaffinity(0, {RECEIVER_CPU})
    os.nice(NICE)


class Receiver:
    """A receiver process pinned to RECEIVER_CPU; its counters lines are read as they come, with their time."""

    def __init__(self, name: str, iface: str) -> None:
        self.name = name
        env = os.environ | ENV_OF.get(name, {})
        self.proc = subprocess.Popen(
            receiver_command(name, iface),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_pin_receiver,
        )
        self.lines: list[tuple[float, Counters]] = []
        self.other: list[str] = []
        self._new = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            counters = parse_line(line)
            with self._new:
                if counters is None:
                    self.other.append(line.rstrip())
                else:
                    self.lines.append((time.monotonic(), counters))
                self._new.notify_all()

    def wait(self, predicate, timeout_s: float, what: str) -> tuple[float, Counters]:
        deadline = time.monotonic() + timeout_s
        with self._new:
            while True:
                for at, counters in reversed(self.lines):
                    if predicate(at, counters):
                        return at, counters
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited ({self.proc.returncode}): {' | '.join(self.other[-3:])}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"{self.name}: {what} took over {timeout_s:.0f} s; last: {self.lines[-1:]}")
                self._new.wait(min(left, 0.5))

    def schedstat(self) -> tuple[int, int]:
        """(time on a CPU, time waiting for one) of every thread so far, in ns (finer than clock ticks)."""
        ran = waited = 0
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):
                fields = (task / "schedstat").read_text().split()
                ran, waited = ran + int(fields[0]), waited + int(fields[1])
        return ran, waited

    def wait_idle(self, timeout_s: float) -> tuple[float, tuple[int, int]]:
        """When the receiver went idle (its CPU use under IDLE_SHARE for IDLE_WINDOW_S), and its schedstat then.

        Idle means caught up: it has read and decoded every frame its socket
        took (the final counters confirm it). Its counters lines come too
        seldom (ptc's once a second) to time that.
        """
        deadline = time.monotonic() + timeout_s
        samples: list[tuple[float, int, int]] = []
        while True:
            now = time.monotonic()
            ran, waited = self.schedstat()
            samples.append((now, ran, waited))
            for then, ran0, waited0 in reversed(samples):  # the newest sample a window old
                if now - then >= IDLE_WINDOW_S:
                    # waiting for the CPU is not idle: a receiver that other tasks keep off its CPU is behind
                    if (ran - ran0) + (waited - waited0) < IDLE_SHARE * (now - then) * 1e9:
                        return then, (ran0, waited0)
                    break
            if now > deadline:
                raise StillBusy(f"{self.name} still busy {timeout_s:.0f} s after the last frame: {self.syscalls()}")
            time.sleep(IDLE_POLL_S)

    def syscalls(self, seconds: float = 0.5) -> str:
        """What a receiver that does not go idle is doing: a short strace, for the record."""
        if shutil.which("strace") is None:
            return "(no strace to look)"
        cmd = ["timeout", "-s", "INT", str(seconds), "strace", "-f", "-p", str(self.proc.pid)]
        done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
        lines = [line for line in done.stderr.splitlines() if "attached" not in line]
        return f"{len(lines)} syscalls in {seconds} s, e.g. " + " / ".join(lines[:3])

    def usage(self) -> tuple[float, float, int, int]:
        """(user s, system s, minor faults, voluntary context switches) of the receiver so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        switches = 0
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                switches = int(line.split(":")[1])
        return int(fields[11]) / tick, int(fields[12]) / tick, int(fields[7]), switches

    def stop(self) -> Counters:
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise RuntimeError(f"{self.name} did not stop on SIGINT") from None
        self._reader.join(timeout=5)
        if code != 0:
            raise RuntimeError(f"{self.name} exited {code}: {' | '.join(self.other[-3:])}")
        return self.lines[-1][1]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Point:
    rate: str  # as asked: "25k", "max"
    offered_pps: int | None  # the pacing asked of tcpreplay (None: trafgen unpaced)
    receiver: str
    sent: int
    achieved_pps: float
    arrived: int
    if_dropped: int
    kernel_received: int
    kernel_dropped: int
    frames: int
    decoded: int
    catch_up_s: float  # from the last frame's arrival to the receiver having read everything its socket took
    cpu_s: float
    waited_s: float = 0.0  # the receiver ready to run but waiting for its CPU (another task had it)
    others_s: float = 0.0  # CPU time other tasks (and interrupts) took on the receiver's CPU meanwhile
    user_s: float = 0.0  # of cpu_s, in user space and in the kernel (/proc/PID/stat, clock ticks)
    system_s: float = 0.0
    minor_faults: int = 0  # page faults of the receiver meanwhile
    wakeups: int = 0  # voluntary context switches: how often it slept (on poll) and was woken
    load: tuple[float, float] = (0.0, 0.0)  # the 1-minute load average when the point started and ended
    notes: list[str] = field(default_factory=list)

    @property
    def probes(self) -> int:
        """What the receiver produced: decoded probes, or frames for a capture-only receiver."""
        return self.frames if self.receiver == "ring-capture" else self.decoded

    @property
    def loss(self) -> float:
        return 1 - self.probes / self.sent if self.sent else 0.0

    @property
    def delivered_pps(self) -> float:
        return self.achieved_pps * self.probes / self.sent if self.sent else 0.0

    @property
    def cpu_us_per_probe(self) -> float:
        return self.cpu_s * 1e6 / self.probes if self.probes else float("nan")


def measure(link: Link, files: SenderFiles, rate: str, pps: int | None, count: int, name: str) -> Point:
    receiver = Receiver(name, link.rx)
    stuck = ""
    try:
        receiver.wait(lambda at, c: True, READY_TIMEOUT_S, "starting")  # its first counters line
        time.sleep(0.5)  # and whatever it does after printing it
        (ran0, waited0), busy0, usage0 = receiver.schedstat(), cpu_busy_s(RECEIVER_CPU), receiver.usage()
        load0 = os.getloadavg()[0]
        sent = send(link, files, count, pps)
        try:
            idle_at, (ran1, waited1) = receiver.wait_idle(DRAIN_TIMEOUT_S)
        except StillBusy as exc:  # recorded, not fatal: the other points still get measured
            idle_at, (ran1, waited1) = time.monotonic(), receiver.schedstat()
            stuck = str(exc)
            print(stuck, file=sys.stderr, flush=True)
        busy1, usage1 = cpu_busy_s(RECEIVER_CPU), receiver.usage()
        final = receiver.stop()
    finally:
        receiver.kill()
    point = Point(
        rate, pps, name, sent.count, sent.rate_pps, sent.arrived, sent.if_dropped,
        final.kernel_received, final.kernel_dropped, final.frames, final.decoded,
        catch_up_s=max(0.0, idle_at - sent.last_arrival), cpu_s=(ran1 - ran0) / 1e9,
        waited_s=(waited1 - waited0) / 1e9, others_s=max(0.0, busy1 - busy0 - (ran1 - ran0) / 1e9),
        user_s=usage1[0] - usage0[0], system_s=usage1[1] - usage0[1], minor_faults=usage1[2] - usage0[2],
        wakeups=usage1[3] - usage0[3], load=(load0, os.getloadavg()[0]),
    )  # fmt: skip
    if stuck:
        point.notes.append(stuck)
    if note := contention(point):
        point.notes.append(note)
    if final.frames != final.kernel_received - final.kernel_dropped:
        point.notes.append(f"read {final.frames:,} of {final.kernel_received - final.kernel_dropped:,} accepted")
    if name != "ring-capture" and final.decoded != final.frames:
        point.notes.append(f"{final.frames - final.decoded:,} frames not decoded")
    if sent.arrived != sent.count:
        point.notes.append(f"{sent.count - sent.arrived:,} lost before the receiving interface")
    return point


def contention(point: Point) -> str:
    """A note when other work on the receiver's CPU delayed it noticeably."""
    if point.waited_s <= max(0.05, 0.05 * point.cpu_s):
        return ""
    waited, others = point.waited_s, point.others_s
    return f"CPU {RECEIVER_CPU} shared: the receiver waited {waited:.2f} s for it (others ran {others:.2f} s)"


def cpu_busy_s(cpu: int) -> float:
    """Seconds `cpu` has not been idle since boot (/proc/stat, in clock ticks)."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                ticks = [int(v) for v in line.split()[1:]]
                return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    raise RuntimeError(f"no cpu{cpu} in /proc/stat")


def machine_busy(seconds: float = 2.0) -> float:
    """How busy the CPUs are (0..1 of all of them) over `seconds`, with this benchmark doing nothing."""
    cpus = sorted(os.sched_getaffinity(0))
    before = [cpu_busy_s(cpu) for cpu in cpus]
    time.sleep(seconds)
    return sum(cpu_busy_s(cpu) - b for cpu, b in zip(cpus, before, strict=True)) / seconds / len(cpus)


def capture_only(mode: str, iface: str, decode: bool, how: str = "") -> int:
    """ptc's ring (or socket) receiver drained in a poll loop: frames counted, or decoded and counted.

    What `ptc collect` adds around this is the event loop, batching, the
    sink (JSON lines here) and its counters. `how` "native": frames read out of
    the ring and decoded by the native engine as a list (the old per-frame path),
    "blocks": the ring's blocks decoded in place by it; either writes its JSON lines to /dev/null.
    """
    if how:
        return capture_native(mode, iface, how)
    from pt_collector.capture import RingReceiver, SocketReceiver, kernel_stats
    from pt_collector.codec.decode import DecodeError, Decoder
    from pt_collector.codec.wire import LINKTYPE_ETHERNET

    receiver = RingReceiver(iface) if mode == "ring" else SocketReceiver(iface)
    decoder = Decoder().decode
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    totals = {"frames": 0, "decoded": 0, "kernel_received": 0, "kernel_dropped": 0}

    def report() -> None:
        received, dropped = kernel_stats(receiver.sock)
        totals["kernel_received"] += received
        totals["kernel_dropped"] += dropped
        print(json.dumps(totals), file=sys.stderr, flush=True)

    def drain_all() -> None:
        while receiver.drain(frames, 4096):
            totals["frames"] += len(frames)
            if decode:
                records = []
                for capture_ns, frame in frames:
                    try:
                        record = decoder(frame, capture_ns, LINKTYPE_ETHERNET)
                    except DecodeError:
                        continue
                    if record is not None:
                        records.append(record)
                totals["decoded"] += len(records)
            frames.clear()

    poller = select.poll()
    poller.register(receiver.fileno(), select.POLLIN)
    frames: list[tuple[int, bytes]] = []
    next_report = time.monotonic()
    while not stopping:
        timeout_ms = max(0.0, next_report - time.monotonic()) * 1000
        if poller.poll(timeout_ms):
            drain_all()
        if time.monotonic() >= next_report:
            report()
            next_report += STATS_INTERVAL_S
    drain_all()
    report()
    receiver.close()
    return 0


def capture_native(mode: str, iface: str, how: str) -> int:
    """The native engine on ptc's ring (or socket) receiver in a poll loop: frames read out as (capture_ns, bytes)
    and decoded as a list (the old per-frame path), or blocks decoded in place (the ring's, or the socket's frames
    read into one buffer laid out as a block), JSON lines written to /dev/null."""
    from pt_collector.capture import RingReceiver, SocketReceiver, kernel_stats
    from pt_collector.codec.record import to_json_lines
    from pt_collector.codec.wire import LINKTYPE_ETHERNET
    from pt_collector.pipeline.engine import NativeEngine

    receiver, engine = RingReceiver(iface) if mode == "ring" else SocketReceiver(iface), NativeEngine()
    sink = open(os.devnull, "wb")  # noqa: SIM115
    stopping = False
    totals = {"frames": 0, "decoded": 0, "kernel_received": 0, "kernel_dropped": 0}

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    def visit(block: memoryview, at: int, count: int) -> int:
        decoded, at = engine.decode_block(block, at, count, LINKTYPE_ETHERNET)
        totals["frames"] += count
        totals["decoded"] += len(decoded.records)
        sink.write(to_json_lines(decoded.records))
        return at

    frames: list[tuple[int, bytes]] = []

    def drain_all() -> None:
        if how == "blocks":
            while receiver.drain_blocks(visit, 4096):
                pass
            return
        while receiver.drain(frames, 4096):
            decoded = engine.decode_batch(frames, LINKTYPE_ETHERNET)
            totals["frames"] += len(frames)
            totals["decoded"] += len(decoded.records)
            sink.write(to_json_lines(decoded.records))
            frames.clear()

    poller = select.poll()
    poller.register(receiver.fileno(), select.POLLIN)
    next_report = time.monotonic()
    while not stopping:
        if poller.poll(max(0.0, next_report - time.monotonic()) * 1000):
            drain_all()
        if time.monotonic() >= next_report:
            received, dropped = kernel_stats(receiver.sock)
            totals["kernel_received"] += received
            totals["kernel_dropped"] += dropped
            print(json.dumps(totals), file=sys.stderr, flush=True)
            next_report += STATS_INTERVAL_S
    drain_all()
    received, dropped = kernel_stats(receiver.sock)
    totals["kernel_received"] += received
    totals["kernel_dropped"] += dropped
    print(json.dumps(totals), file=sys.stderr, flush=True)
    receiver.close()
    return 0


# --- decoding alone, for the breakdown -------------------------------------------------------------------------------


def decode_cost_us(frames: list[bytes], rounds: int = 20) -> tuple[float, float]:
    """(decode, decode + JSON lines) in us per probe over the benchmark's frames, on the receivers' CPU."""
    from pt_collector.codec.decode import Decoder
    from pt_collector.codec.record import to_json_lines
    from pt_collector.codec.wire import LINKTYPE_ETHERNET

    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {RECEIVER_CPU})
    try:
        best_decode = best_both = float("inf")
        for _ in range(3):
            decode = Decoder().decode
            started = time.perf_counter()
            for _ in range(rounds):
                records = [decode(frame, 0, LINKTYPE_ETHERNET) for frame in frames]
            decoded = time.perf_counter()
            for _ in range(rounds):
                for i in range(0, len(records), 4096):
                    to_json_lines(records[i : i + 4096])
            encoded = time.perf_counter()
            n = rounds * len(frames)
            best_decode = min(best_decode, (decoded - started) / n * 1e6)
            best_both = min(best_both, (encoded - started) / n * 1e6)
    finally:
        os.sched_setaffinity(0, affinity)
    return best_decode, best_both


def native_cost_us(frames: list[bytes], rounds: int = 5) -> float | None:
    """The native engine's decode + JSON lines in us per probe over the frames, in memory, on the receivers' CPU."""
    from pt_collector.pipeline.engine import NATIVE, NativeEngine

    if not NATIVE:
        return None
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {RECEIVER_CPU})
    try:
        engine, captured, best = NativeEngine(), [(0, frame) for frame in frames], float("inf")
        for _ in range(rounds):
            started = time.process_time()
            for i in range(0, len(captured), 4096):
                engine.decode_batch(captured[i : i + 4096], 1).records.json_lines  # noqa: B018
            best = min(best, (time.process_time() - started) / len(captured) * 1e6)
    finally:
        os.sched_setaffinity(0, affinity)
    return best


# --- the run ---------------------------------------------------------------------------------------------------------


def parse_rate(text: str) -> int | None:
    text = text.strip().lower()
    if text == "max":
        return None
    if text == "top":
        return TOPSPEED
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1], 1)
    return int(float(text.rstrip("km")) * scale)


def machine() -> dict[str, str]:
    model = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        for line in run("lscpu").splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    versions = []
    for tool in ("tcpreplay", "trafgen"):
        done = subprocess.run([tool, "--version"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        text = done.stdout + done.stderr  # trafgen exits 1 after printing its version
        match = re.search(rf"{tool}(?: version:)? ([\d.]+)", text)
        versions.append(f"{tool} {match.group(1) if match else '?'}")
    return {
        "date": datetime.date.today().isoformat(),
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sender": ", ".join(versions),
    }


def bench(args: argparse.Namespace) -> dict:
    if os.geteuid() != 0:
        sys.exit("bench_capture.py needs root: network namespaces and packet sockets")
    missing = [package for tool, package in SENDERS.items() if shutil.which(tool) is None]
    if missing:
        sys.exit(f"bench_capture.py sends with tcpreplay and trafgen: apt-get install {' '.join(missing)}")
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("bench_capture.py needs 2 CPUs: one sends, one receives")
    frames = probe_frames(args.distinct)
    files = sender_files(frames)
    busy = machine_busy()
    print(
        f"before starting, other work kept the CPUs {busy:.0%} busy" + (" (expect noisy figures)" if busy > 0.1 else "")
    )
    decode_us, decode_json_us = decode_cost_us(frames[:4096])
    print(f"decoding the same frames in memory: {decode_us:.2f} us/probe, with JSON lines {decode_json_us:.2f} us")
    os.sched_setaffinity(0, {SENDER_CPU})  # this process's threads (counter polling, line readers) keep off CPU 1
    results: dict = {
        "command": shlex.join(["python", "bench/bench_capture.py", *sys.argv[1:]]),
        "machine": machine(),
        "seconds": args.seconds,
        "repeat": args.repeat,
        "distinct_frames": args.distinct,
        "busy_before": busy,
        "frame_bytes": len(frames[0]),
        "decode_us": decode_us,
        "decode_json_us": decode_json_us,
        "native_json_us": native_cost_us(frames),
        "count": args.count,
        "points": [],
    }
    with veth_pair() as link:
        top = send(link, files, int(args.max_probe_pps * args.seconds), None)
        results["sender_max_pps"] = top.rate_pps
        print(f"trafgen unpaced through the veth, no receiver: {top.rate_pps:,.0f} pps ({top.arrived:,} arrived)")
        for rate in args.rates:
            pps = parse_rate(rate)
            count = args.count or int((pps or top.rate_pps) * args.seconds)
            tries: dict[str, list[Point]] = {name: [] for name in args.receivers}
            for _ in range(args.repeat):  # interleaved: each receiver gets the same share of the machine's moods
                for name in args.receivers:
                    point = measure(link, files, rate, pps, count, name)
                    tries[name].append(point)
                    print(
                        f"{rate:>5} {name:>12}: sent {point.sent:,} at {point.achieved_pps:,.0f} pps, "
                        f"{point.probes:,} {'frames' if name == 'ring-capture' else 'probes'} "
                        f"({point.loss:.1%} lost), kernel dropped {point.kernel_dropped:,}, "
                        f"caught up {point.catch_up_s:.1f} s after, "
                        f"CPU {point.cpu_s:.2f} s = {point.cpu_us_per_probe:.2f} us/probe "
                        f"({point.user_s:.2f} s user, {point.system_s:.2f} s system, "
                        f"{point.minor_faults:,} page faults, {point.wakeups:,} wakeups; load {point.load[1]:.1f})"
                        + (f"  [{'; '.join(point.notes)}]" if point.notes else ""),
                        flush=True,
                    )
            for points in tries.values():  # the best try: least loss, then least CPU per probe
                best = min(points, key=lambda p: (p.loss, p.cpu_us_per_probe))
                results["points"].append(asdict(best) | {"tries": [asdict(p) for p in points]})
    return results


# --- the report ------------------------------------------------------------------------------------------------------


def points_of(results: dict) -> list[Point]:
    return [Point(**{k: v for k, v in p.items() if k != "tries"}) for p in results["points"]]


def table(results: dict) -> str:
    rows = [
        "| offered | sent at | receiver | sent | delivered | loss | kernel drops | catch-up | CPU (user / sys) "
        "| wakeups | load | CPU per probe |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points_of(results):
        offered = (
            "max (trafgen)"
            if p.offered_pps is None
            else "top (tcpreplay)"
            if p.offered_pps == TOPSPEED
            else f"{p.offered_pps:,} pps"
        )
        delivered = f"{p.probes:,}" + (" frames" if p.receiver == "ring-capture" else "")
        rows.append(
            f"| {offered} | {p.achieved_pps:,.0f} pps | {p.receiver} | {p.sent:,} | {delivered} | {p.loss:.1%} | "
            f"{p.kernel_dropped:,} | {p.catch_up_s:.1f} s | {p.cpu_s:.2f} s ({p.user_s:.2f} / {p.system_s:.2f}) | "
            f"{p.wakeups:,} | {p.load[1]:.1f} | {p.cpu_us_per_probe:.2f} us |"
        )
    return "\n".join(rows)


def section(results: dict, plot: Path | None, report: Path) -> str:
    m = results["machine"]
    lines = [
        MARK_BEGIN,
        "",
        f'Measured {m["date"]} with `{results["command"]}`: {m["nproc"]} CPUs (`lscpu` model "{m["cpu"]}"), '
        f"kernel {m['kernel']}, Python {m['python']}, {m['sender']}. {results['distinct_frames']:,} distinct "
        f"encapsulated probes of {results['frame_bytes']} bytes (5 MCDs, 3 segments, 256 sources, every value "
        f"differing per probe; tcpreplay sends them in turn, trafgen cycles the first {TRAFGEN_FRAMES:,}), "
        + (f"{results['count']:,} per point" if results.get("count") else f"{results['seconds']:g} s worth per point")
        + (f", best of {results['repeat']} interleaved tries" if results.get("repeat", 1) > 1 else "")
        + ". trafgen unpaced through the veth, no receiver: "
        f"{results['sender_max_pps']:,.0f} pps. The same frames decoded in memory on the receivers' CPU: "
        f"{results['decode_us']:.2f} us per probe, {results['decode_json_us']:.2f} us with JSON lines (pure engine)"
        + (
            f", {results['native_json_us']:.2f} us (native engine, decode_frames, JSON lines)."
            if results.get("native_json_us")
            else "."
        ),
        "",
        table(results),
    ]
    if plot is not None:
        rel = os.path.relpath(plot, report.parent)
        lines += ["", f"![delivered versus offered rate]({rel})"]
    notes = [(p, n) for p in points_of(results) for n in p.notes if not n.startswith("CPU ")]
    notes += [(p, n) for p in points_of(results) if (n := contention(p))]  # by this version's rule
    if notes:
        lines += ["", "Notes from the run:", ""]
        lines += [f"- {p.rate} {p.receiver}: {note}" for p, note in notes]
    lines += ["", MARK_END]
    return "\n".join(lines)


def write_report(results: dict, report: Path, plot: Path | None) -> None:
    text = section(results, plot, report)
    if report.exists():
        old = report.read_text()
        if MARK_BEGIN in old and MARK_END in old:
            head, rest = old.split(MARK_BEGIN, 1)
            text = head + text + rest.split(MARK_END, 1)[1]
        else:
            text = old.rstrip("\n") + "\n\n" + text + "\n"
    else:
        text = "# Live capture benchmark\n\n" + text + "\n"
    report.write_text(text)


def draw(results: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no plot: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
        return False
    points = points_of(results)
    styles = {"ring": "o-", "socket": "s-", "baseline": "^-", "ring-capture": "x--", "ring-decode": "+--"}
    labels = {
        "ring": "ptc --capture ring",
        "socket": "ptc --capture socket",
        "baseline": "blocking recv() + scapy",
        "ring-capture": "ring capture alone (no decoding)",
        "ring-decode": "ring capture + decode (no sink, no event loop)",
    }
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    top = max(p.achieved_pps for p in points) / 1000 * 1.05
    left.plot([0, top], [0, top], ":", color="grey", label="offered (no loss)")
    for name in dict.fromkeys(p.receiver for p in points):
        mine = sorted((p for p in points if p.receiver == name), key=lambda p: p.achieved_pps)
        x = [p.achieved_pps / 1000 for p in mine]
        left.plot(x, [p.delivered_pps / 1000 for p in mine], styles.get(name, "-"), label=labels.get(name, name))
        right.plot(x, [p.cpu_us_per_probe for p in mine], styles.get(name, "-"), label=labels.get(name, name))
    left.set(xlabel="offered (achieved send rate), kpps", ylabel="delivered, kpps", title="Delivered versus offered")
    left.set_xlim(0, top)
    left.set_ylim(0, top)
    right.set(xlabel="offered (achieved send rate), kpps", ylabel="CPU us per probe (log)", title="Receiver CPU")
    right.set_yscale("log")
    right.axhline(1.5, color="red", linestyle=":", label="target 1.5 us (ring)")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    m = results["machine"]
    fig.suptitle(f"ptc live capture over a veth pair, {m['nproc']} CPUs {m['cpu']}, kernel {m['kernel']}, {m['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="25k,50k,100k,150k,200k,300k,max", help="comma-separated pps; k, M; max")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long each point sends (count = rate x this)")
    parser.add_argument("--count", type=int, default=0, help="probes per point instead of --seconds worth")
    parser.add_argument(
        "--receivers", default=",".join(r for r in RECEIVERS if r != "ring-base"),
        help=f"comma-separated, of {', '.join(RECEIVERS)} (ring-base with --baseline-ptc)",
    )  # fmt: skip
    parser.add_argument("--repeat", type=int, default=1, help="tries per point, interleaved; the best is reported")
    parser.add_argument("--distinct", type=int, default=4096, help="distinct probe frames the sender cycles through")
    parser.add_argument("--max-probe-pps", type=float, default=400_000, help="sizes the sender's top-rate probe")
    parser.add_argument("--json", type=Path, default=HERE / "out" / "capture.json", help="results file")
    parser.add_argument("--report", type=Path, default=ROOT / "docs" / "capture-benchmark.md")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "capture-benchmark.png")
    parser.add_argument("--no-report", action="store_true", help="print only; leave --report and --plot alone")
    parser.add_argument("--from-json", type=Path, help="redraw --report and --plot from a results file")
    parser.add_argument("--baseline-ptc", type=Path, help="the ptc that receiver ring-base runs (another install)")
    parser.add_argument("--capture-only", choices=["ring", "socket"], help=argparse.SUPPRESS)
    parser.add_argument("--iface", help=argparse.SUPPRESS)
    parser.add_argument("--decode", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--native", dest="how", action="store_const", const="native", default="", help=argparse.SUPPRESS
    )
    parser.add_argument("--blocks", dest="how", action="store_const", const="blocks", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.capture_only:
        return capture_only(args.capture_only, args.iface, args.decode, args.how)
    args.rates = [r for r in args.rates.split(",") if r.strip()]
    args.receivers = [r.strip() for r in args.receivers.split(",") if r.strip()]
    if args.baseline_ptc is not None:
        BASELINE_PTC.append(str(args.baseline_ptc))
    elif "ring-base" in args.receivers:
        parser.error("--receivers ring-base: give the baseline's ptc with --baseline-ptc PATH")
    for name in args.receivers:
        receiver_command(name, "x")  # unknown names fail before anything is set up
    for rate in args.rates:
        try:
            parse_rate(rate)
        except ValueError:
            parser.error(f"--rates: {rate!r} is not a rate")

    if args.from_json:
        results = json.loads(args.from_json.read_text())
    else:
        results = bench(args)
        args.json.parent.mkdir(exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
        print(f"results: {args.json}")
    print(table(results))
    if not args.no_report:
        plot = args.plot if draw(results, args.plot) else None
        write_report(results, args.report, plot)
        print(f"report: {args.report}" + (f", plot: {plot}" if plot else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
