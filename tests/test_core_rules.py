"""Flow rules matched in the native engine's core against the pure-Python rules on Record objects, byte for byte.

The same frames and rules through both engines (pipeline/core_rules.py, native/src/rules.rs): every output
(records per topic in input order and per source node as the Kafka messages are cut, histogram records, raw
frames) must be the same bytes, and every rule's counters the same numbers. Inputs: every bundled capture,
realistic traffic with hostile mutations among it, under rule sets that use every match key and function.
Skipped, saying so, when the module is not built.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import asdict
from itertools import groupby
from operator import itemgetter
from pathlib import Path

import pytest
from click.testing import CliRunner
from native_diff import SHIFTS, mutations, realistic

from pt_collector.capture.pcap import PcapWriter, read_capture
from pt_collector.cli.main import main
from pt_collector.codec.decode import Decoder
from pt_collector.codec.record import EncodedRecords, Record, json_encoder, msgpack_encoder
from pt_collector.kafka.message import BySource
from pt_collector.pipeline import core_rules, functions
from pt_collector.pipeline.engine import NativeEngine, NativeMsgpackRecords, PythonEngine
from pt_collector.pipeline.functions import HISTOGRAMS, RECORDS, RuleEngine
from pt_collector.pipeline.rules import parse_rules

if os.environ.get("PTC_REQUIRE_NATIVE"):
    import pt_collector._native  # noqa: F401
else:
    pytest.importorskip("pt_collector._native", reason="pt_collector._native is not built (no Rust toolchain)")

MAIN = "pt-probes"
HIST = {"function": "histogram", "topic": "hist", "interval_ms": 10, "bounds_us": [12000, 15000, 18000]}

RULESETS = {
    "every key": [
        {"name": "lab", "src": "2001:db8:1::/48", **HIST},
        {"name": "core-raw", "segment": ["fcbb:bb00:2:2::/64", "fcbb:bb00:3::/48"], "function": "raw", "topic": "raw"},
        {"sink": "2001:db8:e000::/36", "session_id": [3, 6], "function": "sample", "one_in": 3},
        {"dst": "fcbb:bb00:5:3::", "function": "drop"},
        {"src_if_id": [551, 483, 3231, 0], "function": "pass", "topic": "other"},
        {"session_id": 9, "function": "sample", "one_in": 2, "topic": "other"},
        {"src": ["2001:db8:a::/48", "2001:db8:b::/48"], "sink": "::/0", **HIST},
        {"dst": ["fc00::/7"], "src": "2001:db8::/32", "function": "sample", "one_in": 7, "topic": "seven"},
    ],
    "catch-all sample": [{"function": "sample", "one_in": 10}],
    "sample every 65536th, bare probes apart": [
        {"sink": "::/0", "function": "pass", "topic": "sunk"},
        {"function": "sample", "one_in": 65536, "topic": "rare"},
    ],
    "drop some, the default takes the rest": [{"src": "2001:db8::/32", "session_id": [0, 5], "function": "drop"}],
}


def encoded(records, fmt: str) -> bytes:
    if isinstance(records, EncodedRecords) and fmt == "json":
        return bytes(records.json_lines)
    if isinstance(records, NativeMsgpackRecords):
        return records.data
    if fmt == "json":
        return json_encoder.encode_lines(list(records))
    return b"".join(msgpack_encoder.encode(r) for r in records)


def per_source(records, fmt: str) -> list[tuple[str, bytes, int]]:
    """As the Kafka sink takes them: per source node, first seen first."""
    if isinstance(records, BySource):
        return [(g.source, bytes(g.view()), len(g)) for g in records.by_source().groups]
    by: dict[str, list[Record]] = {}
    for record in records:
        by.setdefault(record.src.addr, []).append(record)
    return [(src, encoded(rs, fmt), len(rs)) for src, rs in by.items()]


def route_all(
    engine, rule_set: list[dict], frames: list, fmt: str, batch: int, as_records: int = 0
) -> tuple[dict, dict, int]:
    """Every frame through the engine and the rules, a batch at a time: each output's bytes, the counters, and how
    many batches the core routed. With `as_records`, every so many batches go to the rules as Record objects
    (as a batch re-timed by --tts-shift auto, or a -c slice, does): matched in Python, the windows still the core's."""
    rules = RuleEngine(parse_rules(rule_set), MAIN)
    if isinstance(engine, NativeEngine):
        engine.match_rules(rules.in_core())
    outputs: dict = defaultdict(list)
    routed = calls = 0
    for linktype, run in groupby(frames, key=itemgetter(0)):
        run = list(run)
        for i in range(0, len(run), batch):
            chunk = [(ns, data) for _, ns, data in run[i : i + batch]]
            decoded = engine.decode_batch(chunk, linktype, keep_frames=rules.wants_frames)
            calls += 1
            records = list(decoded.records) if as_records and calls % as_records == 0 else decoded.records
            emitted = rules.route(records, decoded.frames)
            for topic, kind, items in emitted.outputs():
                if kind == RECORDS:
                    routed += not isinstance(items, list)  # the core's outputs, still encoded
                    outputs[(topic, kind)].append((encoded(items, fmt), per_source(items, fmt)))
                elif kind == HISTOGRAMS:
                    outputs[(topic, kind)].append(json_encoder.encode_lines(items))
                else:
                    outputs[(topic, kind)].append(list(items))
    for topic, kind, items in rules.flush().outputs():
        outputs[(topic, kind)].append(json_encoder.encode_lines(items))
    counters = {rule.index: asdict(c) for rule, c in rules.rule_counters()}
    return dict(outputs), counters, routed


