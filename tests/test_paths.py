"""`ptc paths`: the table of paths from a capture and from a Kafka topic, and the plot."""

from __future__ import annotations

import importlib.util
import math
import sys

import pytest
from click.testing import CliRunner
from test_kafka_delivery import new_topic

from pt_collector import Decoder
from pt_collector.capture.pcap import PcapWriter, read_capture
from pt_collector.cli.main import main
from pt_collector.codec.encode import ethernet
from pt_collector.codec.generate import generate
from pt_collector.codec.wire import LINKTYPE_ETHERNET
from pt_collector.pipeline.paths import PathTable

try:  # also runs with --noconftest; kafka_fixture shares one broker with the conftest.py import
    from kafka_fixture import kafka_broker
except ImportError:  # tests/ is a package
    from tests.kafka_fixture import kafka_broker  # noqa: F401

LOST = range(10, 15)  # sequence numbers of source 2 left out of the capture


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def capture(tmp_path):
    """3 sources, 200 probes each, but source 2's probes 10..14 lost on the way."""
    path = tmp_path / "lossy.pcap"
    with open(path, "wb") as stream:
        writer = PcapWriter(stream, LINKTYPE_ETHERNET)
        for n, (capture_ns, packet) in enumerate(generate(600, sources=3)):
            if n % 3 != 1 or n // 3 + 1 not in LOST:
                writer.write(capture_ns, ethernet(packet))
    return path


def expected_rows(capture) -> dict[str, list[str]]:
    """Each source's row, worked out from the decoded records the plain way."""
    decoder = Decoder(18)
    records = [decoder.decode(frame, t, link) for link, t, frame in read_capture(capture)]
    rows = {}
    for src in sorted({r.src.addr for r in records}):
        mine = [r for r in records if r.src.addr == src]
        delays = sorted(r.e2e_ns for r in mine)
        lost = len(LOST) if src == "2001:db8:2::1" else 0

        def at(q: float, delays=delays) -> str:
            return f"{delays[math.ceil(q * len(delays)) - 1] / 1e6:.3f}"

        hops = " ".join(str(hop.if_id) for hop in mine[0].hops)
        ratio = f"{lost / (len(mine) + lost):.1%}"
        rows[src] = [mine[0].sink.addr, hops, f"{len(mine):,}", f"{lost} ({ratio})", at(0.5), at(0.99), at(1.0)]
    return rows


def table_rows(stdout: str) -> dict[str, list[str]]:
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in stdout.splitlines() if "│" in line]
    return {row[0]: row[1:] for row in rows}


def test_paths_of_a_capture(capture):
    result = run("paths", capture, "--tts-shift", 18)
    assert result.exit_code == 0, result.output
    assert "paths: 595 probes from 1 files" in result.stdout
    rows = table_rows(result.stdout)
    assert rows == expected_rows(capture)
    assert rows["2001:db8:2::1"][3] == "5 (2.5%)"


def test_paths_of_a_topic(kafka_broker, capture):
    topic = new_topic(kafka_broker)
    assert run("replay", capture, "--brokers", kafka_broker, "--topic", topic, "--tts-shift", 18).exit_code == 0
    reading = ("--from-beginning", "--max", 595, "--timeout", 30)
    result = run("paths", "--brokers", kafka_broker, "--topic", topic, *reading)
    assert result.exit_code == 0, result.output
    assert f"paths: 595 records from {topic}" in result.stdout
    assert table_rows(result.stdout) == expected_rows(capture)


def test_kafka_options_do_not_go_with_files(capture):
    result = run("paths", capture, "--topic", "elsewhere")
    assert result.exit_code == 2 and "--topic: Kafka options, but FILES are read" in result.stderr


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib (the plot extra) not installed")
def test_plot_of_each_paths_delay_over_time(capture, tmp_path):
    out = tmp_path / "delays.png"
    result = run("paths", capture, "--plot", out)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stderr
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


def test_plot_without_matplotlib_is_one_line(capture, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as when it is not installed
    result = run("paths", capture, "--plot", tmp_path / "delays.png")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines()[-1] == "Error: --plot needs matplotlib: pip install 'pt-collector[plot]'"
    assert not (tmp_path / "delays.png").exists()


def test_path_table_keeps_paths_apart_and_orders_them():
    decoder = Decoder()
    table = PathTable()
    table.add(decoder.decode(p, t, 101) for t, p in generate(30, sources=3, hops=2))
    table.add(decoder.decode(p, t, 101) for t, p in generate(5, sources=1, hops=1, seed=7))  # source 1, another path
    rows = table.rows()
    assert [(row.src, row.probes) for row in rows] == [
        ("2001:db8:1::1", 10), ("2001:db8:2::1", 10), ("2001:db8:3::1", 10), ("2001:db8:1::1", 5),
    ]  # fmt: skip
    assert len(rows[0].hop_if_ids) == 2 and len(rows[-1].hop_if_ids) == 1
    assert rows[-1].loss == 0  # session 1 again from sequence 1: older than the latest, not lost
    assert rows[0].quantile(0.0) == min(rows[0].e2e_ns) and rows[0].quantile(1.0) == max(rows[0].e2e_ns)
