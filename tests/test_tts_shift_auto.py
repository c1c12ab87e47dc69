"""`--tts-shift auto`: the shift learnt per source from its probes, kept checked; a wrong fixed shift warned about.

Fleets from codec/generate.py where sources stamp with different shifts; the
records must be what a decoder told each source's true shift makes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from ipaddress import IPv6Network
from pathlib import Path

import pytest
from test_collect_veth import Collector, without_capture_time

from pt_collector import Decoder
from pt_collector.capture.pcap import PcapWriter, read_capture
from pt_collector.codec import shift_infer
from pt_collector.codec.encode import ethernet
from pt_collector.codec.generate import generate
from pt_collector.codec.record import Record, from_json_lines
from pt_collector.codec.shift_infer import CHECK_EVERY, Evidence, ShiftWatch, earliest, fits
from pt_collector.codec.tts import midpoint_times
from pt_collector.codec.wire import LINKTYPE_ETHERNET, NS_PER_S
from pt_collector.pipeline import shift_watch
from pt_collector.pipeline.engine import NATIVE, BlockEngine
from pt_collector.pipeline.shift_watch import ShiftWatchingEngine

PTC = [sys.executable, "-m", "pt_collector.cli.main"]
FLEET_SHIFTS = (16, 18, 20, 24)  # source n (1-based) stamps with FLEET_SHIFTS[(n - 1) % 4]
SOURCES = 8


def source_addr(n: int) -> str:
    return f"2001:db8:{n:x}::1"


def true_shifts(shifts=FLEET_SHIFTS, sources=SOURCES) -> dict[str, int]:
    return {source_addr(n): shifts[(n - 1) % len(shifts)] for n in range(1, sources + 1)}


def expected(frames: list[tuple[int, bytes]], shifts: dict[str, int]) -> list[Record]:
    decoder = Decoder(shift_by_source={IPv6Network(addr): shift for addr, shift in shifts.items()})
    return [decoder.decode(frame, capture_ns) for capture_ns, frame in frames]


def write_pcap(path: Path, frames: list[tuple[int, bytes]]) -> None:
    with open(path, "wb") as stream:
        writer = PcapWriter(stream, LINKTYPE_ETHERNET)
        for capture_ns, frame in frames:
            writer.write(capture_ns, frame)


def fleet(count: int, **kwargs) -> list[tuple[int, bytes]]:
    options = {"sources": SOURCES, "tts_shift": FLEET_SHIFTS, **kwargs}
    return [(capture_ns, ethernet(packet)) for capture_ns, packet in generate(count, **options)]


def shift_lines(stderr: str) -> dict[str, str]:
    """The lines about each source's shift, by source address."""
    found: dict[str, str] = {}
    for line in stderr.splitlines():
        for n in range(1, SOURCES + 1):
            if f" {source_addr(n)}:" in line:
                assert source_addr(n) not in found, f"two lines for one source: {found[source_addr(n)]!r}, {line!r}"
                found[source_addr(n)] = line
    return found