def assert_same(
    frames: list,
    rule_set: list[dict],
    tts_shift: int | None = 18,
    batch: int = 1024,
    as_records: int = 0,
    shifts: dict[str, int] | None = None,
) -> dict:
    for fmt in ("json", "msgpack"):
        python = PythonEngine(Decoder(tts_shift, shifts))
        expected, expected_counts, _ = route_all(python, rule_set, frames, fmt, batch)
        native = NativeEngine(tts_shift, shifts, fmt=fmt)  # type: ignore[arg-type]
        got, counts, routed = route_all(native, rule_set, frames, fmt, batch, as_records)
        assert counts == expected_counts, fmt
        assert got.keys() == expected.keys(), fmt
        for output in expected:
            assert got[output] == expected[output], (fmt, output)
        if any(kind == RECORDS for _, kind in got):
            assert routed, "the core routed no batch: the comparison tested the Python path twice"
    return expected_counts


def probes_matched(counts: dict) -> int:
    return sum(c["probes"] for c in counts.values())


@pytest.mark.parametrize("name", RULESETS)
def test_every_bundled_capture(pcaps: Path, name: str):
    matched = 0
    for path in sorted(p for p in pcaps.iterdir() if p.suffix in (".pcap", ".pcapng")):
        matched += probes_matched(assert_same(list(read_capture(path)), RULESETS[name]))
    assert matched > 100


@pytest.mark.parametrize("name", RULESETS)
def test_realistic_traffic_with_mutations_among_it(name: str):
    good = realistic(3000, sources=16)
    frames = [f for pair in zip(good, mutations(good, 3000), strict=True) for f in pair]
    counts = assert_same(frames, RULESETS[name], batch=700)
    assert probes_matched(counts) > 3000
    if name == "every key":  # every rule matched something: each key was tried on real values
        assert all(c["probes"] for c in counts.values()), counts


def test_batches_that_come_as_records_among_routed_ones():
    good = realistic(3000, sources=16)
    assert_same(good + list(mutations(good, 1000, seed=5)), RULESETS["every key"], batch=300, as_records=3)


