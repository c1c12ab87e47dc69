"""The ptc command as a user runs it: replay and generate."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from pt_collector import Decoder
from pt_collector.capture.pcap import read_capture
from pt_collector.cli.main import main
from pt_collector.codec.record import from_json_lines
from pt_collector.pipeline.engine import PythonEngine

# What each bundled capture holds (pcaps/README.md): probes, not PT, malformed by reason.
BUNDLED = {
    "encap.pcap": (40, 0, {}),
    "bare.pcap": (20, 0, {}),
    "mcd-0-to-14.pcap": (15, 0, {}),
    "srh-variants.pcap": (10, 0, {}),
    "testbed-vpp.pcap": (3, 0, {}),
    "vlan.pcap": (2, 0, {}),
    "cooked-sll.pcap": (2, 0, {}),
    "cooked-sll2.pcap": (2, 0, {}),
    "raw-ipv6.pcap": (2, 0, {}),
    "mixed.pcapng": (5, 5, {}),
    "malformed.pcap": (
        2,
        0,
        {
            "hbh-pt: opt data len not a multiple of 3": 1,
            "hbh-pt: option runs past the header": 1,
            "pt-tlv: length is not 14": 1,
            "srh: no PT TLV": 1,
            "srh: truncated frame": 1,
        },
    ),
}


def run(*args: str) -> object:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_every_bundled_capture_is_listed(pcaps):
    assert {p.name for p in pcaps.iterdir() if p.suffix in (".pcap", ".pcapng")} == set(BUNDLED)


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_replay_bundled_capture(pcaps, tmp_path, name):
    probes, not_pt, malformed = BUNDLED[name]
    out = tmp_path / "out.jsonl"
    result = run("replay", str(pcaps / name), "--output", str(out), "--tts-shift", "18")
    assert result.exit_code == 0, result.output
    records = from_json_lines(out.read_bytes())
    assert len(records) == probes
    decoder = Decoder(tts_shift=18)
    expected = []
    for linktype, capture_ns, frame in read_capture(pcaps / name):
        try:
            record = decoder.decode(frame, capture_ns, linktype)
        except Exception:
            continue
        if record is not None:
            expected.append(record)
    assert records == expected
    summary = result.stderr
    assert f"probes decoded  {probes:,}" in summary
    assert f"not PT          {not_pt:,}" in summary
    assert f"malformed       {sum(malformed.values()):,}" in summary
    for reason, n in malformed.items():
        assert f"  {reason}: {n}" in summary


def test_replay_to_stdout_many_files_in_order(pcaps):
    result = run("replay", str(pcaps / "vlan.pcap"), str(pcaps / "raw-ipv6.pcap"), "-o", "-", "-q")
    assert result.exit_code == 0
    records = from_json_lines(result.stdout.encode())
    assert len(records) == 4
    assert result.stderr == ""
    assert [r.sequence for r in records] == [1, 2, 1, 2]


def test_records_have_null_times_without_a_tts_shift(pcaps):
    result = run("replay", str(pcaps / "encap.pcap"), "-o", "-", "-q")
    records = from_json_lines(result.stdout.encode())
    assert all(h.time_ns is None for r in records for h in r.hops)
    shifted = from_json_lines(
        run("replay", str(pcaps / "encap.pcap"), "-o", "-", "-q", "--tts-shift", "18").stdout.encode()
    )
    assert all(h.time_ns is not None for r in shifted for h in r.hops)


def test_truncated_capture_exits_1_after_writing_what_it_could(pcaps, tmp_path):
    cut = tmp_path / "cut.pcap"
    cut.write_bytes((pcaps / "encap.pcap").read_bytes()[:-30])
    result = run("replay", str(cut), "-o", "-")
    assert result.exit_code == 1
    assert len(from_json_lines(result.stdout.encode())) == 39
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0].startswith(f"Error: {cut}: capture cut short at byte ")
    assert "Traceback" not in result.stderr


def test_not_a_capture_is_one_line_and_exit_1(tmp_path, pcaps):
    junk = tmp_path / "notes.txt"
    junk.write_text("hello, this is not a capture\n")
    result = run("replay", str(junk), str(pcaps / "vlan.pcap"), "-o", "-", "-q")
    assert result.exit_code == 1
    assert len(from_json_lines(result.stdout.encode())) == 2  # the good file still counts
    assert result.stderr.strip().splitlines() == [f"Error: {junk}: not a pcap or pcapng file (magic 68656c6c)"]


@pytest.mark.parametrize("args", [["-o", "-", "--tts-shift", "25"], ["-o", "-", "--bogus"]])
def test_usage_errors_exit_2(pcaps, args):
    result = run("replay", str(pcaps / "encap.pcap"), *args)
    assert result.exit_code == 2
    assert "Usage:" in result.output or "Error" in result.output


def test_unwritable_output(pcaps):
    result = run("replay", str(pcaps / "encap.pcap"), "-o", "/nonexistent/dir/out.jsonl")
    assert result.exit_code == 1
    assert "cannot write /nonexistent/dir/out.jsonl" in result.output


@pytest.mark.parametrize("link", ["ethernet", "vlan", "qinq", "sll", "sll2", "raw"])
def test_generate_then_replay(tmp_path, link):
    pcap = tmp_path / "g.pcap"
    result = run("generate", str(pcap), "--count", "30", "--hops", "14", "--segments", "2", "--link", link)
    assert result.exit_code == 0
    records = from_json_lines(run("replay", str(pcap), "-o", "-", "-q", "--tts-shift", "18").stdout.encode())
    assert len(records) == 30
    assert all(len(r.hops) == 12 and len(r.segments) == 2 and r.sink is not None for r in records)
    assert all(h.time_ns is not None for r in records for h in r.hops)  # generated delays stay within a TTS wrap
    assert len({r.src.addr for r in records}) == 4


def test_generate_bare_and_seeded(tmp_path):
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    run("generate", str(a), "-c", "5", "--bare", "--seed", "7")
    run("generate", str(b), "-c", "5", "--bare", "--seed", "7")
    assert a.read_bytes() == b.read_bytes()
    records = from_json_lines(run("replay", str(a), "-o", "-", "-q").stdout.encode())
    assert all(r.sink is None and r.e2e_ns is None for r in records)


def test_pipe_closed_early_is_quiet(pcaps, tmp_path):
    big = tmp_path / "big.pcap"
    run("generate", str(big), "-c", "20000")
    proc = subprocess.run(
        f"{sys.executable} -m pt_collector.cli.main replay {big} -o - | head -1",
        shell=True, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.stdout.count("\n") == 1
    assert "Traceback" not in proc.stderr


def test_help_answers_questions():
    text = run("replay", "--help").output
    for words in ("pcapng", "SLL", "--tts-shift", "Exit status", "template"):
        assert words in text


@pytest.mark.parametrize(
    "name, args", [("encap.pcap", ["-c", "40", "--seed", "1"]), ("bare.pcap", ["-c", "20", "--seed", "2", "--bare"])]
)
def test_bundled_generated_captures_are_what_generate_writes(pcaps, tmp_path, name, args):
    out = tmp_path / name
    assert run("generate", str(out), *args).exit_code == 0
    assert out.read_bytes() == (pcaps / name).read_bytes()


def test_replay_reports_progress_over_the_files_bytes(tmp_path):
    import asyncio

    from pt_collector.pipeline.replay import replay
    from pt_collector.pipeline.sinks import ListSink

    pcap = tmp_path / "p.pcap"
    run("generate", str(pcap), "-c", "5000")
    seen: list[tuple[int, int, int]] = []
    sink = ListSink()
    stats = asyncio.run(
        replay(
            [pcap, pcap], PythonEngine(Decoder()), sink, lambda s: seen.append((s.probes, s.bytes_read, s.bytes_total))
        )
    )
    total = 2 * pcap.stat().st_size
    assert len(seen) >= 9 and all(t == total for _, _, t in seen)
    assert [b for _, b, _ in seen] == sorted(b for _, b, _ in seen) and 0 < seen[0][1] < total
    assert stats.bytes_read == total and stats.probes == len(sink.records) == 10000
