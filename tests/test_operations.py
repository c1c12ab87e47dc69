"""Watching ptc collect: the live table, log lines, /metrics and /healthz, --user."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from rich.console import Console
from test_collect_veth import PTC, Collector, frames_to_send

from pt_collector.capture.pcap import read_capture
from pt_collector.codec.record import from_json_lines
from pt_collector.ops.board import StatsBoard
from pt_collector.ops.display import Display
from pt_collector.pipeline.stats import BROKER_DOWN, BROKER_UP, CollectStats

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except urllib.error.URLError as exc:  # not listening (yet)
        return 0, str(exc.reason)


def metric(text: str, name: str, labels: str = 'worker="0"') -> float:
    wanted = f"{name}{{{labels}}} " if labels else f"{name} "
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(wanted))


def test_metrics_are_scraped_during_a_real_capture(veth, tmp_path, pcaps):
    port = free_port()
    out = tmp_path / "out.jsonl"
    collector = Collector("--iface", veth.rx_iface, "--output", str(out), "--metrics-port", str(port),
                          "--metrics-address", "127.0.0.1")  # fmt: skip
    collector.wait_for(lambda line: "kernel" in line)
    probes, _ = frames_to_send(300)
    malformed = [frame for _, _, frame in read_capture(pcaps / "malformed.pcap")]
    veth.send(probes + malformed)
    collector.frames_seen(300 + len(malformed))
    time.sleep(1.2)  # the next post to the board
    status, text = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    assert metric(text, "ptc_kernel_received_frames_total") == 300 + len(malformed)
    assert metric(text, "ptc_probes_decoded_total") == 302  # 300 + the two good probes of malformed.pcap
    assert metric(text, "ptc_records_acked_total") == 302
    assert metric(text, "ptc_kernel_dropped_frames_total") == 0
    assert metric(text, "ptc_malformed_frames_total", 'reason="srh: no PT TLV",worker="0"') == 1
    assert metric(text, "ptc_capturing", "") == 1
    assert get(f"http://127.0.0.1:{port}/healthz") == (200, "capturing\n")  # a file sink: no broker to watch
    assert collector.stop() == 0
    assert len(from_json_lines(out.read_bytes())) == 302


def wait_health(port: int, code: int, timeout: float = 30.0, body: str | None = None) -> str:
    """The first /healthz body with status `code` (and that `body`, if given)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, text = get(f"http://127.0.0.1:{port}/healthz")
        if status == code and body in (None, text):
            return text
        time.sleep(0.2)
    raise AssertionError(f"/healthz never answered {code} {body or ''}; last: {status} {text!r}")


def board_with_two_workers() -> StatsBoard:
    board = StatsBoard(2, kafka=True)
    for i in range(2):
        stats = CollectStats(kernel_received=100 + i, frames=100 + i, decoded=90, not_pt=0, batched=90, sent=90,
                             acked=80, pending=10, in_flight=1, messages=3, broker=BROKER_UP)  # fmt: skip
        stats.malformed["srh: no PT TLV"] = 10 + i
        board.post(i, stats)
    return board


def test_live_table_rows():
    console = Console(record=True, width=120, file=io.StringIO())
    display = Display(board_with_two_workers(), "eth9", live=False, interval_s=5)
    console.print(display.table())
    text = console.export_text()
    for row in ("capture", "decode", "batch", "deliver", "worker 0", "worker 1", "total"):
        assert f"│ {row}" in text, text
    assert "201" in text  # kernel received, summed
    # records, as the exit line counts them (in flight: sent, not yet acked), the messages they went in after
    assert "Kafka: broker up; records: 20 in flight, 180 sent, 160 acked, 0 dropped, 0 failed (6 messages" in text
    header = next(line for line in text.splitlines() if "stage" in line)
    assert "not PT" in header and "malformed" in header
    decode = next(line for line in text.splitlines() if "│ decode" in line)
    assert [cell.strip() for cell in decode.split("│")[1:-1]][5:] == ["21", "0", "21"]  # drops = not PT + malformed
    worker = next(line for line in text.splitlines() if "│ worker 1" in line)
    assert [cell.strip() for cell in worker.split("│")[1:-1]][6:] == ["0", "11"]


def shown(display: Display) -> str:
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(display.table())
    return console.export_text()


def test_live_table_says_why_the_broker_is_down():
    board = board_with_two_workers()
    display = Display(board, "eth9", live=False, interval_s=5, stream=io.StringIO())
    display.say("error", "cannot reach Kafka at 127.0.0.1:1: records are kept")
    assert "Kafka: why:" not in shown(display)  # the broker is up: an old error is not news
    board.workers()[1].broker = BROKER_DOWN
    assert "Kafka: broker unreachable; records:" in shown(display)
    assert "Kafka: why: cannot reach Kafka at 127.0.0.1:1: records are kept" in shown(display)
    display.say("info", "connected to Kafka after 3.0 s")
    assert "Kafka: why:" not in shown(display)


def test_broker_state_of_the_total_is_the_worst_worker():
    board = board_with_two_workers()
    stats = board.workers()[1]
    stats.broker = BROKER_DOWN
    assert board.total().broker == BROKER_DOWN
    assert board.health() == (False, "Kafka broker unreachable")


def test_json_log_lines_and_repeated_errors_once():
    stream = io.StringIO()
    display = Display(board_with_two_workers(), "eth9", live=False, interval_s=0.0, log_format="json", stream=stream)
    display.refresh()
    for _ in range(50):
        display.error("broker unreachable")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["event"] == "counters" and lines[0]["decoded"] == 180 and lines[0]["iface"] == "eth9"
    assert lines[0]["malformed"] == {"srh: no PT TLV": 21}
    assert [line["msg"] for line in lines[1:]] == ["broker unreachable"]  # once, not 50 times


def test_user_drops_root_after_opening_the_socket(veth, tmp_path):
    out = tmp_path / "out.jsonl"  # opened as root, before the drop, as the socket is
    collector = Collector("--iface", veth.rx_iface, "--output", str(out), "--user", "nobody")
    collector.wait_for(lambda line: "kernel" in line)
    status = Path(f"/proc/{collector.proc.pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:] == [str(__import__("pwd").getpwnam("nobody").pw_uid)] * 4
    veth.send(frames_to_send(30)[0])
    collector.frames_seen(30)
    assert collector.stop() == 0
    assert len(from_json_lines(out.read_bytes())) == 30


def test_unknown_user_is_one_line(veth):
    proc = subprocess.run(
        [*PTC, "collect", "--iface", veth.rx_iface, "--output", "-", "--user", "no-such-user-x"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 1 and proc.stderr.strip() == "Error: no user named no-such-user-x"


def test_grafana_dashboard_reads_metrics_ptc_serves():
    import re

    from pt_collector.analyze.metrics import SERVED as ANALYZE_SERVED  # ptc analyze --metrics-port
    from pt_collector.ops.metrics import COUNTERS, GAUGES

    dashboard = json.loads((REPO / "docs" / "grafana-dashboard.json").read_text())
    served = {f"{name}_total" for name, _, _ in COUNTERS} | {name for name, _, _ in GAUGES}
    served |= {"ptc_malformed_frames_total", "ptc_capturing"}
    served |= ANALYZE_SERVED
    served |= {
        f"ptc_kafka_{h}_{part}" for h in ("delivery_seconds", "batch_records") for part in ("bucket", "sum", "count")
    }
    used = {m for panel in dashboard["panels"] for t in panel["targets"] for m in re.findall(r"ptc_[a-z_]+", t["expr"])}
    assert used and used <= served, used - served
