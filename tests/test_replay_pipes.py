"""`ptc replay -` and other streams (/dev/stdin, a FIFO, a pipe from tcpdump), through the real command line.

A stream has no seek and no size: it is read as it comes, records flow while it is open, and what it gives is
what replaying the same bytes from a file gives, with either engine. Errors name the stream ("<stdin>") in one line.
"""

from __future__ import annotations

import asyncio
import os
import pty
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from native_diff import realistic
from netns import Veth

from pt_collector.capture.pcap import PcapWriter
from pt_collector.pipeline.engine import make_engine
from pt_collector.pipeline.replay import replay
from pt_collector.pipeline.sinks import JsonLinesSink

PTC = [sys.executable, "-m", "pt_collector.cli.main"]
ENGINES = ["native", "python"]


@pytest.fixture(params=ENGINES)
def engine(request, monkeypatch) -> str:
    if request.param == "native":
        pytest.importorskip("pt_collector._native", reason="pt_collector._native is not built (no Rust toolchain)")
    monkeypatch.setenv("PTC_ENGINE", request.param)
    return request.param


def ptc(*args: object, stdin=subprocess.DEVNULL, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*PTC, *(str(a) for a in args)], input=data, stdin=None if data is not None else stdin,
        capture_output=True, timeout=120,
    )  # fmt: skip


