"""Test infrastructure for live capture: a veth pair whose far end lives in its own network namespace.

The `veth` fixture yields a Veth: `rx_iface` is in the test's (root) namespace,
where the receivers under test open their sockets; `tx_iface` is in
`netns`, and `send()` transmits raw Ethernet frames out of it from a sender
process started there (frames go over in a pcap file). IPv6 is disabled on
both ends, so the kernel sends nothing of its own (no router solicitations,
no DAD): every frame on the link is one the test sent. Packet sockets see
the frames all the same: they are below IP.

`ip netns` failing fails the test with the command's error; it never skips.
`mark()` writes a number into a frame's source MAC address, which no kernel
or filter touches, and `marker()` reads it back from what was received.

The sender is SENDER run with `python -c` (without pytest to import, it starts
in about 0.1 s): it sends every frame of a capture file out of an interface,
paced if asked, and prints "sent N CPU_SECONDS".
"""

from __future__ import annotations

import contextlib
import secrets
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pt_collector.capture.pcap import PcapWriter

MARK_PREFIX = b"\x02pt"  # a locally administered unicast source MAC: 02:70:74:nn:nn:nn
SEND_TIMEOUT_S = 120

SENDER = """
import socket, sys, time
from pt_collector.capture.pcap import read_capture

iface, path, rate_pps = sys.argv[1], sys.argv[2], float(sys.argv[3])
frames = [frame for _, _, frame in read_capture(path)]
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
sock.bind((iface, 0))
started, cpu = time.monotonic(), time.process_time()
for i, frame in enumerate(frames):
    if rate_pps:
        ahead = started + i / rate_pps - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    sock.send(frame)
print("sent", len(frames), time.process_time() - cpu)
"""


def mark(frame: bytes, n: int) -> bytes:
    """`frame` with its source MAC set to 02:70:74 + `n` (24 bits), to match sent and received frames."""
    return frame[:6] + MARK_PREFIX + n.to_bytes(3, "big") + frame[12:]


def marker(frame: bytes) -> int | None:
    """The `n` a frame was marked with, or None."""
    if frame[6:9] != MARK_PREFIX:
        return None
    return int.from_bytes(frame[9:12], "big")


def run(*cmd: str) -> str:
    """Run a command; a failure raises with its stderr (tests fail, never skip)."""
    done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=SEND_TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


@dataclass
class Veth:
    netns: str
    rx_iface: str
    tx_iface: str

    def in_netns(self, *cmd: str) -> str:
        return run("ip", "netns", "exec", self.netns, *cmd)

    def set_rx_up(self, up: bool) -> None:
        run("ip", "link", "set", self.rx_iface, "up" if up else "down")

    def delete_rx(self) -> None:
        """Delete the pair (from its root end); teardown then finds it gone, which is fine."""
        run("ip", "link", "del", self.rx_iface)

    def wait_carrier(self, present: bool, timeout_s: float = 10.0) -> None:
        """Wait until rx_iface's carrier is as asked: the kernel notes link changes asynchronously (linkwatch)."""
        carrier = Path(f"/sys/class/net/{self.rx_iface}/carrier")
        want = "1" if present else "0"
        deadline = time.monotonic() + timeout_s
        while carrier.read_text().strip() != want:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.rx_iface}: carrier still not {want} after {timeout_s} s")
            time.sleep(0.02)

    def set_tx_up(self, up: bool) -> None:
        self.in_netns("ip", "link", "set", self.tx_iface, "up" if up else "down")

    def send(self, frames: Iterable[bytes], rate_pps: float | None = None) -> float:
        """Transmit `frames` in order out of tx_iface (so they arrive on rx_iface); the sender's CPU seconds."""
        with tempfile.NamedTemporaryFile(suffix=".pcap") as f:
            writer = PcapWriter(f, 1)
            for frame in frames:
                writer.write(0, frame)
            f.flush()
            out = self.in_netns(sys.executable, "-c", SENDER, self.tx_iface, f.name, str(rate_pps or 0))
        return float(out.split()[2])


@contextlib.contextmanager
def veth_pair() -> Iterator[Veth]:
    """A fresh namespace and veth pair, both ends up and IPv6-silent; both deleted afterwards."""
    tag = secrets.token_hex(2)
    pair = Veth(netns=f"ptc-tx-{secrets.token_hex(3)}", rx_iface=f"ptcrx{tag}", tx_iface=f"ptctx{tag}")
    run("ip", "netns", "add", pair.netns)
    try:
        run("ip", "link", "add", pair.rx_iface, "type", "veth", "peer", "name", pair.tx_iface, "netns", pair.netns)
        try:
            _silence_and_raise(pair)
            yield pair
        finally:
            subprocess.run(["ip", "link", "del", pair.rx_iface], capture_output=True, check=False)
    finally:
        run("ip", "netns", "del", pair.netns)


def _silence_and_raise(pair: Veth) -> None:
    """IPv6 off before the links come up, so they never send a solicitation."""
    run("sysctl", "-qw", f"net.ipv6.conf.{pair.rx_iface}.disable_ipv6=1")
    pair.in_netns("sysctl", "-qw", f"net.ipv6.conf.{pair.tx_iface}.disable_ipv6=1")
    pair.set_tx_up(True)
    pair.set_rx_up(True)
    pair.wait_carrier(True)


@pytest.fixture
def veth() -> Iterator[Veth]:
    with veth_pair() as pair:
        yield pair


def receive(receiver, count: int, timeout_s: float = 3.0, limit: int = 256) -> list[tuple[int, bytes]]:
    """Drain `receiver` whenever it polls readable until `count` frames arrived or `timeout_s` passed."""
    return receive_many([receiver], count, timeout_s, limit)[0]


def receive_many(receivers: list, count: int, timeout_s: float = 3.0, limit: int = 256) -> list[list]:
    """Drain each receiver when it polls readable until `count` frames arrived in all or `timeout_s` passed."""
    poller = select.poll()
    by_fd = {receiver.fileno(): (receiver, []) for receiver in receivers}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout_s
    while sum(len(frames) for _, frames in by_fd.values()) < count:
        left_ms = (deadline - time.monotonic()) * 1000
        if left_ms <= 0:
            break
        for fd, _ in poller.poll(left_ms):
            receiver, frames = by_fd[fd]
            receiver.drain(frames, limit)
    return [frames for _, frames in by_fd.values()]


def wait_readable(receiver, timeout_s: float) -> bool:
    poller = select.poll()
    poller.register(receiver.fileno(), select.POLLIN)
    return bool(poller.poll(timeout_s * 1000))
