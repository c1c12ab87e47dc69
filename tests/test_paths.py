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
from pt_collector.cli import paths_plot
from pt_collector.cli.main import main
from pt_collector.cli.paths import PLOT_HINT
from pt_collector.codec.encode import ethernet
from pt_collector.codec.generate import DEFAULT_START_NS, generate
from pt_collector.codec.record import DelayHistogram, PathHistogram, PathNode
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


needs_matplotlib = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="no matplotlib")


@pytest.fixture
def drawn(monkeypatch):
    """The figures `ptc paths --plot` draws, as matplotlib objects."""
    figures = []
    real = paths_plot.plot

    def keep(*args):
        figures.append(real(*args))
        return figures[-1]

    monkeypatch.setattr(paths_plot, "plot", keep)
    return figures


def rows_of(figure) -> list[tuple[str, object, object]]:
    """(row title, delay axes, legs axes) per path row."""
    return [(row._suptitle.get_text(), *row.axes) for row in figure.subfigs]


@needs_matplotlib
def test_plot_rows_name_each_path_by_its_interfaces_with_bands_loss_and_legs(capture, tmp_path, drawn):
    """Source 1 twice towards the same sink through other midpoints: two rows that read differently."""
    frames = [(t, frame) for _, t, frame in read_capture(capture)]
    frames += [(t, ethernet(p)) for t, p in generate(50, sources=1, seed=7, start_ns=DEFAULT_START_NS + 500_000)]
    with open(capture, "wb") as stream:  # and a second path of source 1 (other interface ids), after the first
        writer = PcapWriter(stream, LINKTYPE_ETHERNET)
        for capture_ns, frame in frames:
            writer.write(capture_ns, frame)
    out = tmp_path / "paths.png"
    result = run("paths", capture, "--tts-shift", 18, "--plot", out)
    assert result.exit_code == 0, result.output
    (figure,) = drawn
    rows = rows_of(figure)
    records = [Decoder(18).decode(f, t, link) for link, t, f in read_capture(capture)]
    paths = {(r.src.addr, tuple(h.if_id for h in r.hops)) for r in records}
    assert len(rows) == len(paths) == 4
    for src, ifs in paths:
        named = " > ".join(f"if {i}" for i in ifs)
        assert sum(title.startswith(f"{src} > {named} > ") for title, _, _ in rows) == 1
    assert "UTC" in figure._suptitle.get_text() and "4 paths, 645 probes from lossy.pcap" in figure._suptitle.get_text()
    for title, delays, legs in rows:
        assert delays.get_ylabel() == "ms" and [t.get_text() for t in legs.get_xticklabels()][-1] == "> sink"
        assert len(legs.patches) == 6  # 5 hops: 6 legs, a bar each
        assert type(delays.xaxis.get_major_formatter()).__name__ == "ConciseDateFormatter"
        lossy = [t.get_text() for t in delays.texts]
        assert lossy == (["5 lost"] if title.startswith("2001:db8:2::1 ") else []), title
    assert len({id(delays.get_shared_x_axes().get_siblings(delays)[0]) for _, delays, _ in rows}) == 1


@needs_matplotlib
def test_plot_of_eight_paths_of_2500_probes_and_without_hop_times(tmp_path, drawn):
    capture = tmp_path / "eight.pcap"
    with open(capture, "wb") as stream:
        writer = PcapWriter(stream, LINKTYPE_ETHERNET)
        for capture_ns, packet in generate(20_000, sources=8):
            writer.write(capture_ns, ethernet(packet))
    result = run("paths", capture, "--plot", tmp_path / "eight.svg")
    assert result.exit_code == 0, result.output
    rows = rows_of(drawn[0])
    assert len(rows) == 8 and all("  2,500 probes, loss 0 (0.0%)" in title for title, _, _ in rows)
    assert all(legs.texts[0].get_text().startswith("no hop times") for _, _, legs in rows)  # no --tts-shift
    assert (tmp_path / "eight.svg").read_text().startswith("<?xml")


@needs_matplotlib
@pytest.mark.parametrize("where", ["file/x.png", "/proc/ptc-paths.png"], ids=["not-a-directory", "refused"])
def test_plot_output_that_cannot_be_written_is_one_line(capture, tmp_path, where):
    (tmp_path / "file").write_text("")
    out = tmp_path / where if not where.startswith("/") else where
    result = run("paths", capture, "--plot", out)
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines()[-1].startswith(f"Error: cannot write {out}: ")
    assert "Traceback" not in result.output


def test_plot_without_matplotlib_is_one_line(capture, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as when it is not installed
    result = run("paths", capture, "--plot", tmp_path / "delays.png")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines()[-1] == f"Error: {PLOT_HINT}"
    assert "pip install -e '.[plot]'" in PLOT_HINT  # what works: ptc is on no package index
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


NS_PER_MS = 1_000_000


def window(start_ns: int, loss: int, p50_ms: int, p99_ms: int) -> PathHistogram:
    """A `ptc analyze` window of one path (quantiles p50, p90, p99)."""
    e2e = DelayHistogram(100, 1, 30 * NS_PER_MS, 1, (100,), (p50_ms * NS_PER_MS, 20 * NS_PER_MS, p99_ms * NS_PER_MS))
    return PathHistogram(
        1, "analyze", start_ns, 10**8, PathNode("2001:db8:1::1"), PathNode("2001:db8:e001::1"), (7, 8), 100, loss,
        (), e2e, (), (), (500, 900, 990), 10_000,
    )  # fmt: skip


@needs_matplotlib
def test_plot_of_analyze_windows_draws_each_windows_band_and_marks_its_loss(tmp_path):
    """ptc paths --topic <analyze's output>: a p50-p99 band step per window, a loss mark where a window lost."""
    table = PathTable()
    table.add_histograms([window(DEFAULT_START_NS + i * 10**8, 5 if i == 2 else 0, 10 + i, 20 + i) for i in range(4)])
    (path,) = table.rows()
    assert [(w.p50_ns, w.p99_ns) for w in path.windows] == [
        ((10 + i) * NS_PER_MS, (20 + i) * NS_PER_MS) for i in range(4)
    ]
    assert list(path.loss_at_ns) == [DEFAULT_START_NS + 2 * 10**8] and list(path.loss_count) == [5]
    assert table.span_ns() == (DEFAULT_START_NS, DEFAULT_START_NS + 4 * 10**8)
    figure = paths_plot.plot(table, tmp_path / "windows.png", "a topic")
    ((_, delays, _),) = rows_of(figure)
    p50, p99 = (line.get_ydata() for line in delays.lines[:2])
    assert list(p50) == [10, 10, 11, 11, 12, 12, 13, 13] and list(p99) == [20, 20, 21, 21, 22, 22, 23, 23]
    assert [t.get_text() for t in delays.texts] == ["5 lost"]
