"""`ptc analyze` on the real Kafka broker: two instances in one group against an offline computation.

Three generated fleets (one with lost probes, one whose sequence numbers
wrap, one that rehashes onto new paths) are replayed into a 4-partition
topic keyed by source. The offline computation below shares no code with
pt_collector.analyze: it unwraps each session's sequence numbers over the
whole stream, sorts delays for exact quantiles and checks the sketch's
ones against its relative error.
"""

from __future__ import annotations

import itertools
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path

import msgspec
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from pt_collector import Decoder
from pt_collector.codec.generate import generate
from pt_collector.codec.record import PathHistogram, Record
from pt_collector.codec.wire import LINKTYPE_RAW
from pt_collector.kafka.kinds import decode_any_message
from pt_collector.kafka.message import build_message

pytest.importorskip("quixstreams")

WINDOW_MS, GRACE_MS = 1000, 500
NS = 1_000_000
PER_FLEET = 2400  # 4 sources x 600 probes, 1 ms apart: 3 windows of 1 s per source (the 3rd one partial)
BATCH = 40
ACCURACY = 0.01
LEVELS = (0.5, 0.9, 0.99)
START = 1_643_211_426_000_000_000  # generate's start: a whole second


# ------------------------------------------------------------------ the fleets


def _fleet(number: int) -> list[Record]:
    decoder = Decoder(tts_shift=18)
    records = []
    for capture_ns, packet in generate(PER_FLEET, seed=number, sources=4):
        record = decoder.decode(packet, capture_ns, LINKTYPE_RAW)
        assert record is not None
        records.append(_vary(number, msgspec.structs.replace(record, src=_renamed(record, number))))
    if number == 1:  # lost probes: every 5th of each source, the last of each window (250, 500) among them
        records = [r for r in records if r.sequence % 5]
    if number == 2:  # lost across the wrap
        records = [r for r in records if r.sequence not in (65_535, 0, 1)]
    return records


def _renamed(record: Record, number: int):
    return msgspec.structs.replace(record.src, addr=record.src.addr.replace("2001:db8:", f"2001:db8:{number}0"))


def _vary(number: int, record: Record) -> Record:
    if number == 2:  # sequence numbers crossing the 16-bit wrap
        return msgspec.structs.replace(record, sequence=(record.sequence + 65_300) % 65_536)
    if number == 3 and record.sequence > 350 and record.sequence % 2:  # an ECMP rehash: half the probes, new hops
        hops = tuple(msgspec.structs.replace(h, if_id=h.if_id + 7) for h in record.hops)
        return msgspec.structs.replace(record, hops=hops)
    return record


def _closers(records: list[Record]) -> list[Record]:
    """One probe per source, 5 s after its last: it closes the source's every window (and is not compared)."""
    last: dict[str, Record] = {}
    for r in records:
        last[r.src.addr] = r
    return [
        msgspec.structs.replace(
            r,
            sequence=(r.sequence + 1) % 65_536,
            src=msgspec.structs.replace(r.src, time_ns=r.src.time_ns + 5_000 * NS),
        )
        for r in last.values()
    ]


def fleets() -> list[Record]:
    return [r for number in (1, 2, 3) for r in _fleet(number)]


# ------------------------------------------------------------------ the offline computation


def _path(r: Record) -> tuple:
    return r.src.addr, r.sink.addr if r.sink else None, tuple(h.if_id for h in r.hops)


