"""Flow rules into the real broker: every function's output read back, and which rule wins.

One replay of a generated capture (6 sources, 400 probes each) through five
rules, each to its own topic; the tests read each topic back and check it
against the capture decoded on its own.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from click.testing import CliRunner
from test_kafka_delivery import new_topic
from test_rules import probe, rules_of

from pt_collector import Decoder
from pt_collector.capture.pcap import read_capture
from pt_collector.cli.main import main
from pt_collector.codec.record import HISTOGRAM_SCHEMA_VERSION, DelayHistogram, PathHistogram, PathNode, Record
from pt_collector.kafka.client import Cluster, ProducerSettings
from pt_collector.kafka.kinds import HistogramBatcher, decode_any_message
from pt_collector.kafka.message import MessageError, build_message
from pt_collector.pipeline.batch import Batcher
from pt_collector.pipeline.functions import RuleEngine
from pt_collector.pipeline.routing import RoutedSink, open_kafka_routes
from pt_collector.pipeline.sinks import ListSink

try:  # also runs with --noconftest; kafka_fixture shares one broker with the conftest.py import
    from kafka_fixture import kafka_broker
except ImportError:  # tests/ is a package
    from tests.kafka_fixture import kafka_broker  # noqa: F401

PER_SOURCE = 400
INTERVAL_NS = 50_000_000
BOUNDS_NS = (12_000_000, 15_000_000, 18_000_000)


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def read_messages(bootstrap: str, topic: str, count: int, timeout_s: float = 60.0) -> list:
    """The topic's messages from the start: `count` of them, and then any more that come within half a second."""

    async def read() -> list:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False
        )
        await consumer.start()
        try:
            messages: list = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            while len(messages) < count and loop.time() < deadline:
                for batch in (await consumer.getmany(timeout_ms=1000)).values():
                    messages += batch
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                messages += batch
            return messages
        finally:
            await consumer.stop()

    return asyncio.run(read())


