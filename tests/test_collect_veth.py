"""`ptc collect` as an operator runs it, over a real veth pair.

A sender in its own network namespace transmits generated probes and non-PT
noise; `ptc collect` on the other end must deliver every probe exactly once,
as the same records `ptc replay` makes of the same frames (capture times
aside: live ones come from the kernel).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgspec
import pytest

from pt_collector import Decoder
from pt_collector.codec.encode import ethernet, ipv6
from pt_collector.codec.generate import generate
from pt_collector.codec.record import Record, from_json_lines
from pt_collector.codec.wire import NH_UDP

PTC = [sys.executable, "-m", "pt_collector.cli.main"]


def frames_to_send(count: int, seed: int = 11) -> tuple[list[bytes], list[bytes]]:
    """(probe frames, noise frames): probes from 4 sources, a third VLAN-tagged."""
    probes = [
        ethernet(p, vlans=[(0x8100, 7)] if i % 3 == 0 else ()) for i, (_, p) in enumerate(generate(count, seed=seed))
    ]
    noise = [
        ethernet(b"\x45" + bytes(27), ethertype=0x0800),
        ethernet(bytes(28), ethertype=0x0806),
        ethernet(ipv6("2001:db8::1", "2001:db8::2", NH_UDP, bytes(8))),
    ] * 10
    return probes, noise


def without_capture_time(records: list[Record]) -> list[Record]:
    return [msgspec.structs.replace(r, capture_ns=0) for r in records]


class CollectProcess:
    """`ptc collect` (or any command) as a subprocess; its stderr lines are gathered as they come."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, stdout=None) -> None:
        self.proc = subprocess.Popen(argv, env=env, stdout=stdout, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, predicate, timeout: float = 20.0) -> str:
        """The latest line that satisfies `predicate`, waiting for one up to `timeout` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in reversed(self.lines):
                if predicate(line):
                    return line
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no such line from ptc collect (exit {self.proc.poll()}); it said: {self.lines[-5:]}")

    def wait_capturing(self, iface: str, timeout: float = 30.0) -> None:
        """Until its first counters (or other) line about `iface`: the capture socket is open by then."""
        self.wait_for(lambda line: line.startswith(f"ptc collect {iface}:"), timeout)

    def stop(self, sig: int = signal.SIGINT) -> int:
        """Send `sig` (SIGTERM: as `docker stop` or systemd does); the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self._reader.join(timeout=5)
        return code


class Collector(CollectProcess):
    """`ptc collect ARGS` with a counters line every 0.2 s."""

    def __init__(self, *args: str, config: Path | None = None) -> None:
        with_config = ["--config", str(config)] if config else []
        super().__init__([*PTC, *with_config, "collect", "--stats-interval", "0.2", *args])

    def frames_seen(self, count: int) -> None:
        self.wait_for(lambda line: f"| {count:,} frames:" in line)


def expected_records(probes: list[bytes]) -> list[Record]:
    decoder = Decoder()
    return [decoder.decode(frame) for frame in probes]


@pytest.mark.parametrize(
    "mode_args",
    [["--capture", "ring"], ["--capture", "socket"], ["--workers", "2"]],
    ids=["ring", "socket", "workers-2"],
)
def test_every_probe_arrives_exactly_once(veth, tmp_path, mode_args):
    probes, noise = frames_to_send(600)
    out = tmp_path / "out.jsonl"
    collector = Collector("--iface", veth.rx_iface, "--output", str(out), *mode_args)
    collector.wait_for(lambda line: "kernel" in line)  # capturing
    veth.send(probes[:300] + noise + probes[300:])
    collector.frames_seen(len(probes))
    assert collector.stop() == 0
    final = collector.lines[-1]
    assert "stopped:" in final and "600 probes" in final and "0 not PT" in final, final
    assert "0 dropped" in final.split("|")[0]  # no kernel drops
    records = from_json_lines(out.read_bytes())
    expected = expected_records(probes)
    if "--workers" in mode_args:  # per-source order holds inside each worker; compare per source
        by_source = lambda rs: {a: [r for r in rs if r.src.addr == a] for a in {r.src.addr for r in rs}}  # noqa: E731
        assert by_source(without_capture_time(records)) == by_source(without_capture_time(expected))
    else:
        assert without_capture_time(records) == without_capture_time(expected)
    assert all(r.capture_ns > 1_600_000_000 * 10**9 for r in records)  # the kernel's receive time