def offline(records: list[Record]) -> dict[tuple, dict]:
    """(source, window start ns, path) -> count, loss and exact e2e delays; loss per session over unwrapped numbers."""
    out: dict[tuple, dict] = {}
    sessions: dict[tuple, list[tuple[int, Record]]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r.src.time_ns):
        key = (r.src.addr, r.session_id)
        runs = sessions[key]
        unwrapped = r.sequence if not runs else runs[-1][0] + (r.sequence - runs[-1][0]) % 65_536
        runs.append((unwrapped, r))
        start = r.src.time_ns - r.src.time_ns % (WINDOW_MS * NS)
        row = out.setdefault((r.src.addr, start, _path(r)), {"count": 0, "loss": 0, "e2e": []})
        row["count"] += 1
        row["e2e"].append(r.e2e_ns)
    for runs in sessions.values():
        by_window: dict[int, list[tuple[int, Record]]] = defaultdict(list)
        for unwrapped, r in runs:
            by_window[r.src.time_ns - r.src.time_ns % (WINDOW_MS * NS)].append((unwrapped, r))
        previous_last = None
        for start in sorted(by_window):
            items = by_window[start]
            numbers = [u for u, _ in items]
            missing = max(numbers) - min(numbers) + 1 - len(numbers)
            if previous_last is not None:
                missing += min(numbers) - previous_last - 1
            previous_last = max(numbers)
            counts: dict[tuple, int] = defaultdict(int)
            for _, r in items:
                counts[_path(r)] += 1
            busiest = min(counts, key=lambda p: (-counts[p], f"{p[1] or ''}|{','.join(map(str, p[2]))}"))
            out[(items[0][1].src.addr, start, busiest)]["loss"] += missing
    return out


def check_quantiles(histogram: PathHistogram, delays: list[int]) -> None:
    ordered = sorted(delays)
    for level, value in zip(LEVELS, histogram.e2e.quantiles_ns, strict=True):
        rank = level * (len(ordered) - 1)
        low, high = ordered[math.floor(rank)], ordered[math.ceil(rank)]
        assert low * (1 - ACCURACY) - 1 <= value <= high * (1 + ACCURACY) + 1, (level, value, low, high)
    assert (histogram.e2e.min_ns, histogram.e2e.max_ns, histogram.e2e.sum_ns) == (ordered[0], ordered[-1], sum(ordered))


# ------------------------------------------------------------------ Kafka


def create_topic(brokers: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": brokers})
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(30)


def produce(brokers: str, topic: str, records: list[Record]) -> None:
    """Batches of one source, in each source's order, keyed by the source (librdkafka's partitioner)."""
    producer = Producer({"bootstrap.servers": brokers, "linger.ms": 5})
    by_source: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_source[r.src.addr].append(r)
    for source_records in by_source.values():
        for i in range(0, len(source_records), BATCH):
            m = build_message(source_records[i : i + BATCH], "json")
            producer.produce(topic, m.value, m.key, headers=m.headers)
    assert producer.flush(30) == 0


def read_all(brokers: str, topic: str, until, timeout_s: float = 150, linger_s: float = 0) -> list:
    """The committed messages of `topic` read until `until(messages)` holds (then `linger_s` more) or `timeout_s`."""
    settings = {"bootstrap.servers": brokers, "group.id": f"t-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
    consumer = Consumer({**settings, "isolation.level": "read_committed", "enable.auto.commit": False})
    consumer.subscribe([topic])
    items: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if until(items):
                deadline = min(deadline, time.monotonic() + linger_s)
                linger_s = 0
                if time.monotonic() >= deadline:
                    break
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            items.append(message)
    finally:
        consumer.close()
    return items


def histograms_of(messages: list) -> list[PathHistogram]:
    return [h for m in messages for h in decode_any_message(m.value(), m.headers())]


class Instance:
    def __init__(self, brokers: str, topics: dict[str, str], state_dir: Path, **extra: str) -> None:
        args = [f"--{k}={v}" for k, v in {**topics, **extra}.items()]
        self.log = state_dir.with_suffix(".log")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pt_collector.cli.main", "analyze", f"--brokers={brokers}", "--window=1",
             "--grace=0.5", f"--state-dir={state_dir}", *args],
            stdout=subprocess.DEVNULL, stderr=self.log.open("ab"), env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip

    def stop(self) -> str:
        return stop_all([self])[0]


def stop_all(instances: list[Instance]) -> list[str]:
    """SIGTERM to all at once: one stopping after another would stop the last one amid the rebalance."""
    for instance in instances:
        deadline = time.monotonic() + 60
        while " as group " not in instance.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)  # before the interpreter has loaded ptc, SIGTERM is Python's default: death
        instance.proc.send_signal(signal.SIGTERM)
    for instance in instances:
        assert instance.proc.wait(60) == 0, instance.log.read_text()
    return [instance.log.read_text() for instance in instances]


