"""The two engines behind the decode stage: chosen by PTC_ENGINE, named by --version, the replay summary and
/metrics, and equal through the real command line (tests/test_native.py holds them byte-equal frame by frame)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pt_collector.capture.pcap import read_capture
from pt_collector.codec.record import EncodedRecords, to_json_lines
from pt_collector.ops.board import StatsBoard
from pt_collector.ops.metrics import BoardCollector
from pt_collector.pipeline import engine as engines

PCAPS = Path(__file__).resolve().parent.parent / "pcaps"
PTC = [sys.executable, "-m", "pt_collector.cli.main"]
native_built = pytest.mark.skipif(
    not engines.NATIVE and not os.environ.get("PTC_REQUIRE_NATIVE"), reason="the native engine is not built"
)


def ptc(*args: str, engine: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PTC_ENGINE=engine)
    return subprocess.run([*PTC, *args], env=env, capture_output=True, timeout=120, check=False)


@pytest.mark.parametrize("engine", ["native", "python"])
def test_version_and_summary_name_the_engine(engine):
    if engine == "native" and not engines.NATIVE and not os.environ.get("PTC_REQUIRE_NATIVE"):
        pytest.skip("the native engine is not built")
    assert ptc("--version", engine=engine).stdout.decode().endswith(f", {engine} engine\n")
    done = ptc("replay", str(PCAPS / "encap.pcap"), "-o", "/dev/null", engine=engine)
    assert done.returncode == 0
    assert f"engine          {engine}\n" in done.stderr.decode()


@pytest.mark.parametrize(
    "command",
    [
        ("replay", str(PCAPS / "encap.pcap"), "-o", "-"),
        ("collect", "--iface", "lo", "--metrics-port", "0", "-o", "/dev/null"),  # before serving metrics
    ],
)
def test_an_unknown_engine_is_a_usage_error(command):
    done = ptc(*command, engine="turbo")
    assert done.returncode == 2
    assert done.stderr.decode().splitlines()[-1] == "Error: PTC_ENGINE=turbo: not an engine (one of native, python)"
    assert done.stdout == b""


@native_built
def test_both_engines_write_the_same_records_and_counters():
    captures = [str(path) for path in sorted(PCAPS.glob("*.pcap*"))]
    out = {}
    for engine in ("native", "python"):
        done = ptc("replay", *captures, "--tts-shift", "18", "-o", "-", engine=engine)
        summary = [
            line for line in done.stderr.decode().splitlines() if not line.startswith(("elapsed", "rate", "engine"))
        ]
        out[engine] = (done.returncode, done.stdout, summary)
    assert out["native"] == out["python"]
    assert out["native"][1].count(b"\n") > 100 and any("malformed" in line for line in out["native"][2])


@native_built
def test_the_native_engine_keeps_each_records_frame_as_the_python_one():
    frames = [(capture_ns, frame) for linktype, capture_ns, frame in read_capture(PCAPS / "malformed.pcap")]
    frames += [(capture_ns, frame) for linktype, capture_ns, frame in read_capture(PCAPS / "encap.pcap")]
    native = engines.NativeEngine(18).decode_batch(frames, 1, keep_frames=True)
    python = engines.PythonEngine(engines.Decoder(18)).decode_batch(frames, 1, keep_frames=True)
    assert native == python
    assert (
        native.frames and len(native.frames) == len(native.records) and native.not_pt + sum(native.malformed.values())
    )


def test_metrics_name_the_engine():
    families = {family.name: family for family in BoardCollector(StatsBoard(1, kafka=False, engine="python")).collect()}
    assert [(s.labels, s.value) for s in families["ptc_engine_info"].samples] == [({"engine": "python"}, 1)]


def test_encoded_records_are_written_whole_and_read_only_when_asked(monkeypatch):
    records = [record for record, _ in _decoded(PCAPS / "encap.pcap")]
    data = to_json_lines(records)
    encoded = EncodedRecords(data, len(records))
    monkeypatch.setattr(EncodedRecords, "__getitem__", None)  # nothing below may make Record objects
    assert len(encoded) == len(records) and to_json_lines(encoded) is data
    monkeypatch.undo()
    assert encoded == records and list(encoded[1:3]) == records[1:3] and encoded[-1] == records[-1]


def _decoded(path: Path) -> list:
    decoder = engines.Decoder(18)
    return [(decoder.decode(frame, ns, linktype), ns) for linktype, ns, frame in read_capture(path)]
