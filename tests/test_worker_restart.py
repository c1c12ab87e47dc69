"""A worker of `ptc collect --workers 2` killed with SIGKILL, over a real veth pair.

The workers are the children of the `ptc collect` process (found in /proc);
one is killed, the parent must say so and start another in its place, which
rejoins the fanout group: probes sent afterwards must all arrive, some of
them through the new worker, and a SIGINT must still end in exit status 0.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

from test_collect_veth import Collector, expected_records, without_capture_time
from test_operations import free_port, get, metric

from pt_collector.encode import ethernet
from pt_collector.generate import generate
from pt_collector.record import from_json_lines


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`, from /proc/*/stat."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:  # gone meanwhile
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return sorted(found)


def has_packet_socket(pid: int) -> bool:
    """Whether `pid` holds an AF_PACKET socket: a worker that has opened its capture socket."""
    inodes = {line.split()[8] for line in Path("/proc/net/packet").read_text().splitlines()[1:]}
    try:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return False
    return any(link.startswith("socket:[") and link[8:-1] in inodes for link in links)


def capturing_workers(pid: int, count: int, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = [child for child in children(pid) if has_packet_socket(child)]
        if len(workers) == count:
            return workers
        time.sleep(0.005)
    raise AssertionError(f"no {count} capturing workers under {pid}: {children(pid)}")


def probes(count: int, seed: int) -> list[bytes]:
    """Probes from 16 sources (16 outer source addresses: the fanout hash spreads them over the workers)."""
    return [ethernet(p) for _, p in generate(count, seed=seed, sources=16)]


def first_line(collector: Collector, text: str, timeout: float = 10.0) -> str:
    """The first line from ptc collect with `text` in it, as soon as it comes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(collector.lines):
            if text in line:
                return line
        time.sleep(0.002)
    raise AssertionError(f"no line with {text!r}: {collector.lines[-5:]}")


def by_source(records):
    return {a: [r for r in records if r.src.addr == a] for a in {r.src.addr for r in records}}


def test_a_killed_worker_is_restarted_and_capture_goes_on(veth, tmp_path):
    out, port = tmp_path / "out.jsonl", free_port()
    collector = Collector("--iface", veth.rx_iface, "--output", str(out), "--workers", "2",
                          "--metrics-port", str(port), "--metrics-address", "127.0.0.1")  # fmt: skip
    collector.wait_for(lambda line: "kernel" in line)
    workers = capturing_workers(collector.proc.pid, 2)
    before, during, after = probes(300, seed=21), probes(200, seed=22), probes(300, seed=23)
    veth.send(before)
    collector.frames_seen(300)
    text = get(f"http://127.0.0.1:{port}/metrics")[1]
    counted = {str(i): metric(text, "ptc_frames_total", f'worker="{i}"') for i in range(2)}
    assert sum(counted.values()) == 300 and all(counted.values())  # the fanout hash spread the 16 sources

    victim = workers[0]
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    line = first_line(collector, f"(pid {victim})")
    said_at = time.monotonic()
    match = re.fullmatch(
        rf"ptc collect {veth.rx_iface}: worker (\d) \(pid {victim}\) killed by SIGKILL: restarting it in 0.5 s; "
        r"it held no records",  # a file sink holds nothing: each batch is written as it comes
        line,
    )
    assert match, line
    index = match.group(1)
    carried = metric(get(f"http://127.0.0.1:{port}/metrics")[1], "ptc_frames_total", f'worker="{index}"')
    assert carried == counted[index]  # the dead one's counters, kept (posted before the line was said)
    sent_at = []

    def send_during() -> None:  # while the worker is restarted: the one member left in the fanout group takes them
        veth.send(during)
        sent_at.append(time.monotonic())

    sender = threading.Thread(target=send_during)
    sender.start()
    now = capturing_workers(collector.proc.pid, 2)  # the survivor and a new one
    capturing_at = time.monotonic()
    sender.join()
    assert victim not in now and len(set(now) - set(workers)) == 1
    said, capturing, sent = said_at - killed_at, capturing_at - killed_at, sent_at[0] - killed_at
    print(f"kill -> the parent's line {said:.3f} s, -> a new worker capturing {capturing:.3f} s ({sent:.3f} s: sent)")
    assert capturing < 5

    collector.frames_seen(500)
    veth.send(after)
    collector.frames_seen(800)  # the totals went on from where they were
    text = get(f"http://127.0.0.1:{port}/metrics")[1]
    assert metric(text, "ptc_frames_total", f'worker="{index}"') > counted[index]  # the new worker captured
    assert metric(text, "ptc_worker_restarts_total", f'worker="{index}"') == 1
    assert metric(text, "ptc_records_lost_total", f'worker="{index}"') == 0

    assert collector.stop() == 0
    final = collector.lines[-1]
    assert "stopped:" in final and "| 800 frames: 800 probes" in final and final.endswith("| 1 worker restarts, 0 lost")
    records = from_json_lines(out.read_bytes())
    assert len(records) == 800  # every probe, once: none lost, none twice
    expected = expected_records(before + during + after)
    assert by_source(without_capture_time(records)) == by_source(without_capture_time(expected))
    assert not any("Traceback" in line for line in collector.lines)


def test_stop_mode_exits_1_with_one_clear_line(veth, tmp_path):
    collector = Collector("--iface", veth.rx_iface, "--output", str(tmp_path / "out.jsonl"), "--workers", "2",
                          "--on-worker-exit", "stop")  # fmt: skip
    collector.wait_for(lambda line: "kernel" in line)
    victim = capturing_workers(collector.proc.pid, 2)[1]
    os.kill(victim, signal.SIGKILL)
    assert collector.proc.wait(timeout=15) == 1
    collector._reader.join(timeout=5)
    errors = [line for line in collector.lines if "worker" in line]
    assert len(errors) == 1 and re.fullmatch(
        rf"ptc collect {veth.rx_iface}: worker \d \(pid {victim}\) killed by SIGKILL: "
        r"stopping the others \(--on-worker-exit stop\); it held no records",
        errors[0],
    ), collector.lines
    assert "stopped:" in collector.lines[-1]
    assert not any("Traceback" in line for line in collector.lines)


def test_workers_that_cannot_start_again_are_given_up(veth, tmp_path):
    collector = Collector("--iface", veth.rx_iface, "--output", str(tmp_path / "out.jsonl"), "--workers", "2")
    collector.wait_for(lambda line: "kernel" in line)
    capturing_workers(collector.proc.pid, 2)
    deleted_at = time.monotonic()
    veth.delete_rx()  # every worker says it went away; every new one fails at once: no such interface
    assert collector.proc.wait(timeout=20) == 1
    took = time.monotonic() - deleted_at
    collector._reader.join(timeout=5)
    print(f"interface deleted -> exit 1 in {took:.1f} s")
    restarting = [line for line in collector.lines if "restarting it in" in line]
    assert 4 <= len(restarting) <= 8, collector.lines  # about 4 per worker: 0.5, 1, 2, 4 s
    [gave_up] = [line for line in collector.lines if "giving up" in line]
    assert re.search(
        r"worker \d \(pid \d+\) exited with status 1: 5 failures in a row, each within 5 s of starting: "
        r"giving up, stopping the others",
        gave_up,
    ), gave_up
    assert 7.5 <= took < 15
    assert not any("Traceback" in line for line in collector.lines)
