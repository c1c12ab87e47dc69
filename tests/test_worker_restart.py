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

from pt_collector.codec.encode import ethernet
from pt_collector.codec.generate import generate
from pt_collector.codec.record import from_json_lines


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
        rf"Error: ptc collect {veth.rx_iface}: worker (\d) \(pid {victim}\) killed by SIGKILL: restarting it in 0.5 s; "
        r"it held no records; the frames in its ring wait for its successor",  # a file sink holds nothing
        line,
    )
    assert match, line
    index = match.group(1)
    carried = metric(get(f"http://127.0.0.1:{port}/metrics")[1], "ptc_frames_total", f'worker="{index}"')
    assert carried == counted[index]  # the dead one's counters, kept (posted before the line was said)
    sent_at = []

    def send_during() -> None:  # while the worker is restarted: its flows wait in its ring, which the parent keeps
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
        rf"Error: ptc collect {veth.rx_iface}: worker \d \(pid {victim}\) killed by SIGKILL: "
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
    veth.delete_rx()  # every worker says it went away; every new one fails at once: it went away
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


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def listening_inode(port: int) -> str:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                return fields[9]
    raise AssertionError(f"nothing listens on {port}")


def socket_inodes(pid: int) -> set[str]:
    links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    return {link[8:-1] for link in links if link.startswith("socket:[")}


def test_user_with_workers_leaves_no_privilege_anywhere(veth, tmp_path):
    """--user with --workers 2: the parent (serving metrics) and every worker, a restarted one too, are the
    user with no capability, an empty bounding set and no_new_privs; no worker holds the metrics socket;
    and the records still arrive, through the restarted worker too, into a file in a directory only root
    can enter (the parent opened it before it dropped root)."""
    nobody = str(__import__("pwd").getpwnam("nobody").pw_uid)
    out, port = tmp_path / "out.jsonl", free_port()
    collector = Collector("--iface", veth.rx_iface, "--output", str(out), "--workers", "2", "--user", "nobody",
                          "--metrics-port", str(port))  # fmt: skip
    collector.wait_for(lambda line: "kernel" in line)
    parent = collector.proc.pid
    workers = capturing_workers(parent, 2)
    metrics_socket = listening_inode(port)
    assert metrics_socket in socket_inodes(parent)

    def unprivileged(pid: int) -> None:
        status = proc_status(pid)
        assert status["Uid"].split() == [nobody] * 4, (pid, status["Uid"])
        assert status["Groups"] == ""
        for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(status[caps], 16) == 0, (pid, caps, status[caps])
        assert status["NoNewPrivs"] == "1"

    for pid in (parent, *workers):
        unprivileged(pid)
    for pid in workers:
        assert metrics_socket not in socket_inodes(pid)
    veth.send(probes(300, seed=31))
    collector.frames_seen(300)

    os.kill(workers[0], signal.SIGKILL)  # the new worker needs no privilege: it reads on from the parent's ring
    first_line(collector, f"(pid {workers[0]})")
    now = capturing_workers(parent, 2)
    [new] = set(now) - set(workers)
    unprivileged(new)
    assert metrics_socket not in socket_inodes(new)
    veth.send(probes(300, seed=32))
    collector.frames_seen(600)
    assert get(f"http://127.0.0.1:{port}/healthz") == (200, "capturing\n")
    assert collector.stop() == 0
    assert len(from_json_lines(out.read_bytes())) == 600
    assert oct(tmp_path.stat().st_mode)[-3:] == "700"  # nobody could not have opened the file itself


def test_a_worker_killed_under_traffic_loses_no_more_than_the_parent_says(veth, tmp_path):
    """SIGKILL to a worker while probes arrive at 4,000/s: its ring stays with the parent and its successor
    reads on from it, so only what it had read and not yet written can be lost, and the parent's line bounds
    that ("up to N records": held at its last report, plus what it read since, counted from the ring's
    shared read position). The counters still add up: kernel received = frames + dropped + left."""
    import msgspec
    from test_collect_veth import final_counts

    out = tmp_path / "out.jsonl"
    collector = Collector("--iface", veth.rx_iface, "--output", str(out), "--workers", "2", "--ring-timeout-ms", "200")
    collector.wait_for(lambda line: "kernel" in line)
    workers = capturing_workers(collector.proc.pid, 2)
    sent = probes(20_000, seed=41)
    sender = threading.Thread(target=veth.send, args=(sent, 4_000), daemon=True)
    sender.start()
    collector.wait_for(lambda line: "kernel" in line and final_counts(line)["frames"] > 3_000)
    os.kill(workers[0], signal.SIGKILL)
    line = first_line(collector, f"(pid {workers[0]})")
    bound = re.search(r"up to ([\d,]+) records", line)
    said = int(bound.group(1).replace(",", "")) if bound else 0
    assert bound or "it held no records" in line, line
    sender.join(timeout=60)
    collector.frames_seen(len(sent))  # every probe was read, by the survivor or the dead one's successor
    assert collector.stop() == 0
    counts = final_counts(collector.lines[-1])
    assert counts["received"] == len(sent) and counts["dropped"] == 0, collector.lines[-1]
    assert counts["received"] == counts["frames"] + counts["dropped"] + counts["left"], collector.lines[-1]

    def keys(records) -> list[bytes]:
        return sorted(msgspec.json.encode(r) for r in without_capture_time(records))

    got, expected = keys(from_json_lines(out.read_bytes())), keys(expected_records(sent))
    assert len(set(got)) == len(got) and set(got) <= set(expected)  # nothing twice, nothing made up
    missing = len(expected) - len(got)
    print(f"killed under traffic: {missing} missing, the parent said up to {said}: {line}")
    assert missing <= said, line