class Routed:
    """The replay and what it should have produced."""

    def __init__(self, bootstrap: str, tmp: Path) -> None:
        self.bootstrap = bootstrap
        self.capture = tmp / "probes.pcap"
        assert run("generate", self.capture, "--count", 6 * PER_SOURCE, "--sources", 6).exit_code == 0
        self.frames = list(read_capture(self.capture))
        decoder = Decoder(18)
        self.records: list[Record] = [decoder.decode(f, t, link) for link, t, f in self.frames]
        self.main, self.hist, self.raw, self.rest = (new_topic(bootstrap) for _ in range(4))
        config = tmp / "ptc.toml"
        config.write_text(f"""
tts_shift = 18
[[rules]]
name = "hist"
src = "2001:db8:1::/48"
function = "histogram"
topic = "{self.hist}"
interval_ms = {INTERVAL_NS // 1_000_000}
bounds_us = {[b // 1000 for b in BOUNDS_NS]}
[[rules]]
name = "sample"
src = "2001:db8:2::/48"
function = "sample"
one_in = 3
[[rules]]
name = "raw"
segment = "fcbb:bb00:3::/48"
function = "raw"
topic = "{self.raw}"
[[rules]]
name = "drop"
session_id = [1, 4]
function = "drop"
[[rules]]
name = "rest"
function = "pass"
topic = "{self.rest}"
""")
        self.result = run(
            "--config", config, "replay", self.capture, "--brokers", bootstrap, "--topic", self.main,
            "--format", "msgpack", "--batch-size", 50, "--linger-ms", 5,
        )  # fmt: skip

    def of_source(self, n: int) -> list[Record]:
        return [r for r in self.records if r.src.addr == f"2001:db8:{n}::1"]

    @property
    def windows(self) -> int:
        """Intervals with probes of source 1."""
        return len({r.src.time_ns // INTERVAL_NS for r in self.of_source(1)})


@pytest.fixture(scope="module")
def routed(kafka_broker, tmp_path_factory) -> Routed:
    return Routed(kafka_broker, tmp_path_factory.mktemp("routed"))


def test_the_replay_succeeds_and_says_what_each_rule_did(routed):
    assert routed.result.exit_code == 0, routed.result.output
    err = routed.result.stderr
    for line in (
        "rule 1 (hist)   histogram 50 ms -> {hist}: 400 probes: {windows} histograms, 0 late",
        "rule 2 (sample) sample 1/3 -> {main}: 400 probes: 133 records, 267 sampled out",
        "rule 3 (raw)    raw -> {raw}: 400 probes: 400 frames",
        "rule 4 (drop)   drop: 400 probes: 400 dropped",
        "rule 5 (rest)   pass -> {rest}: 800 probes: 800 records",
        "default         pass -> {main}: 0 probes: 0 records",
    ):
        assert "  " + line.format(windows=routed.windows, **vars(routed)) + "\n" in err
    outputs = ((routed.main, "records", 133), (routed.hist, "histograms", routed.windows), (routed.raw, "raw", 400))
    for topic, kind, n in outputs:
        delivered = rf"{n:,} in \d+ messages, {n:,} acknowledged, 0 dropped, 0 failed"
        assert re.search(rf"^  {topic} {kind} +{delivered}$", err, re.MULTILINE), err


def test_histogram_counts_equal_the_probes_of_each_interval(routed):
    messages = read_messages(routed.bootstrap, routed.hist, 1)
    histograms = []
    for message in messages:
        headers = dict(message.headers)
        assert headers["ptc-kind"] == b"histogram" and headers["ptc-format"] == b"msgpack"
        assert headers["ptc-schema"] == str(HISTOGRAM_SCHEMA_VERSION).encode()
        assert message.key == b"2001:db8:1::1"
        histograms += decode_any_message(message.value, message.headers)
    windows: dict[int, list[Record]] = {}
    for record in routed.of_source(1):
        windows.setdefault(record.src.time_ns - record.src.time_ns % INTERVAL_NS, []).append(record)
    assert [h.start_ns for h in histograms] == sorted(windows)  # one per interval, in order
    for h in histograms:
        probes = windows[h.start_ns]
        assert h.count == len(probes) == h.e2e.count == sum(h.e2e.buckets), h.start_ns
        assert h.e2e.sum_ns == sum(r.e2e_ns for r in probes)
        assert (h.e2e.min_ns, h.e2e.max_ns) == (min(r.e2e_ns for r in probes), max(r.e2e_ns for r in probes))
        assert h.bounds_ns == BOUNDS_NS and h.loss == 0 and h.rule == "hist"
        assert h.hop_if_ids == tuple(hop.if_id for hop in probes[0].hops)
        assert all(d.count == len(probes) for d in h.hop_delays)  # shift 18: every midpoint's time is known
    assert sum(h.count for h in histograms) == PER_SOURCE


def test_sample_keeps_exactly_one_in_n(routed):
    records = [
        r for m in read_messages(routed.bootstrap, routed.main, 1) for r in decode_any_message(m.value, m.headers)
    ]
    assert {r.src.addr for r in records} == {"2001:db8:2::1"}
    assert [r.sequence for r in records] == list(range(3, PER_SOURCE + 1, 3))  # 1 in 3 of 1..400
    assert records == [r for r in routed.of_source(2) if r.sequence % 3 == 0]  # the records themselves, unchanged


def test_raw_messages_carry_the_exact_frames_and_fastcapas_key(routed):
    messages = read_messages(routed.bootstrap, routed.raw, PER_SOURCE)
    expected = [(t, f) for (_, t, f), r in zip(routed.frames, routed.records, strict=True) if r.session_id == 3]
    assert len(messages) == len(expected) == PER_SOURCE
    for message, (capture_ns, frame) in zip(messages, expected, strict=True):
        assert message.value == frame
        assert len(message.key) == 8 and int.from_bytes(message.key, "big") == capture_ns // 1000
        assert dict(message.headers) == {"ptc-kind": b"raw", "ptc-linktype": b"1"}
        with pytest.raises(MessageError, match="a ptc-kind raw message, not records"):
            decode_any_message(message.value, message.headers)


def test_the_first_matching_rule_wins(routed):
    """Source 1 matches rules 1, 4 and 5, source 2 rules 2 and 5, source 4 rules 4 and 5: the first decides."""
    records = [
        r for m in read_messages(routed.bootstrap, routed.rest, 1) for r in decode_any_message(m.value, m.headers)
    ]
    assert sorted(records, key=routed.records.index) == [r for r in routed.records if r.session_id in (5, 6)]
    assert len(records) == 2 * PER_SOURCE


def test_consume_prints_histograms(routed):
    n = routed.windows
    reading = ("--from-beginning", "--max", n, "--timeout", 30)
    result = run("consume", "--brokers", routed.bootstrap, "--topic", routed.hist, *reading)
    assert result.exit_code == 0, result.output
    lines = result.stdout_bytes.splitlines()
    assert len(lines) == n and all(line.startswith(b'{"kind":"histogram","v":1,"rule":"hist",') for line in lines)


# ---------------------------------------------------------------- histogram messages, without a broker


def histogram(src: str, start_ns: int) -> PathHistogram:
    delays = DelayHistogram(1, 5, 5, 5, (1, 0))
    return PathHistogram(
        1, "r", start_ns, 10, PathNode(src), None, (7,), 1, 0, (10,), delays, (10,), (delays, delays)
    )  # fmt: skip


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_histogram_messages_are_probe_batches_with_a_kind_header(fmt):
    batcher = HistogramBatcher(Batcher(fmt, 2, 10**6, 1.0))
    sent = [histogram("2001:db8:1::1", n) for n in range(3)] + [histogram("2001:db8:2::1", 9)]
    messages = batcher.add(sent, now=0.0) + batcher.drain()
    assert [(m.key, m.count) for m in messages] == [(b"2001:db8:1::1", 2), (b"2001:db8:1::1", 1), (b"2001:db8:2::1", 1)]
    first = messages[0]
    assert first.headers == [
        ("ptc-schema", b"1"), ("ptc-format", fmt.encode()), ("ptc-count", b"2"), ("ptc-kind", b"histogram"),
    ]  # fmt: skip
    assert [h for m in messages for h in decode_any_message(m.value, m.headers)] == sent
    with pytest.raises(MessageError, match="ptc-count says 2 records, the value holds 1"):
        decode_any_message(messages[1].value, first.headers)


def test_decode_any_message_reads_probe_batches_as_before(pcaps):
    decoder = Decoder(18)
    records = [decoder.decode(f, t, link) for link, t, f in read_capture(pcaps / "encap.pcap")][:4]
    records = [r for r in records if r.src.addr == records[0].src.addr]
    message = build_message(records, "json")
    assert decode_any_message(message.value, message.headers) == records


def test_live_the_wall_clock_closes_windows_no_probe_closes():
    """With tick_s (live capture), a path that falls silent still has its window emitted, by the wall clock."""
    engine = RuleEngine(rules_of("[[rules]]\nfunction = 'histogram'\ninterval_ms = 100\ngrace_ms = 0\n"), "t")
    records, histograms = ListSink(), ListSink()
    sent = time.time_ns() - 10**9  # a second ago: its window has long ended, but no later probe comes

    async def live() -> None:
        outputs = {("t", "records"): records, ("t", "histograms"): histograms}
        async with RoutedSink(engine, outputs, tick_s=0.01) as sink:
            await sink.write([probe(src_ns=sent, sink_ns=sent + 1000, capture_ns=sent + 2000)])
            assert histograms.records == []  # the probe's own capture time does not close its window
            await asyncio.sleep(0.2)
        assert [h.count for h in histograms.records] == [1]

    asyncio.run(live())


def routes(bootstrap: str, engine: RuleEngine, connect_timeout_s: float = 5.0, **options):
    cluster = Cluster(brokers=bootstrap, connect_timeout_s=connect_timeout_s)
    return open_kafka_routes(engine, cluster, ProducerSettings(), lambda: Batcher("json", 100, 10**6, 0.01), **options)


def test_live_routes_connect_when_the_broker_is_there(kafka_broker):
    """As `ptc collect` opens them: at once, connecting in the background; everything delivered, one producer."""
    main_topic, hist = new_topic(kafka_broker), new_topic(kafka_broker)
    rules = rules_of(f"[[rules]]\nsession_id = 1\nfunction = 'histogram'\ntopic = '{hist}'\n")
    records = [probe(session_id=s, sequence=q, src_ns=10**12 + q) for q in range(1, 51) for s in (1, 2)]

    async def live() -> RoutedSink:
        async with routes(kafka_broker, RuleEngine(rules, main_topic), wait_for_broker=True, tick_s=0.05) as sink:
            await sink.write(records)
            await sink.flush()
            assert sink.delivered() and sink.broker_up is not False
        return sink

    sink = asyncio.run(live())
    assert sink.written == {(main_topic, "records"): 50, (hist, "histograms"): 1}
    assert sink.counters.acked == 51 and sink.counters.failed == 0
    got = [r for m in read_messages(kafka_broker, main_topic, 1) for r in decode_any_message(m.value, m.headers)]
    assert got == records[1::2]
    (message,) = read_messages(kafka_broker, hist, 1)
    (histogram,) = decode_any_message(message.value, message.headers)
    assert histogram.count == 50


def test_live_routes_without_a_broker_keep_records_and_say_why():
    said: list[tuple[str, str]] = []

    async def live() -> RoutedSink:
        async with routes(
            "127.0.0.1:1", RuleEngine(rules_of("[[rules]]\nfunction = 'pass'\n"), "t"), wait_for_broker=True,
            say=lambda level, text: said.append((level, text)), close_timeout_s=0.5, connect_timeout_s=0.2,
        ) as sink:  # fmt: skip
            await sink.write([probe(sequence=q) for q in range(10)])
            await asyncio.sleep(0.5)
            assert sink.held == 10 and sink.broker_up is False
        return sink

    sink = asyncio.run(live())
    assert sink.counters.failed == 10 and not sink.delivered()
    assert said and said[0][0] == "error" and "cannot reach Kafka at 127.0.0.1:1" in said[0][1]
