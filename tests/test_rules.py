"""Flow rules without Kafka: parsing and its one-line errors, matching and precedence, each function's output."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from pt_collector import Decoder
from pt_collector.capture.pcap import read_capture
from pt_collector.cli.main import main
from pt_collector.codec.generate import generate
from pt_collector.codec.record import Hop, Node, Record, histogram_json_decoder, json_decoder
from pt_collector.codec.wire import LINKTYPE_RAW
from pt_collector.kafka.kinds import raw_key, raw_message
from pt_collector.pipeline.functions import RuleEngine
from pt_collector.pipeline.rules import DEFAULT, HistogramSpec, Match, RuleError, Sample, parse_rules

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.fixture(autouse=True)
def no_ptc_environment(monkeypatch):
    for name in [name for name in os.environ if name.startswith("PTC_")]:
        monkeypatch.delenv(name)


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ptc.toml"
    path.write_text(text)
    return path


def rules_of(text: str):
    return parse_rules(tomllib.loads(text)["rules"])


def probe(
    src: str = "2001:db8:1::1",
    session_id: int = 1,
    sequence: int = 1,
    *,
    src_ns: int = 1_000_000_000,
    sink: str | None = "2001:db8:e001::1",
    sink_ns: int | None = None,
    hops: tuple[tuple[int, int | None], ...] = (),
    capture_ns: int | None = None,
    src_if: int = 11,
    dst: str = "fcbb:bb00:1:2::",
    segments: tuple[str, ...] = ("fcbb:bb00:1:1::", "fcbb:bb00:1:2::"),
) -> Record:
    """A record as the decoder makes them; `hops` are (interface id, time or None) in path order."""
    sink_ns = src_ns + 1_000_000 if sink_ns is None else sink_ns
    sink_node = Node(sink, 21, 0, sink_ns) if sink is not None else None
    return Record(
        1, capture_ns if capture_ns is not None else sink_ns + 50_000, session_id, sequence,
        Node(src, src_if, 0, src_ns), sink_node, dst, segments,
        tuple(Hop(if_id, 0, 0, time_ns) for if_id, time_ns in hops),
        sink_ns - src_ns if sink_node is not None else None, 0, 0, 64,
    )  # fmt: skip


def generated(count: int, sources: int = 4, tts_shift: int | None = 18, **options) -> tuple[list, list]:
    """(records, frames) of generated probes (raw IPv6 frames)."""
    decoder = Decoder(tts_shift)
    records, frames = [], []
    for capture_ns, packet in generate(count, sources=sources, **options):
        records.append(decoder.decode(packet, capture_ns, LINKTYPE_RAW))
        frames.append((LINKTYPE_RAW, capture_ns, packet))
    return records, frames


# ---------------------------------------------------------------- the file: parsing and errors

EXAMPLE = """
[[rules]]
name = "lab"
src = ["2001:db8:1::/48", "2001:db8:5::/48"]
sink = "2001:db8:e000::/36"
function = "histogram"
topic = "pt-histograms"
interval_ms = 500
bounds_us = [100, 1000, 10000]
grace_ms = 200

[[rules]]
segment = "fcbb:bb00:2::/48"
session_id = [2, 9]
src_if_id = [11, 12]
function = "sample"
one_in = 10

[[rules]]
dst = "fcbb:bb00:3::/48"
function = "raw"
topic = "pt-raw"