def ptc(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {**os.environ, **(env or {})}
    return subprocess.run([*PTC, *args], capture_output=True, timeout=120, env=environ, check=False)


# ---------------------------------------------------------------- the pure inference


def brute_earliest(tts: int, shift: int, lower: int) -> int | None:
    for t in range(lower, lower + 2 * NS_PER_S):
        if (t % NS_PER_S) >> shift & 0xFF == tts:
            return t
    return None


@pytest.mark.parametrize("shift", [0, 1, 2, 3])
def test_earliest_is_the_first_instant_with_that_tts(shift):
    # near a second's end, where the pattern restarts, and in the middle
    for lower in (NS_PER_S - 3000, NS_PER_S - 1, 5 * NS_PER_S + 123, 7 * NS_PER_S + 1030):
        for tts in (0, 1, 7, 128, 255):
            assert earliest(tts, shift, lower) == brute_earliest(tts, shift, lower), (tts, lower)


def test_a_tts_past_the_end_of_a_second_never_comes():
    assert earliest(255, 24, 0) is None  # 255 << 24 > 10**9
    assert not fits([255], 24, 0, 10 * NS_PER_S)


def test_the_right_shift_fits_every_generated_probe_and_its_times_lie_in_order():
    for shift in range(0, 25, 3):
        for capture_ns, frame in fleet(200, tts_shift=shift, sources=2):
            record = Decoder().decode(frame, capture_ns)
            tts, src, sink = [h.tts for h in record.hops], record.src.time_ns, record.sink.time_ns
            assert fits(tts, shift, src, sink)
            times = [t for t in midpoint_times(tts, shift, src, sink) if t is not None]
            assert times == sorted(times) and all(src - (1 << shift) < t <= sink for t in times)


def learn(frames: list[tuple[int, bytes]]) -> dict[str, Evidence]:
    evidence: dict[str, Evidence] = {}
    decoder = Decoder()
    for capture_ns, frame in frames:
        record = decoder.decode(frame, capture_ns)
        if record.e2e_ns is not None:
            ev = evidence.setdefault(record.src.addr, Evidence())
            ev.add([h.tts for h in record.hops], record.src.time_ns, record.sink.time_ns)
    return evidence


@pytest.mark.parametrize("shift", range(16, 25))
def test_every_shift_from_16_is_learnt_from_generated_traffic(shift):
    """Hop delays of 0.1 to 5 ms over 5 hops: a TTS wrap of shift 16 (16.8 ms) is about the path's delay."""
    for addr, evidence in learn(fleet(64 * 4, tts_shift=shift, sources=4)).items():
        verdict = evidence.verdict(final=True)
        assert verdict.shift == shift, (addr, verdict)
        assert verdict.log10_chance <= -6


def test_shifts_whose_wrap_is_shorter_than_the_delay_are_not_guessed():
    """Shift 12 wraps every 1 ms, the paths take 2 to 25 ms: no TTS can be placed, and none is guessed."""
    for evidence in learn(fleet(64 * 2, tts_shift=12, sources=2)).values():
        verdict = evidence.verdict(final=True)
        assert verdict.shift is None and "span a TTS wrap" in verdict.reason, verdict


def test_no_midpoint_no_verdict():
    evidence = learn(fleet(100, hops=0, sources=2))
    assert not evidence or all(ev.verdict(final=True).shift is None for ev in evidence.values())
    watch = ShiftWatch()
    source = watch.track("2001:db8::1", None, auto=True)
    for _ in range(300):
        watch.observe(source, [], 0, 1000)
    assert "too few hops" in watch.take_lines()[0]


def test_probes_sent_on_whole_seconds_with_short_delays_leave_several_shifts():
    """Every TTS is 0 under the true shift 24 and under every shift near it: they cannot be told apart."""
    for evidence in learn(fleet(64 * 2, tts_shift=24, sources=2, hops=2, interval_ns=NS_PER_S)).values():
        verdict = evidence.verdict(final=True)
        assert verdict.shift is None and "all fit every probe" in verdict.reason, verdict


@pytest.fixture
def check_often(monkeypatch):
    """One probe in 16 checked (not 1 in CHECK_EVERY): a change is seen within a few thousand probes."""
    monkeypatch.setattr(shift_infer, "CHECK_EVERY", 16)
    monkeypatch.setattr(shift_watch, "CHECK_EVERY", 16)
    return 16


def test_a_changed_shift_is_seen_by_the_check_and_said(check_often):
    watch = ShiftWatch()
    source = None
    lines = []
    for shift, count in ((18, 64 * 3), (20, check_often * 64 * 3)):
        for capture_ns, frame in fleet(count, tts_shift=shift, sources=1, seed=shift):
            record = Decoder().decode(frame, capture_ns)
            source = source or watch.track(record.src.addr, None, auto=True)
            if watch.wants(source):
                watch.observe(source, [h.tts for h in record.hops], record.src.time_ns, record.sink.time_ns)
        lines += watch.take_lines()
    assert ": 18, learnt from" in lines[0] and changed_to_20(lines[1:]), lines
    assert source.shift == 20


def changed_to_20(lines: list[str]) -> bool:
    """Said once: the check refuted 18, and 20 was learnt afresh."""
    return len(lines) == 1 and ": now 20 (was 18: 18 fits " in lines[0] and "), learnt from " in lines[0]


@pytest.mark.parametrize("engine", ["native", "python"])
def test_the_engine_learns_mid_stream_and_the_check_samples(engine, monkeypatch, check_often):
    """Batches of both engines (the native one's arrive as JSON lines): records right once learnt, and after a
    change of shift right again from the batch where the sample sees it."""
    monkeypatch.setenv("PTC_ENGINE", engine)
    said: list[str] = []
    watched = ShiftWatchingEngine("auto", {}, said.append)
    first = fleet(1000, sources=2, tts_shift=(18, 20))
    later = fleet(check_often * 400, sources=2, tts_shift=(20, 20), start_ns=first[-1][0] + NS_PER_S)
    out: list[Record] = []
    for frames in (first[:500], first[500:], *(later[i : i + 1024] for i in range(0, len(later), 1024))):
        out += list(watched.decode_batch(frames, LINKTYPE_ETHERNET).records)
    assert out[:1000] == expected(first, {source_addr(1): 18, source_addr(2): 20})
    assert all(source_addr(1) in line for line in said[2:]) and changed_to_20(said[2:]), said
    assert out[-4096:] == expected(later, {source_addr(1): 20, source_addr(2): 20})[-4096:]


@pytest.mark.parametrize("engine", ["native", "python"])
def test_the_watch_keeps_ring_blocks_decoded_in_place_where_the_engine_can(engine, monkeypatch):
    """Around the native engine, collect's ring blocks still go to decode_block (no frame objects); around the pure
    engine there is no block path to offer."""
    monkeypatch.setenv("PTC_ENGINE", engine)
    if engine == "native" and not NATIVE:
        pytest.skip("the native engine is not built here")
    watched = ShiftWatchingEngine("auto", {}, lambda line: None)
    assert isinstance(watched, BlockEngine) == (engine == "native")


# ---------------------------------------------------------------- through the command line


@pytest.mark.parametrize("engine", ["native", "python"])
def test_replay_auto_learns_each_source_of_a_mixed_fleet(tmp_path, engine):
    pcap, out = tmp_path / "fleet.pcap", tmp_path / "out.jsonl"
    made = ptc("generate", str(pcap), "-c", "4000", "--sources", str(SOURCES), "--tts-shift", "16,18,20,24")
    assert made.returncode == 0, made.stderr
    done = ptc("replay", str(pcap), "-o", str(out), "--tts-shift", "auto", "-q", env={"PTC_ENGINE": engine})
    assert done.returncode == 0, done.stderr
    lines = shift_lines(done.stderr.decode())
    shifts = true_shifts()
    assert set(lines) == set(shifts)
    for addr, shift in shifts.items():
        assert f"TTS shift of {addr}: {shift}, learnt from " in lines[addr], lines[addr]
    frames = [(capture_ns, frame) for _, capture_ns, frame in read_capture(pcap)]
    assert from_json_lines(out.read_bytes()) == expected(frames, shifts)


def test_auto_per_prefix_in_the_config_and_a_wrong_fixed_shift_warns_once_per_source(tmp_path):
    """Source 1 (shift 16) is learnt; the rest get tts_shift = 18: right for 2 and 6, wrong for the others."""
    pcap, out = tmp_path / "fleet.pcap", tmp_path / "out.jsonl"
    frames = fleet(4 * CHECK_EVERY * SOURCES)  # several checks per source after the warning
    write_pcap(pcap, frames)
    config = tmp_path / "ptc.toml"
    config.write_text('tts_shift = 18\n[tts_shift_by_source]\n"2001:db8:1::/48" = "auto"\n"2001:db8:3::/48" = 24\n')
    done = ptc("--config", str(config), "replay", str(pcap), "-o", str(out), "-q")
    assert done.returncode == 0, done.stderr
    lines = shift_lines(done.stderr.decode())
    assert lines.pop(source_addr(1)).startswith(f"ptc: TTS shift of {source_addr(1)}: 16, learnt from")
    assert '"2001:db8:3::/48" in [tts_shift_by_source], 24 disagrees' in lines.pop(source_addr(3))  # truly 20
    wrong = {addr for addr, shift in true_shifts().items() if shift != 18} - {source_addr(1), source_addr(3)}
    assert set(lines) == wrong  # one line each: once per source, though the check ran on
    for addr in wrong:
        assert lines[addr].startswith(f"Warning: --tts-shift 18 disagrees with the probes of {addr}: ")
    shifts = {**true_shifts(), **{a: 18 for a in wrong}, source_addr(3): 24}
    assert from_json_lines(out.read_bytes()) == expected(frames, shifts)
    check = ptc("config", "check", str(config))
    assert '"2001:db8:1::/48" = "auto"' in check.stdout.decode()


def test_replay_cannot_decide_says_so_and_leaves_times_null(tmp_path):
    pcap, out = tmp_path / "aligned.pcap", tmp_path / "out.jsonl"
    made = ptc("generate", str(pcap), "-c", "200", "--sources", "2", "--hops", "2", "--tts-shift", "24",
               "--interval-us", "1000000")  # fmt: skip
    assert made.returncode == 0, made.stderr
    done = ptc("replay", str(pcap), "-o", str(out), "--tts-shift", "auto", "-q")
    assert done.returncode == 0, done.stderr
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 2 and all("cannot decide from" in line and "hop times null" in line for line in lines)
    records = from_json_lines(out.read_bytes())
    assert len(records) == 200 and all(h.time_ns is None for r in records for h in r.hops)


def test_few_probes_are_judged_when_the_replay_ends(tmp_path):
    pcap, out = tmp_path / "few.pcap", tmp_path / "out.jsonl"
    write_pcap(pcap, fleet(3, sources=1))
    done = ptc("replay", str(pcap), "-o", str(out), "--tts-shift", "auto", "-q")
    assert done.returncode == 0, done.stderr
    assert "cannot decide from 3 probes: too little evidence" in done.stderr.decode()


def test_a_bad_shift_is_a_usage_error(tmp_path):
    done = ptc("replay", "nosuch.pcap", "--tts-shift", "sometimes")
    assert done.returncode == 2 and b"not a TTS shift 0..24 or auto" in done.stderr
    config = tmp_path / "ptc.toml"
    config.write_text('[tts_shift_by_source]\n"2001:db8:1::/48" = "sometimes"\n')
    done = ptc("--config", str(config), "config", "check", str(config))
    assert done.returncode == 2 and b'is not a TTS shift 0..24 or "auto"' in done.stderr


def test_collect_auto_over_a_veth_pair(veth, tmp_path):
    frames = fleet(1600, sources=4, tts_shift=(16, 20))
    out = tmp_path / "out.jsonl"
    collector = Collector("--iface", veth.rx_iface, "--output", str(out), "--tts-shift", "auto")
    collector.wait_for(lambda line: "kernel" in line)
    veth.send([frame for _, frame in frames])
    collector.frames_seen(len(frames))
    assert collector.stop() == 0
    learnt = [line for line in collector.lines if "TTS shift of" in line]
    shifts = true_shifts((16, 20), 4)
    assert len(learnt) == 4, collector.lines
    for addr, shift in shifts.items():
        assert any(f"TTS shift of {addr}: {shift}, learnt from " in line for line in learnt), learnt
    records = without_capture_time(from_json_lines(out.read_bytes()))
    right = without_capture_time(expected(frames, shifts))
    # a source's records decoded before its shift was learnt (in an earlier batch) keep null times
    untimed = without_capture_time(expected(frames, {}))
    assert len(records) == len(right)
    assert all(r in (a, b) for r, a, b in zip(records, right, untimed, strict=True))
    assert sum(r == a for r, a in zip(records, right, strict=True)) >= len(records) - 4 * 64


def test_sources_past_the_bound_are_neither_learnt_nor_kept(monkeypatch):
    """Crafted probes from ever new source addresses cannot grow the watch without bound."""
    monkeypatch.setattr(shift_watch, "MAX_SOURCES", 2)
    said: list[str] = []
    watched = ShiftWatchingEngine("auto", {}, said.append)
    records = watched.decode_batch(fleet(400, sources=4), LINKTYPE_ETHERNET).records
    assert len(watched.watch.sources) == 2 and len(watched._ignored) == 2
    assert sum("learnt from" in line for line in said) == 2
    assert sum("2 sources watched already; newer ones are not (hop times null)" in line for line in said) == 1
    assert all(h.time_ns is None for r in records if r.src.addr not in watched.watch.sources for h in r.hops)