def topics() -> dict[str, str]:
    name = uuid.uuid4().hex[:8]
    return {"topic": f"probes-{name}", "output-topic": f"paths-{name}", "events-topic": f"events-{name}",
            "group": f"analyze-{name}"}  # fmt: skip


def compare(histograms: list[PathHistogram], expected: dict[tuple, dict]) -> None:
    got = {(h.src.addr, h.start_ns, (h.src.addr, h.sink.addr if h.sink else None, h.hop_if_ids)): h for h in histograms}
    assert len(got) == len(histograms), "a window came twice"
    assert set(got) == set(expected)
    for key, h in got.items():
        assert (h.count, h.loss) == (expected[key]["count"], expected[key]["loss"]), key
        check_quantiles(h, expected[key]["e2e"])


def _run(brokers: str, tmp_path: Path, kill: bool) -> tuple[list[PathHistogram], dict, list[str]]:
    names = topics()
    create_topic(brokers, names["topic"], 4)
    started_ms = time.time_ns() // NS - 1000  # the fleets' probes are from 2022: older than the topics' retention
    records = fleets()
    expected = offline(records)
    closers = _closers(records)
    ids = ({"instance-id": "a"}, {"instance-id": "b"}) if kill else ({}, {})  # a restart under the same name
    first = [Instance(brokers, names, tmp_path / "a", **ids[0]), Instance(brokers, names, tmp_path / "b", **ids[1])]
    half = len(records) // 2
    produce(brokers, names["topic"], records[:half] if kill else records + closers)
    logs = []
    if kill:
        read_all(brokers, names["output-topic"], lambda items: len(items) >= 3)  # windows are closing
        first[0].proc.kill()
        first[0].proc.wait()
        produce(brokers, names["topic"], records[half:] + closers)
        first[0] = Instance(brokers, names, tmp_path / "a2", **ids[0])  # a fresh state dir: from the changelog
    complete = lambda items: len(histograms_of(items)) >= len(expected)  # noqa: E731
    out = read_all(
        brokers, names["output-topic"], complete, timeout_s=120, linger_s=3
    )  # anything counted twice would come too
    said = len({key[2] for key in expected}) + 4  # a new_path per path, a path_set_changed per rehashed source
    events = (
        [] if kill else read_all(brokers, names["events-topic"], lambda i: len(i) >= said, timeout_s=90, linger_s=2)
    )
    logs = stop_all(first)
    said = [msgspec.json.decode(m.value()) for m in events]
    stamps = [m.timestamp()[1] for m in out + events]  # a broker deletes by these (retention.ms), not by offsets
    oldest = min(stamps, default=started_ms)
    assert oldest >= started_ms, f"written with the probes' time {oldest}: retention would delete them"
    return histograms_of(out), {"expected": expected, "events": said, "output": names["output-topic"]}, logs