[[rules]]
session_id = 4
function = "drop"
"""


def test_rules_parse_into_their_settings():
    rules = rules_of(EXAMPLE)
    assert [rule.label for rule in rules] == ["rule 1 (lab)", "rule 2", "rule 3", "rule 4"]
    assert [rule.function.name for rule in rules] == ["histogram", "sample", "raw", "drop"]
    assert [rule.topic for rule in rules] == ["pt-histograms", None, "pt-raw", None]
    histogram = rules.rules[0].function
    assert histogram == HistogramSpec(500, (100, 1000, 10000), (100, 1000, 10000), 200)
    assert histogram.bounds_ns == (100_000, 1_000_000, 10_000_000)
    assert rules.rules[1].function == Sample(10)
    assert rules.rules[1].match.session_id == (2, 9) and rules.rules[1].match.src_if_id == {11, 12}
    assert rules.rules[3].match.session_id == (4, 4)
    # the normalised settings are themselves a valid rule, the same one
    again = parse_rules([rule.settings() for rule in rules])
    assert [rule.settings() for rule in again] == [rule.settings() for rule in rules]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("rules = 3\n", "rules: an array of tables, [[rules]]"),
        ("[[rules]]\nsrc = '2001:db8::/32'\n", "rule 1: function: missing one of pass, sample, histogram, drop, raw"),
        ("[[rules]]\nfunction = 'hist'\n", 'rule 1: function: "hist" is not one of pass, sample, histogram'),
        ("[[rules]]\nfunction = 'pass'\nsrcc = '::/0'\n", "rule 1: srcc: unknown key; did you mean src?"),
        ("[[rules]]\nname = 3\nfunction = 'pass'\n", "rule 1: name: 3 is not a string"),
        (
            "[[rules]]\nfunction = 'pass'\n[[rules]]\nname = 'x'\nfunction = 'pass'\nsrc = '2001:db8::1/32'\n",
            "rule 2 (x): src: not an IPv6 prefix: 2001:db8::1/32 has host bits set",
        ),
        ("[[rules]]\nfunction = 'pass'\nsink = []\n", "rule 1: sink: [] is not an IPv6 prefix or a list of them"),
        ("[[rules]]\nfunction = 'pass'\nsession_id = [9, 2]\n", "rule 1: session_id: [9, 2] is an empty range"),
        ("[[rules]]\nfunction = 'pass'\nsession_id = [1, 2, 3]\n", "rule 1: session_id: [1, 2, 3] is not one id"),
        (
            "[[rules]]\nfunction = 'pass'\nsession_id = 65536\n",
            "rule 1: session_id: 65536 is not in the range 0..65535",
        ),
        ("[[rules]]\nfunction = 'pass'\nsrc_if_id = '11'\n", 'rule 1: src_if_id: "11" is not an integer'),
        ("[[rules]]\nfunction = 'pass'\nsrc_if_id = 4096\n", "rule 1: src_if_id: 4096 is not in the range 0..4095"),
        ("[[rules]]\nfunction = 'sample'\n", "rule 1: one_in: missing (sample keeps 1 in one_in probes"),
        ("[[rules]]\nfunction = 'sample'\none_in = 0\n", "rule 1: one_in: 0 is not in the range 1..65536"),
        (
            "[[rules]]\nfunction = 'sample'\none_in = 2\ninterval_ms = 10\n",
            'rule 1: interval_ms: only for function = "histogram", not "sample"',
        ),
        ("[[rules]]\nfunction = 'histogram'\ninterval_ms = 0\n", "rule 1: interval_ms: 0 is not in the range"),
        ("[[rules]]\nfunction = 'histogram'\nbounds_us = [10, 10]\n", "rule 1: bounds_us: [10, 10] is not increasing"),
        ("[[rules]]\nfunction = 'histogram'\nbounds_us = 10\n", "rule 1: bounds_us: 10 is not a list of bucket"),
        ("[[rules]]\nfunction = 'drop'\ntopic = 'a b'\n", "rule 1: topic: a Kafka topic name is 1 to 249"),
        ("[[rules]]\nfunction = 'drop'\ntopic = 5\n", "rule 1: topic: 5 is not a topic name"),
    ],
)
def test_an_invalid_rule_is_one_line_naming_the_rule_and_key(pcaps, tmp_path, text, error):
    config = write(tmp_path, text)
    for args in (["config", "check", config], ["--config", config, "replay", pcaps / "vlan.pcap", "-o", "-"]):
        result = run(*args)
        assert result.exit_code == 2, result.output
        assert result.stdout == ""
        assert result.stderr.splitlines() == [result.stderr.strip()]
        assert result.stderr.startswith(f"Error: {config}: {error}"), result.stderr


def test_config_check_prints_the_rules(tmp_path):
    config = write(tmp_path, "topic = 'pt-probes'\n" + EXAMPLE)
    result = run("config", "check", config)
    assert result.exit_code == 0, result.output
    printed = tomllib.loads(result.stdout)["rules"]
    assert printed == [rule.settings() for rule in rules_of(EXAMPLE)]
    assert printed[0]["src"] == ["2001:db8:1::/48", "2001:db8:5::/48"] and printed[3]["session_id"] == 4
    assert "[[rules]]  # rule 1 (lab)" in result.stdout


def test_the_documented_rules_example_is_valid(tmp_path):
    docs = (DOCS / "rules.md").read_text()
    example = docs.split("```toml\n", 1)[1].split("```", 1)[0]
    config = write(tmp_path, example)
    result = run("config", "check", config)
    assert result.exit_code == 0, result.output
    assert len(tomllib.loads(result.stdout)["rules"]) == len(tomllib.loads(example)["rules"])


# ---------------------------------------------------------------- matching and precedence


@pytest.mark.parametrize(
    ("rule", "matching", "other"),
    [
        ("src = '2001:db8:1::/48'", probe(), probe(src="2001:db8:2::1")),
        ("src = ['2001:db8:7::/48', '2001:db8:1::1']", probe(), probe(src="2001:db8:1::2")),
        ("sink = '2001:db8:e000::/36'", probe(), probe(sink=None)),
        ("dst = 'fcbb:bb00:1::/48'", probe(), probe(dst="fcbb:bb00:2::")),
        ("segment = 'fcbb:bb00:1:1::/64'", probe(), probe(segments=("fcbb:bb00:1:2::",))),
        ("segment = 'fcbb:bb00:9::/48'", probe(dst="fcbb:bb00:9::1"), probe()),  # the destination counts too
        ("session_id = [2, 4]", probe(session_id=4), probe(session_id=5)),
        ("session_id = 2", probe(session_id=2), probe(session_id=1)),
        ("src_if_id = [11, 12]", probe(src_if=12), probe(src_if=13)),
        ("src = '2001:db8:1::/48'\nsession_id = 1", probe(), probe(session_id=2)),  # every key must hold
        ("", probe(), None),  # no key: every probe
    ],
)
def test_each_match_key(rule, matching, other):
    (compiled,) = rules_of(f"[[rules]]\nfunction = 'drop'\n{rule}\n")
    assert compiled.match(matching)
    if other is not None:
        assert not compiled.match(other)


def test_the_first_matching_rule_wins_and_none_is_the_default():
    rules = rules_of(
        "[[rules]]\nname = 'one'\nsession_id = 1\nfunction = 'drop'\n"
        "[[rules]]\nname = 'wide'\nsrc = '2001:db8::/32'\nfunction = 'pass'\ntopic = 'wide'\n"
        "[[rules]]\nname = 'never'\nsession_id = 2\nfunction = 'drop'\n"
    )
    assert rules.match(probe(session_id=1)).name == "one"  # rules 1 and 2 match: 1 wins
    assert rules.match(probe(session_id=2)).name == "wide"  # rules 2 and 3 match: 2 wins
    assert rules.match(probe(src="2001:db9::1", session_id=3)) is DEFAULT
    engine = RuleEngine(rules, "main")
    out = engine.route([probe(session_id=1), probe(session_id=2), probe(src="2001:db9::1", session_id=3)])
    assert [r.session_id for r in out.records["wide"]] == [2] and [r.session_id for r in out.records["main"]] == [3]
    assert [(rule.name, c.probes) for rule, c in engine.rule_counters()] == [
        ("one", 1),
        ("wide", 1),
        ("never", 0),
        ("", 1),
    ]


def test_prefix_matching_remembers_addresses_but_answers_the_same():
    (rule,) = rules_of("[[rules]]\nsrc = '2001:db8:1::/48'\nfunction = 'drop'\n")
    answers = [rule.match(probe(src=f"2001:db8:{n % 3}::1")) for n in range(30)]
    assert answers == [n % 3 == 1 for n in range(30)]


# ---------------------------------------------------------------- the functions


def test_sample_keeps_exactly_one_in_n_of_each_session_and_the_same_ones_every_time():
    records, _ = generated(3000, sources=3)  # 1000 consecutive sequence numbers per session
    rules = rules_of("[[rules]]\nfunction = 'sample'\none_in = 7\n")
    kept = RuleEngine(rules, "main").route(records).records["main"]
    for session in (1, 2, 3):
        sequences = [r.sequence for r in kept if r.session_id == session]
        assert sequences == list(range(7, 1001, 7))  # 1000 // 7 of 1..1000
    again = RuleEngine(rules_of("[[rules]]\nfunction = 'sample'\none_in = 7\n"), "other").route(records[::-1])
    assert sorted(again.records["other"], key=records.index) == kept  # another collector, another order: the same
    engine = RuleEngine(rules, "main")
    engine.route(records)
    counters = engine.counters[1]
    assert (counters.probes, counters.records, counters.sampled_out) == (3000, 3 * 142, 3000 - 3 * 142)


def test_sample_over_the_sequence_wrap():
    rules = rules_of("[[rules]]\nfunction = 'sample'\none_in = 4\n")
    sequences = [*range(65530, 65536), *range(0, 6)]
    kept = RuleEngine(rules, "t").route([probe(sequence=s) for s in sequences]).records["t"]
    assert [r.sequence for r in kept] == [65532, 0, 4]


def test_drop_counts_and_emits_nothing():
    records, frames = generated(100)
    engine = RuleEngine(rules_of("[[rules]]\nfunction = 'drop'\n"), "main")
    assert len(engine.route(records, frames)) == 0 and len(engine.flush()) == 0
    assert engine.counters[1].dropped == engine.counters[1].probes == 100


def test_raw_emits_each_frame_as_captured():
    records, frames = generated(40)
    engine = RuleEngine(rules_of("[[rules]]\nsession_id = [1, 2]\nfunction = 'raw'\ntopic = 'frames'\n"), "main")
    assert engine.wants_frames
    out = engine.route(records, frames)
    assert out.frames["frames"] == [f for r, f in zip(records, frames, strict=True) if r.session_id in (1, 2)]
    assert len(out.records["main"]) == 20
    # given no frames (a sink that takes records only), a raw rule counts what it could not emit
    engine.route(records)
    assert (engine.counters[1].frames, engine.counters[1].no_frame) == (20, 20)


def test_raw_messages_follow_fastcapa():
    message = raw_message((1, 1_643_211_426_125_601_234, b"\x01\x02frame"))
    assert message.key == (1_643_211_426_125_601).to_bytes(8, "big") == raw_key(1_643_211_426_125_601_999)
    assert message.value == b"\x01\x02frame" and message.count == 1
    assert message.headers == [("ptc-kind", b"raw"), ("ptc-linktype", b"1")]


# ---------------------------------------------------------------- histograms


def expected_delays(delays: list[int], bounds: tuple[int, ...]) -> dict:
    """A histogram worked out the plain way: bucket i holds bounds[i-1] < d <= bounds[i]."""
    buckets = [0] * (len(bounds) + 1)
    for d in delays:
        buckets[next((i for i, b in enumerate(bounds) if d <= b), len(bounds))] += 1
    return {
        "count": len(delays), "min_ns": min(delays, default=None), "max_ns": max(delays, default=None),
        "sum_ns": sum(delays), "buckets": tuple(buckets),
    }  # fmt: skip


def as_dict(delays) -> dict:
    return {k: getattr(delays, k) for k in ("count", "min_ns", "max_ns", "sum_ns", "buckets")}


def test_histogram_counts_every_probe_of_its_path_and_interval_with_exact_delays():
    records, _ = generated(2000, sources=4)  # a probe every 1 ms, round-robin: 2 to 3 per path and 10 ms
    rules = rules_of("[[rules]]\nfunction = 'histogram'\ninterval_ms = 10\nbounds_us = [12000, 15000, 18000]\n")
    engine = RuleEngine(rules, "h")
    histograms = engine.route(records[:1000]).histograms["h"] + engine.route(records[1000:]).histograms["h"]
    histograms += engine.flush().histograms["h"]
    interval = 10_000_000
    expected: dict = {}
    for r in records:
        key = (r.src.addr, r.sink.addr, tuple(h.if_id for h in r.hops), r.src.time_ns // interval * interval)
        expected.setdefault(key, []).append(r)
    assert len(histograms) == len(expected) == engine.counters[1].histograms
    assert sum(h.count for h in histograms) == 2000
    for h in histograms:
        assert h.start_ns % interval == 0 and h.interval_ns == interval and h.rule == "1"
        probes = expected[(h.src.addr, h.sink.addr, h.hop_if_ids, h.start_ns)]
        assert h.count == len(probes) == sum(h.e2e.buckets) and h.loss == 0
        assert as_dict(h.e2e) == expected_delays([r.e2e_ns for r in probes], (12_000_000, 15_000_000, 18_000_000))
        assert len(h.hop_delays) == len(h.hop_if_ids) + 1 == 6
        for i, delays in enumerate(h.hop_delays):  # source -> midpoint 1, ..., midpoint 5 -> sink
            times = [[r.src.time_ns, *(hop.time_ns for hop in r.hops), r.sink.time_ns] for r in probes]
            assert as_dict(delays) == expected_delays([t[i + 1] - t[i] for t in times], h.hop_bounds_ns)


def test_histogram_delays_counted_in_parts_add_up_the_same(monkeypatch):
    records, _ = generated(600, sources=2)
    rules = rules_of("[[rules]]\nfunction = 'histogram'\ninterval_ms = 200\n")

    def histograms() -> list:
        engine = RuleEngine(rules, "h")
        return engine.route(records).histograms["h"] + engine.flush().histograms["h"]

    whole = histograms()
    monkeypatch.setattr(
        "pt_collector.pipeline.path_histogram.FOLD_AT", 7
    )  # windows of 100 probes: folded 14 times each
    assert histograms() == whole and len(whole) == 6 and sum(h.count for h in whole) == 600


def test_histogram_hops_without_times_and_bare_probes():
    rules = rules_of("[[rules]]\nfunction = 'histogram'\nbounds_us = [1000]\n")
    engine = RuleEngine(rules, "h")
    hops = ((7, None), (8, 1_000_700_000))  # the first midpoint's time unknown, the second's known
    engine.route([probe(hops=hops), probe(sequence=2, sink=None), probe(sequence=3, sink=None)])
    timed, bare = engine.flush().histograms["h"]
    assert timed.hop_if_ids == (7, 8) and timed.count == 1 and timed.e2e.sum_ns == 1_000_000
    assert [d.count for d in timed.hop_delays] == [0, 0, 1]  # only midpoint 2 -> sink has both ends
    assert timed.hop_delays[2].sum_ns == 300_000
    assert bare.sink is None and bare.count == 2 and bare.e2e.count == 0 and bare.e2e.min_ns is None


def test_histogram_loss_from_sequence_gaps_per_session():
    rules = rules_of("[[rules]]\nfunction = 'histogram'\ninterval_ms = 10\n")
    engine = RuleEngine(rules, "h")
    ms = 1_000_000
    sent = [(1, 1, 0), (1, 2, 1), (1, 5, 2), (2, 9, 3), (2, 12, 4), (1, 6, 11), (1, 4, 12), (1, 9, 13)]
    # session 1: 3 and 4 missing before 5 (4 comes late: reordered), 7 and 8 before 9; session 2: 10, 11
    out = engine.route([probe(session_id=s, sequence=q, src_ns=1_000_000_000 + t * ms) for s, q, t in sent])
    (first,) = out.histograms["h"]  # closed by the probe at 11 ms
    assert (first.start_ns, first.count, first.loss) == (1_000_000_000, 5, 4)
    (second,) = engine.flush().histograms["h"]
    assert (second.start_ns, second.count, second.loss) == (1_010_000_000, 3, 2)
    # sequence numbers wrap at 2**16: 65534, 65535, then 1 means 0 was lost
    engine.route([probe(session_id=3, sequence=q, src_ns=2 * 10**9 + i) for i, q in enumerate((65534, 65535, 1))])
    (wrapped,) = engine.flush().histograms["h"]
    assert (wrapped.count, wrapped.loss) == (3, 1)


def test_histogram_windows_close_by_a_later_probe_by_the_clock_or_at_flush():
    rules = rules_of("[[rules]]\nfunction = 'histogram'\ninterval_ms = 100\ngrace_ms = 50\n")
    engine = RuleEngine(rules, "h")
    ms, t0 = 1_000_000, 10**12  # source clock; the collector sees each probe 2 ms later (capture_ns)
    a = {"src": "2001:db8:1::1"}
    b = {"src": "2001:db8:2::1", "session_id": 2}

    def at(t: int, n: int, **path) -> Record:
        return probe(sequence=n, src_ns=t0 + t * ms, sink_ns=t0 + t * ms + ms, capture_ns=t0 + t * ms + 2 * ms, **path)

    assert engine.route([at(10, 1, **a), at(20, 1, **b), at(30, 2, **a)]).histograms["h"] == []
    # path a's next window: its first closes; path b's window waits
    (closed,) = engine.route([at(120, 3, **a)]).histograms["h"]
    assert (closed.src.addr, closed.start_ns, closed.count) == ("2001:db8:1::1", t0, 2)
    # the clock: b's window [0, 100) ms closes at 100 + 2 (its lag) + 50 (grace) ms
    assert engine.tick(t0 + 151 * ms).histograms["h"] == []
    (closed,) = engine.tick(t0 + 152 * ms).histograms["h"]
    assert (closed.src.addr, closed.count) == ("2001:db8:2::1", 1)
    # a probe of a window already emitted is late: counted, left out
    assert engine.route([at(90, 2, **b)]).histograms["h"] == []
    counters = engine.rule_counters()[0][1]
    assert counters.late == 1 and counters.probes == 5
    (closed,) = engine.flush().histograms["h"]
    assert (closed.start_ns, closed.count) == (t0 + 100 * ms, 1)
    assert engine.flush().histograms["h"] == []


def test_histograms_go_to_the_rules_topic_with_the_rule_name():
    rules = rules_of(
        "[[rules]]\nname = 'fast'\nsession_id = 1\nfunction = 'histogram'\ntopic = 'h1'\n"
        "[[rules]]\nfunction = 'histogram'\ninterval_ms = 5000\n"
    )
    engine = RuleEngine(rules, "main")
    assert engine.outputs() == [("main", "records"), ("h1", "histograms"), ("main", "histograms")]
    engine.route([probe(session_id=1), probe(src="2001:db8:2::1", session_id=2)])
    out = engine.flush()
    assert [(h.rule, h.interval_ns) for h in out.histograms["h1"]] == [("fast", 1_000_000_000)]
    assert [(h.rule, h.interval_ns) for h in out.histograms["main"]] == [("2", 5_000_000_000)]


# ---------------------------------------------------------------- the command line, without Kafka

CLI_RULES = """
tts_shift = 18
[[rules]]
name = "hist"
src = "2001:db8:1::/48"
function = "histogram"
topic = "pt-hist"
interval_ms = 10
[[rules]]
session_id = 2
function = "sample"
one_in = 2
[[rules]]
segment = "fcbb:bb00:3::/48"
function = "raw"
topic = "pt-raw"
[[rules]]
session_id = [1, 4]
function = "drop"
"""


def test_replay_to_a_file_applies_the_rules(pcaps, tmp_path):
    config = write(tmp_path, CLI_RULES)
    result = run("--config", config, "replay", pcaps / "encap.pcap", "-o", "-")
    assert result.exit_code == 0, result.output
    lines = result.stdout_bytes.splitlines()
    kinds = [line.startswith(b'{"kind":"histogram",') for line in lines]
    records = [json_decoder.decode(line) for line, kind in zip(lines, kinds, strict=True) if not kind]
    histograms = [histogram_json_decoder.decode(line) for line, kind in zip(lines, kinds, strict=True) if kind]
    assert [(r.session_id, r.sequence) for r in records] == [(2, 2), (2, 4), (2, 6), (2, 8), (2, 10)]
    assert [h.count for h in histograms] == [3, 2, 3, 2] and {h.src.addr for h in histograms} == {"2001:db8:1::1"}
    assert "  rule 4          drop: 10 probes: 10 dropped" in result.stderr
    assert re.search(r"^  pt-raw raw +10 not written \(--output writes JSON lines\)$", result.stderr, re.MULTILINE)


def test_rules_test_tells_each_probe_and_what_would_be_emitted(pcaps, tmp_path):
    config = write(tmp_path, CLI_RULES)
    result = run("rules", "test", "--config", config, pcaps / "encap.pcap")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "1", "2001:db8:1::1", "session", "1", "seq", "1", "rule", "1", "(hist):", "into", "the", "10", "ms",
        "window", "from", "2022-01-26T15:37:06.000Z", "->", "pt-hist",
    ]  # fmt: skip
    assert lines[1].endswith("2001:db8:2::1 session 2 seq 1  rule 2: sampled out (1 in 2)")
    assert lines[2].endswith("rule 3: raw frame of 230 bytes, key 0005d67df956b763 -> pt-raw")
    assert lines[3].endswith("2001:db8:4::1 session 4 seq 1  rule 4: dropped")
    assert lines[5].endswith("rule 2: sequence % 2 == 0: record -> pt-probes")
    emitted = [line for line in lines if "emits histogram -> pt-hist" in line]
    assert len(emitted) == 4 and "2001:db8:1::1 -> 2001:db8:e001::1 via [3472 3287 3129 259 1045]" in emitted[0]
    assert sum(int(line.split(": ")[-1].split(" probes")[0]) for line in emitted) == 10
    assert lines[-1] == f"40 frames: 40 probes, 0 not PT, 0 malformed; 4 rules from {config}"
    # the frame's key is its capture time in us
    (_, capture_ns, _), *_ = [f for i, f in enumerate(read_capture(pcaps / "encap.pcap")) if i == 2]
    assert raw_key(capture_ns).hex() == "0005d67df956b763"


def test_rules_test_summary_is_a_table_per_rule(pcaps, tmp_path):
    config = write(tmp_path, CLI_RULES)
    result = run("--config", config, "rules", "test", pcaps / "encap.pcap", "--summary")
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line.split("│")[2:-1] for line in result.stdout.splitlines() if "│" in line}
    counts = {rule: [cell.strip() for cell in cells] for rule, cells in rows.items()}
    assert counts == {
        "rule 1 (hist)": ["histogram 10 ms -> pt-hist", "10", "0", "0", "0", "4", "0", "0"],
        "rule 2": ["sample 1/2 -> pt-probes", "10", "5", "5", "0", "0", "0", "0"],
        "rule 3": ["raw -> pt-raw", "10", "0", "0", "0", "0", "0", "10"],
        "rule 4": ["drop", "10", "0", "0", "10", "0", "0", "0"],
        "default": ["pass -> pt-probes", "0", "0", "0", "0", "0", "0", "0"],
    }


def test_rules_test_needs_a_config_file(pcaps):
    result = run("rules", "test", pcaps / "encap.pcap")
    assert result.exit_code == 2 and "no rules to test: give --config FILE" in result.stderr


def test_no_rules_replays_as_before(pcaps, tmp_path):
    config = write(tmp_path, "tts_shift = 18\n")
    with_file = run("--config", config, "replay", pcaps / "encap.pcap", "-o", "-", "-q")
    plain = run("replay", pcaps / "encap.pcap", "-o", "-", "-q", "--tts-shift", "18")
    assert with_file.stdout_bytes == plain.stdout_bytes and len(plain.stdout_bytes.splitlines()) == 40


def test_rule_error_is_a_value_error():
    with pytest.raises(RuleError, match="rule 1: function: missing"):
        parse_rules([{}])
    assert Match()(probe(sink=None))