@pytest.mark.parametrize(("tts_shift", "shifts"), SHIFTS)
def test_every_tts_setting(tts_shift: int | None, shifts: dict[str, int]):
    """Hop times (and so the histograms' hop delays) as each TTS setting makes them, per-source shifts included."""
    good = realistic(1500, sources=16, seed=4)
    assert_same(good + list(mutations(good, 500, seed=9)), RULESETS["every key"], tts_shift, shifts=shifts)


def test_without_shift_and_in_small_batches():
    good = realistic(500, sources=16)
    assert_same(good + list(mutations(good, 500, seed=3)), RULESETS["every key"], tts_shift=None, batch=37)


def test_the_core_routes_a_batch_only_for_the_rules_it_was_given():
    frames = realistic(50, sources=4)
    engine = NativeEngine(18)
    rules, others = (RuleEngine(parse_rules(RULESETS[name]), MAIN) for name in ("catch-all sample", "every key"))
    engine.match_rules(rules.in_core())
    decoded = engine.decode_batch([(ns, f) for _, ns, f in frames], 1)
    assert decoded.records.batch.rules_id == rules.native_rules.id
    assert others.route(decoded.records).records  # other rules: matched in Python on the records read back
    engine.match_rules(None)
    assert engine.decode_batch([(ns, f) for _, ns, f in frames], 1).records.batch.rules_id == 0


CONFIG = """
tts_shift = 18

[[rules]]
name = "lab"
src = "2001:db8:1::/48"
function = "histogram"
topic = "pt-hist"
interval_ms = 10

[[rules]]
session_id = [2, 3]
function = "sample"
one_in = 3

[[rules]]
src = "2001:db8:4::/48"
function = "drop"

[[rules]]
function = "pass"
topic = "pt-other"
"""


def test_replay_to_a_file_is_the_same_with_either_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """End to end: `ptc replay --output` through the rules writes the same lines and says the same summary.

    (In another order: the native engine reads a capture 4,096 frames at a time, the pure one 1,024, and a batch's
    outputs are written topic after topic, histograms as their windows close by the batch's clock.)"""
    capture = tmp_path / "probes.pcap"
    good = realistic(2000, sources=6)
    with capture.open("wb") as stream:
        writer = PcapWriter(stream, 1)  # Ethernet: a mutation's other link type is not kept
        for _, ns, frame in good + list(mutations(good, 500)):
            writer.write(ns, frame)
    config = tmp_path / "ptc.toml"
    config.write_text(CONFIG)
    routed = []
    monkeypatch.setattr(functions, "routed_batch", lambda *a: routed.append(core_rules.routed_batch(*a)) or routed[-1])
    results = {}
    for engine in ("python", "native"):
        monkeypatch.setenv("PTC_ENGINE", engine)
        out = tmp_path / f"{engine}.jsonl"
        result = CliRunner().invoke(main, ["--config", str(config), "replay", str(capture), "--output", str(out)])
        assert result.exit_code == 0, result.output
        summary = result.output[result.output.index("rules (first match wins)") :]
        results[engine] = (sorted(out.read_bytes().splitlines()), summary.split("outputs")[0])
    assert results["native"] == results["python"]
    assert any(batch is not None for batch in routed), "the native replay's core routed no batch"
    lines = results["native"][0]
    assert sum(line.startswith(b'{"kind":"histogram"') for line in lines) > 10
    assert len(lines) > 1000


def test_capture_times_past_a_signed_64_bit_integer(pcaps: Path):
    """A library caller's capture times up to 2**64 - 1: windows and lags as Python's integers make them."""
    frames = [(link, 2**64 - 1 - 7 * i, f) for i, (link, _, f) in enumerate(read_capture(pcaps / "bare.pcap"))]
    frames += [(link, 2**63 + 13 * i, f) for i, (link, _, f) in enumerate(read_capture(pcaps / "encap.pcap"))]
    hist = [{"function": "histogram", "interval_ms": 1, "grace_ms": 0}]
    assert probes_matched(assert_same(frames, hist)) > 10