@pytest.mark.parametrize("args", [[], ["--workers", "2", "--user", "nobody"]], ids=["one", "workers-2-user"])
def test_into_the_real_kafka_broker(veth, kafka_broker, tmp_path, args):
    """With --workers and --user, the workers connect to Kafka already as the user (the parent dropped root)."""
    probes, noise = frames_to_send(200, seed=12)
    topic = f"collect-{int(time.time() * 1000)}"
    collector = Collector(
        "--iface", veth.rx_iface, "--topic", topic, "--brokers", kafka_broker, "--linger-ms", "20", *args
    )  # fmt: skip
    collector.wait_for(lambda line: "kernel" in line)
    veth.send(noise + probes)
    collector.wait_for(lambda line: "200 acked" in line)
    assert collector.stop() == 0
    consumed = subprocess.run(
        [*PTC, "consume", "--topic", topic, "--brokers", kafka_broker, "--from-beginning", "--max", "200", "-q"],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    records = from_json_lines(consumed.stdout)
    by_source = lambda rs: {a: [r for r in rs if r.src.addr == a] for a in {r.src.addr for r in rs}}  # noqa: E731
    assert by_source(without_capture_time(records)) == by_source(without_capture_time(expected_records(probes)))


def test_setup_errors_are_one_line_and_exit_1(veth):
    for iface, message in [("nosuchif0", "no interface named nosuchif0")]:
        proc = subprocess.run([*PTC, "collect", "--iface", iface, "--output", "-"], capture_output=True, text=True)
        assert proc.returncode == 1
        assert proc.stderr.strip().splitlines() == [f"Error: {message}"]


def test_bad_bpf_expression_is_a_usage_error(veth):
    proc = subprocess.run(
        [*PTC, "collect", "--iface", veth.rx_iface, "--output", "-", "--bpf", "ip6 and and"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "--bpf" in proc.stderr and "Traceback" not in proc.stderr


def test_interface_deleted_while_capturing_stops_with_one_line(veth, tmp_path):
    out = tmp_path / "out.jsonl"
    collector = Collector("--iface", veth.rx_iface, "--output", str(out))
    collector.wait_for(lambda line: "kernel" in line)
    veth.send(frames_to_send(20)[0])
    collector.frames_seen(20)
    veth.delete_rx()
    assert collector.proc.wait(timeout=20) == 1
    collector._reader.join(timeout=5)
    assert any("went away" in line for line in collector.lines), collector.lines[-3:]
    assert len(from_json_lines(out.read_bytes())) == 20  # what was captured was flushed
    assert not any("Traceback" in line for line in collector.lines)


def final_counts(line: str) -> dict[str, int]:
    """The kernel's, the frames' and the left-at-stop counts of a counters line."""
    import re

    def number(pattern: str) -> int:
        found = re.search(pattern, line)
        return int(found.group(1).replace(",", "")) if found else 0

    return {
        "received": number(r"kernel ([\d,]+) received"),
        "dropped": number(r"received ([\d,]+) dropped"),
        "frames": number(r"\| ([\d,]+) frames:"),
        "probes": number(r"frames: ([\d,]+) probes"),
        "left": number(r"\| ([\d,]+) frames left in the ring at the stop"),
    }


@pytest.mark.parametrize(
    "mode_args",
    [["--ring-timeout-ms", "500"], ["--capture", "socket"], ["--workers", "2", "--ring-timeout-ms", "500"]],
    ids=["ring", "socket", "workers-2"],
)
def test_sigterm_with_traffic_still_arriving_accounts_for_every_frame(veth, tmp_path, mode_args):
    """Probes still arriving at SIGTERM: every frame the kernel took is read or counted as left in the ring,
    kernel received = frames + kernel dropped + left at stop, and every frame read is a record in the file."""
    probes, _ = frames_to_send(20_000)
    out = tmp_path / "out.jsonl"
    collector = Collector("--iface", veth.rx_iface, "--output", str(out), *mode_args)
    collector.wait_for(lambda line: "kernel" in line)
    sender = threading.Thread(target=veth.send, args=(probes, 5_000), daemon=True)  # 4 s of traffic
    sender.start()
    collector.wait_for(lambda line: "kernel" in line and final_counts(line)["frames"] > 2_000)
    assert collector.stop(signal.SIGTERM) == 0
    sender.join(timeout=30)
    counts = final_counts(collector.lines[-1])
    assert "stopped:" in collector.lines[-1]
    assert 2_000 < counts["received"] < len(probes), collector.lines[-1]  # the stop came mid-stream
    assert counts["received"] == counts["frames"] + counts["dropped"] + counts["left"], collector.lines[-1]
    assert len(from_json_lines(out.read_bytes())) == counts["probes"] == counts["frames"]