def test_two_instances_equal_the_offline_computation_window_by_window(kafka_broker, tmp_path):
    histograms, seen, logs = _run(kafka_broker, tmp_path, kill=False)
    compare(histograms, seen["expected"])
    assert sum(h.loss for h in histograms) > 0 and len({h.src.addr for h in histograms}) == 12
    changed = [e for e in seen["events"] if e["event"] == "path_set_changed"]
    assert sorted(e["src"] for e in changed) == [f"2001:db8:30{n}::1" for n in range(1, 5)], seen["events"]
    assert all(len(e["added"]) == 1 and not e["removed"] for e in changed)
    new_paths = {
        (e["path"]["src"], e["path"]["sink"], tuple(e["path"]["hop_if_ids"]))
        for e in seen["events"]
        if e["event"] == "new_path"
    }
    assert new_paths == {k[2] for k in seen["expected"]}
    assert all("0 late probes" in log for log in logs), logs
    table = subprocess.run(
        [sys.executable, "-m", "pt_collector.cli.main", "paths", "--topic", seen["output"], "--brokers", kafka_broker,
         "--from-beginning", "--timeout", "5"], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    per_source: dict[str, int] = defaultdict(int)
    for (src, _, _), row in seen["expected"].items():
        per_source[src] += row["count"]
    for src, probes in per_source.items():
        if not src.startswith("2001:db8:30"):  # one path each: the table's row is the source's sum over windows
            assert any(src in line and f" {probes:,} " in line for line in table.stdout.splitlines()), table.stdout


def test_an_instance_killed_mid_stream_loses_and_doubles_nothing(kafka_broker, tmp_path):
    """Every window written once and exact, none missing, after a SIGKILL and a restart under the same --instance-id."""
    histograms, seen, _ = _run(kafka_broker, tmp_path, kill=True)
    expected = seen["expected"]
    written = {key: row for key, row in expected.items() if any(_matches(h, key) for h in histograms)}
    compare(histograms, written)  # nothing twice, nothing wrong
    missing = sorted(set(expected) - set(written))
    assert not missing, f"{len(missing)} of {len(expected)} windows never written after the SIGKILL: {missing[:4]}"


def _matches(h: PathHistogram, key: tuple) -> bool:
    return (h.src.addr, h.start_ns, (h.src.addr, h.sink.addr if h.sink else None, h.hop_if_ids)) == key


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _probe(base: Record, ms: int, sequence: int, session: int = 1, hop_shift: int = 0) -> Record:
    hops = tuple(msgspec.structs.replace(h, if_id=h.if_id + hop_shift) for h in base.hops)
    src = msgspec.structs.replace(base.src, time_ns=START + ms * NS)
    return msgspec.structs.replace(base, src=src, sequence=sequence, session_id=session, hops=hops)


def test_late_and_reordered_probes_and_the_path_events(kafka_broker, tmp_path):
    names = topics()
    create_topic(kafka_broker, names["topic"], 1)
    base = _fleet(4)[0]
    sent = [  # (ms on the source's clock, sequence, session, hop shift), in the order they reach Kafka
        (100, 1, 1, 0), (200, 2, 1, 0), (1300, 4, 1, 5),
        (900, 3, 1, 0),  # reordered, inside the grace: counted in window 0
        (1600, 5, 1, 5),  # the source's clock passes 1000 + 500: window 0 closes
        (950, 30, 9, 0),  # beyond the grace: late, counted as such
        (6000, 6, 1, 5),  # closes window 1
    ]  # fmt: skip
    for args in sent:
        produce(kafka_broker, names["topic"], [_probe(base, *args)])
    port = _free_port()
    options = {"p99-threshold-ms": "0.001", "unseen-windows": "1", "metrics-port": str(port), "stats-interval": "0.5"}
    instance = Instance(kafka_broker, names, tmp_path / "a", **options)
    out = histograms_of(read_all(kafka_broker, names["output-topic"], lambda items: len(histograms_of(items)) >= 2))
    events = read_all(kafka_broker, names["events-topic"], lambda items: len(items) >= 6, timeout_s=30)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    log = instance.stop()
    assert "ptc_analyze_late_probes_total 1.0" in metrics, metrics
    gauges = sorted(line.split()[-1] for line in metrics.splitlines() if line.startswith("ptc_analyze_path_probes{"))
    assert gauges == ["2.0", "3.0"], metrics  # each path's latest window: window 1 of the new path, 0 of the old
    assert [((h.start_ns - START) // NS, h.count, h.loss) for h in out] == [(0, 3, 0), (1000, 2, 0)]
    assert "1 late probes" in log, log
    counter_lines = [line for line in log.splitlines() if line.startswith("ptc analyze: ") and " late probes, " in line]
    assert len(counter_lines) >= 2, log  # every --stats-interval while it ran, and the summary at the end
    said = [msgspec.json.decode(m.value()) for m in events]
    assert [(e["event"], (e["window_start_ns"] - START) // NS) for e in said] == [
        ("new_path", 0), ("threshold", 0),
        ("new_path", 1000), ("path_gone", 1000), ("path_set_changed", 1000), ("threshold", 1000),
    ]  # fmt: skip


def test_a_silent_source_s_windows_close_on_the_partition_s_clock(kafka_broker, tmp_path):
    """--close-by partition: source A falls silent after its first window; source B (same partition) moves on, and
    A's window is written, once and exact. With --close-by source (the default) it stays open: the control run."""
    base_a, base_b = _fleet(4)[0], _fleet(4)[1]
    assert base_a.src.addr != base_b.src.addr
    silent = [_probe(base_a, ms, n) for n, ms in enumerate((100, 300, 700), start=1)]
    talking = [_probe(base_b, ms, n) for n, ms in enumerate(range(100, 4100, 200), start=1)]
    written = {}
    for close_by in ("partition", "source"):
        names = topics()
        create_topic(kafka_broker, names["topic"], 1)  # one partition: both sources in it
        produce(kafka_broker, names["topic"], silent + talking)
        instance = Instance(kafka_broker, names, tmp_path / close_by, **{"close-by": close_by})
        enough = lambda items: len(histograms_of(items)) >= 3  # noqa: E731  B's windows 0, 1 and 2 close for sure
        out = histograms_of(read_all(kafka_broker, names["output-topic"], enough, timeout_s=90, linger_s=3))
        log = instance.stop()
        assert "0 late probes" in log, log
        written[close_by] = sorted((h.src.addr, (h.start_ns - START) // NS, h.count, h.loss) for h in out)
    a, b = base_a.src.addr, base_b.src.addr
    b_windows = [(b, 0, 5, 0), (b, 1000, 5, 0), (b, 2000, 5, 0)]  # 3000: not closed (B's clock is at 3900)
    assert written["partition"] == sorted([(a, 0, 3, 0), *b_windows]), written
    assert written["source"] == sorted(b_windows), written


def _aggregators() -> list:
    from pt_collector.analyze import engines

    found = [engines.PythonAggregator()]
    if engines._native is not None:
        found.append(engines.NativeAggregator())
    return found


ENGINES = [pytest.param(a, id=a.name) for a in _aggregators()]


def _hop_delays(r: Record) -> list[int | None]:
    times = [r.src.time_ns, *(h.time_ns for h in r.hops), r.sink.time_ns]
    return [b - a if a is not None and b is not None else None for a, b in itertools.pairwise(times)]


@pytest.mark.parametrize("aggregator", ENGINES)
def test_each_engine_equals_the_offline_computation_in_process(aggregator):
    """The fleets' messages split, merged in a shuffled order through the state's serializer, read out per window:
    counts and loss exact, min/max/sum exact, quantiles of every delay (end to end and per hop) within 1 %."""
    import random

    from pt_collector.analyze import windows
    from pt_collector.analyze.app import state_dumps, state_loads

    records = fleets()
    expected = offline(records)
    hops: dict[tuple, list[list[int]]] = defaultdict(list)
    for r in records:
        key = (r.src.addr, r.src.time_ns - r.src.time_ns % (WINDOW_MS * NS), _path(r))
        for i, d in enumerate(_hop_delays(r)):
            hops[key] += [[] for _ in range(i + 1 - len(hops[key]))]
            if d is not None:
                hops[key][i].append(d)
    items: dict[tuple[str, int], list] = defaultdict(list)
    for source in sorted({r.src.addr for r in records}):
        mine = [r for r in records if r.src.addr == source]
        for i in range(0, len(mine), BATCH):
            m = build_message(mine[i : i + BATCH], "msgpack" if i % 80 else "json")
            for latest, aggregate, _ in aggregator.split(m.value, m.headers, source, WINDOW_MS):
                items[(source, latest - latest % WINDOW_MS)].append(state_loads(state_dumps(aggregate)))
    got = []
    last_seen: dict[str, dict[str, int]] = defaultdict(dict)
    for (source, start), parts in sorted(items.items()):
        random.Random(start).shuffle(parts)
        aggregate = parts[0]
        for part in parts[1:]:
            aggregate = state_loads(state_dumps(aggregator.merge(aggregate, part)))
        closed = aggregator.read(aggregate)
        loss = windows.losses(closed.sessions, last_seen[source])
        got += windows.histograms(source, start, WINDOW_MS, closed.paths, loss)
    compare(got, expected)
    for h in got:
        key = (h.src.addr, h.start_ns, (h.src.addr, h.sink.addr if h.sink else None, h.hop_if_ids))
        for hop, delays in zip(h.hop_delays, hops[key], strict=True):
            check_quantiles(PathHistogram(**{**msgspec.structs.asdict(h), "e2e": hop}), delays)


@pytest.mark.parametrize("aggregator", ENGINES)
def test_a_window_of_implausible_delays_still_fits_the_state_store(aggregator):
    """Hop times decades off (a bad clock) sum beyond 64 bits; Quix Streams' state serializer (orjson) refuses those."""
    from pt_collector.analyze import windows
    from pt_collector.analyze.app import state_dumps, state_loads

    base = _fleet(4)[0]
    far = msgspec.structs.replace(base.src, time_ns=base.src.time_ns + 10**18)  # the first hop: about -1e18 ns
    m = build_message([msgspec.structs.replace(base, src=far, sequence=n) for n in range(1, 11)], "json")
    [(_, aggregate, probes)] = aggregator.split(m.value, m.headers, base.src.addr, WINDOW_MS)
    closed = aggregator.read(state_loads(state_dumps(aggregator.merge(aggregate, aggregate))))
    [h] = windows.histograms(base.src.addr, 0, WINDOW_MS, closed.paths, {})
    assert probes == 10 and h.count == 20 and h.hop_delays[0].sum_ns < -(2**63) and h.hop_delays[0].count == 20


@pytest.mark.parametrize("aggregator", ENGINES)
def test_a_bad_message_is_a_message_error_in_each_engine(aggregator):
    from pt_collector.kafka.message import MessageError

    base = _fleet(4)[0]
    m = build_message([base], "json")
    bad = [
        (m.value, m.headers, "2001:db8::99", "records of a source other than the key"),
        (b"{nope", m.headers, base.src.addr, "bad json"),
        (m.value, [*m.headers[:2], ("ptc-count", b"2")], base.src.addr, "ptc-count says 2 records"),
        (m.value, [("ptc-schema", b"9"), *m.headers[1:]], base.src.addr, "not a ptc schema 1 message"),
        (m.value, [m.headers[0], ("ptc-format", b"xml"), m.headers[2]], base.src.addr, "unknown ptc-format"),
    ]
    for value, headers, key, said in bad:
        with pytest.raises(MessageError, match=said):
            aggregator.split(value, headers, key, WINDOW_MS)


def test_no_broker_is_said_while_waiting_then_exit_status_1(tmp_path):
    port = _free_port()  # nothing listens there
    done = subprocess.run(
        [sys.executable, "-m", "pt_collector.cli.main", "analyze", f"--brokers=127.0.0.1:{port}", "--connect-timeout=2",
         f"--state-dir={tmp_path}"], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert f"ptc analyze: waiting for Kafka at 127.0.0.1:{port}" in done.stderr
    assert done.stderr.splitlines()[-1].startswith("Error: KafkaUnavailable: no answer from Kafka"), done.stderr
    assert "Traceback" not in done.stderr


# ------------------------------------------------------------------ TLS and SASL (the --security-protocol family)


def test_the_tls_and_sasl_options_reach_the_quix_streams_clients(tmp_path):
    from pt_collector.analyze import app
    from pt_collector.kafka.client import Cluster, Security

    security = Security("SASL_SSL", "SCRAM-SHA-512", "probe-reader", "s3cret", ssl_cafile="/ca.pem",
                        ssl_certfile="/me.pem", ssl_keyfile="/me.key", ssl_check_hostname=False)  # fmt: skip
    settings = app.Settings(Cluster("broker-1:9093", security), "t", "o", "e", "g", 1000, 0, str(tmp_path))
    quix = app.application(settings)
    wanted = {
        "bootstrap.servers": "broker-1:9093", "security.protocol": "sasl_ssl", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "probe-reader", "sasl.password": "s3cret", "ssl.ca.location": "/ca.pem",
        "ssl.certificate.location": "/me.pem", "ssl.key.location": "/me.key",
        "ssl.endpoint.identification.algorithm": "none",
    }  # fmt: skip
    assert quix.config.broker_address.as_librdkafka_dict() == wanted
    assert wanted.items() <= quix._consumer._consumer_config.items()  # the consumer Quix Streams made from it


def test_sasl_without_credentials_is_a_usage_error_in_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pt_collector.cli.main", "analyze", "--security-protocol=SASL_PLAINTEXT",
         "--sasl-username=me", f"--state-dir={tmp_path}"], capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if k != "PTC_SASL_PASSWORD"},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "SASL_PLAINTEXT needs --sasl-username and --sasl-password" in done.stderr.splitlines()[-1], done.stderr
    assert "Traceback" not in done.stderr


def test_sasl_against_a_plaintext_broker_fails_in_one_line(kafka_broker, tmp_path):
    """The real broker speaks PLAINTEXT only: a SASL client gets no answer, says so while waiting, then exits 1."""
    done = subprocess.run(
        [sys.executable, "-m", "pt_collector.cli.main", "analyze", f"--brokers={kafka_broker}", "--connect-timeout=3",
         "--security-protocol=SASL_PLAINTEXT", "--sasl-username=me", "--sasl-password=wrong",
         f"--state-dir={tmp_path}"], capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[-1].startswith("Error: KafkaUnavailable: no answer from Kafka"), done.stderr
    assert "Traceback" not in done.stderr and "wrong" not in done.stderr


# ------------------------------------------------------------------ watching it


def test_the_live_table_shows_the_counters_and_each_path_s_latest_window():
    import io

    from rich.console import Console

    from pt_collector.analyze import windows
    from pt_collector.analyze.app import Counters
    from pt_collector.analyze.engines import PythonAggregator
    from pt_collector.analyze.table import Watch

    fleet = _fleet(1)
    records = [r for r in fleet if r.src.addr == fleet[0].src.addr][:50]
    m = build_message(records, "json")
    [(_, aggregate, _)] = PythonAggregator().split(m.value, m.headers, records[0].src.addr, WINDOW_MS)
    closed = windows.read(aggregate)
    counters = Counters(messages=7, probes=50, late_probes=3, bad_messages=2, windows=1, histograms=1)
    watch = Watch(counters, "ptc analyze probes (g)", live=False, interval_s=1.0)
    watch.observe(windows.histograms(records[0].src.addr, START // NS, WINDOW_MS, closed.paths, {}))
    out = io.StringIO()
    Console(file=out, width=200).print(watch.table())
    text = out.getvalue()
    h = next(iter(watch.latest.values()))
    row = next(line for line in text.splitlines() if records[0].src.addr in line)
    assert f" {h.count} " in row and f"{h.e2e.quantiles_ns[2] / 1e6:,.3f}" in row, text
    assert "2 bad" in text and "3 late" in text and "ptc analyze probes (g)" in text, text


def test_a_stop_that_lands_inside_librdkafka_is_a_clean_stop():
    """SIGTERM during a C poll comes back as SystemError caused by KeyboardInterrupt: a stop, not an error."""
    from pt_collector.cli.analyze import _stopped_in_c

    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as interrupt:
            raise SystemError("<method 'poll'> returned a result with an exception set") from interrupt
    except SystemError as exc:
        assert _stopped_in_c(exc)
    assert not _stopped_in_c(SystemError("something else"))
    assert not _stopped_in_c(RuntimeError("broker gone"))