def direct(path: Path, *args: object) -> bytes:
    done = ptc("replay", path, "-o", "-", "-q", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """5,000 realistic probes (about 1.3 MB): more than one read of a pipe, and records cut across reads."""
    path = tmp_path_factory.mktemp("pipes") / "big.pcap"
    with open(path, "wb") as f:
        writer = PcapWriter(f, 1)
        for _, ns, frame in realistic(5000, sources=16):
            writer.write(ns, frame)
    return path


def test_a_pipe_from_tcpdump_is_the_file_replayed_directly(pcaps, engine):
    tcpdump = subprocess.Popen(
        ["tcpdump", "-r", pcaps / "encap.pcap", "--time-stamp-precision=nano", "-w", "-"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    replayed = ptc("replay", "-", "-o", "-", "--tts-shift", "18", stdin=tcpdump.stdout)
    tcpdump.stdout.close()
    assert tcpdump.wait() == 0
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout == direct(pcaps / "encap.pcap", "--tts-shift", "18")
    assert replayed.stdout.count(b"\n") == 40
    assert b"<stdin>" not in replayed.stderr and b"probes decoded  40" in replayed.stderr


@pytest.mark.parametrize("name", ["mixed.pcapng", "vlan.pcap", "malformed.pcap"])
def test_dev_stdin_and_dash_read_pcap_and_pcapng_streams(pcaps, engine, name):
    data = (pcaps / name).read_bytes()
    expected = direct(pcaps / name)
    for path in ("-", "/dev/stdin"):
        done = subprocess.run(
            f"cat {pcaps / name} | {' '.join(PTC)} replay {path} -o - -q", shell=True, capture_output=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout == expected, path
    assert ptc("replay", "-", "-o", "-", "-q", data=data).stdout == expected


def test_a_fifo_fed_in_small_pieces_is_the_file(big, engine, tmp_path):
    fifo = tmp_path / "probes.fifo"
    os.mkfifo(fifo)
    data = big.read_bytes()

    def feed() -> None:
        with open(fifo, "wb", buffering=0) as f:
            for at in range(0, len(data), 7001):  # pieces that cut records anywhere
                f.write(data[at : at + 7001])
                time.sleep(0.001)

    feeder = threading.Thread(target=feed)
    feeder.start()
    done = ptc("replay", fifo, "-o", "-", "--tts-shift", "18")
    feeder.join()
    assert done.returncode == 0, done.stderr
    assert done.stdout == direct(big, "--tts-shift", "18")
    assert done.stdout.count(b"\n") == 5000


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        (lambda d: d[:-7], rb"Error: <stdin>: capture cut short at byte \d+"),
        (lambda d: b"", rb"Error: <stdin>: empty file, not a capture"),
        (lambda d: b"GIF89a-not-a-capture", rb"Error: <stdin>: not a pcap or pcapng file \(magic 47494638\)"),
        (
            lambda d: d[:24] + bytes(8) + (10**6).to_bytes(4, "little") + bytes(4),
            rb"Error: <stdin>: record at byte 24 claims 1000000 bytes: corrupt capture",
        ),
    ],
)
def test_a_damaged_stream_is_one_line_naming_it_after_the_frames_before(big, engine, tmp_path, cut, message):
    damaged = tmp_path / "damaged.pcap"
    damaged.write_bytes(cut(big.read_bytes()))
    from_file = ptc("replay", damaged, "-o", "-")
    done = ptc("replay", "-", "-o", "-", data=damaged.read_bytes())
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith(b"Error:")]
    assert len(errors) == 1 and re.fullmatch(message, errors[0]), done.stderr
    assert b"Traceback" not in done.stderr
    assert done.stdout == from_file.stdout  # the frames before the damage, as from the file
    assert errors[0].replace(b"<stdin>", str(damaged).encode()) in from_file.stderr.splitlines()


def test_stdin_on_a_terminal_says_to_pipe_a_capture_in(engine):
    controller, terminal = pty.openpty()
    try:
        done = ptc("replay", "-", "-o", "-", stdin=terminal)
    finally:
        os.close(controller)
        os.close(terminal)
    assert done.returncode == 1
    assert b"Error: <stdin>: a terminal, not a capture (pipe one in: tcpdump -w - | ptc replay -)" in done.stderr


def test_a_terminal_sees_a_streams_bytes_read(big, engine):
    controller, terminal = pty.openpty()
    replaying = subprocess.Popen(
        [*PTC, "replay", "-", "-o", os.devnull, "-q"], stdin=subprocess.PIPE, stderr=terminal,
        env={**os.environ, "COLUMNS": "120"},
    )  # fmt: skip
    os.close(terminal)
    shown = bytearray()
    reading = threading.Thread(target=_read_all, args=(controller, shown))
    reading.start()
    replaying.communicate(big.read_bytes(), timeout=120)
    reading.join(timeout=10)
    os.close(controller)
    assert replaying.returncode == 0
    assert re.search(rb"5,000 frames, 5,000 probes, 1\.\d MB read", shown), bytes(shown[-500:])


def _read_all(fd: int, into: bytearray) -> None:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the terminal's other end closed
            return
        if not chunk:
            return
        into += chunk


def test_a_streams_progress_counts_bytes_without_a_total(big, engine, tmp_path):
    fifo = tmp_path / "p.fifo"
    os.mkfifo(fifo)
    data = big.read_bytes()
    feeder = threading.Thread(target=lambda: Path(fifo).write_bytes(data))
    feeder.start()
    seen: list[tuple[int, int | None]] = []
    with open(os.devnull, "wb") as out:
        stats = asyncio.run(
            replay(
                [fifo, big], make_engine(18), JsonLinesSink(out), lambda s: seen.append((s.bytes_read, s.bytes_total))
            )
        )
    feeder.join()
    assert stats.probes == 10_000 and not stats.capture_errors
    assert all(total is None for _, total in seen)  # one stream among the files: no total
    assert [b for b, _ in seen] == sorted(b for b, _ in seen) and stats.bytes_read == 2 * len(data)


def test_live_tcpdump_into_ptc_replay_over_a_veth_pair(veth: Veth, engine, tmp_path):
    """Probes sent over a veth pair, captured by a live `tcpdump -w -`, piped into `ptc replay -`: the records
    come out while tcpdump still runs, and are those of replaying what tcpdump wrote (tee'd to a file)."""
    frames = [frame for _, _, frame in realistic(300, sources=8)]
    captured, out = tmp_path / "captured.pcap", tmp_path / "live.jsonl"
    # tcpdump -i RX -U -w - ip6 | tee captured.pcap | ptc replay - -o live.jsonl --tts-shift 18
    tcpdump = subprocess.Popen(
        ["tcpdump", "-i", veth.rx_iface, "-U", "-w", "-", "ip6"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    tee = subprocess.Popen(["tee", captured], stdin=tcpdump.stdout, stdout=subprocess.PIPE)
    replaying = subprocess.Popen([*PTC, "replay", "-", "-o", out, "--tts-shift", "18"], stdin=tee.stdout)
    tcpdump.stdout.close()
    tee.stdout.close()
    try:
        _wait_for_line(tcpdump, b"listening on")
        veth.send(frames)
        deadline = time.monotonic() + 30
        while (out.read_bytes().count(b"\n") if out.exists() else 0) < len(frames) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert out.read_bytes().count(b"\n") == len(frames)  # written while the stream is still open
        assert replaying.poll() is None
    finally:
        tcpdump.send_signal(signal.SIGINT)  # its end of the pipe closes: tee's, then ptc's input ends
        for process in (tcpdump, tee, replaying):
            process.wait(timeout=30)
    assert replaying.returncode == 0
    assert out.read_bytes() == direct(captured, "--tts-shift", "18")
    sent = tmp_path / "sent.pcap"
    with open(sent, "wb") as f:
        writer = PcapWriter(f, 1)
        for frame in frames:
            writer.write(0, frame)
    strip = re.compile(rb'"capture_ns":\d+').sub  # the capture times are tcpdump's
    assert strip(b"", out.read_bytes()) == strip(b"", direct(sent, "--tts-shift", "18"))


def _wait_for_line(process: subprocess.Popen, text: bytes, timeout_s: float = 20) -> None:
    """Wait until `process` said `text` on stderr (tcpdump: "listening on ...")."""
    deadline = time.monotonic() + timeout_s
    seen = b""
    os.set_blocking(process.stderr.fileno(), False)
    while text not in seen:
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"no {text!r} from {process.args[0]}: {seen!r}")
        seen += process.stderr.read() or b""
        time.sleep(0.02)
