"""A broker away for longer than the Kafka client's request timeout (40 s), for replay and collect, both policies.

One outage of OUTAGE_S for four clients at once, all sending when the
broker stops (a broker that shuts down tells its clients the partition has
no leader, which is what aiokafka's batch expiry and metadata loop need):

- `ptc replay --when-full block` and `ptc replay --when-full drop`, each of
  the same capture into a topic of its own;
- `ptc collect --when-full block` (a small ring, so that the capture backs
  up into the kernel) and `ptc collect --when-full drop`, both on the same
  veth pair, with 1,000 probes/s sent through the outage and 1,000 more
  once everything held is delivered.

Checked: what each said on stderr during the outage and after it, /healthz
and the broker-up gauge, the connection attempts (aiokafka's own log lines,
-v), the final counters, and the topics' contents, record by record. The
broker's ports are below the ephemeral range (kafka_fixture.Broker).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from kafka_fixture import Broker
from test_collect_veth import PTC, CollectProcess, expected_records, without_capture_time
from test_deploy import probe_frames
from test_fleet import by_source
from test_kafka_delivery import new_topic
from test_operations import free_port, get, metric, wait_health

from pt_collector.capture.pcap import PcapWriter
from pt_collector.codec.encode import ethernet
from pt_collector.codec.generate import generate
from pt_collector.codec.record import Record, to_json_lines
from pt_collector.kafka.message import decode_message

OUTAGE_S = 75
REPLAY_PROBES = 60_000
CAP = 3000  # --max-pending of every client
RATE_PPS = 1000
SAID_WITHIN_S = 15  # a generous bound: the sink checks every 2 s
REPEAT_S = 10  # the outage line comes again this often


@pytest.fixture(scope="module")
def broker(tmp_path_factory, kafka_broker) -> Broker:  # kafka_broker: the jars are fetched by then
    broker = Broker(tmp_path_factory.mktemp("outage-kafka"))
    broker.up()
    yield broker
    broker.down()


class Client(CollectProcess):
    """A ptc command whose stderr lines are kept with the time each came."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.times: list[float] = []
        self.log = log.open("w")  # everything it said, to look at after a failure
        super().__init__(argv, env)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.times.append(time.monotonic())
            self.lines.append(line.rstrip("\n"))
            self.log.write(line)
        self.log.close()

    def said(self, text: str, after: float = 0.0) -> list[tuple[float, str]]:
        """(time, line) of the lines with `text`, said after `after`; aiokafka's own lines (-v) aside."""
        return [
            (t, line)
            for t, line in zip(list(self.times), list(self.lines), strict=False)
            if t >= after and text in line and not line.startswith("aiokafka:")
        ]

    def connection_attempts(self, start: float, end: float) -> int:
        """aiokafka logs each failed connection to a broker (with -v)."""
        pairs = zip(list(self.times), list(self.lines), strict=False)
        return sum(1 for t, line in pairs if start <= t <= end and "Unable connect to node" in line)

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks (USER_HZ 100)


class JsonClient(Client):
    """`ptc collect --log-format json`: its counters lines as dicts."""

    def counters(self) -> list[dict]:
        return [json.loads(line) for line in list(self.lines) if line.startswith("{") and '"counters"' in line]

    def counters_when(self, predicate, timeout: float = 60.0, after: float = 0.0) -> dict:
        """The latest counters that satisfy `predicate`, said after `after` (a time.monotonic())."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, line in reversed(list(zip(self.times, self.lines, strict=False))):
                if t >= after and '"counters"' in line and predicate(json.loads(line)):
                    return json.loads(line)
            assert self.proc.poll() is None, self.lines[-5:]
            time.sleep(0.05)
        raise AssertionError(f"{self.name}: no such counters; the last: {self.lines[-3:]}")

    def final(self) -> dict:
        return [json.loads(line) for line in self.lines if '"event":"stopped"' in line][-1]


def settled(c: dict) -> bool:
    return c["pending"] == 0 and c["acked"] + c["dropped"] + c["failed"] == c["decoded"]


def keys(records: list[Record]) -> Counter:
    """Each record whole, capture time aside (the probe sets of different seeds share sources and sequences)."""
    return Counter(to_json_lines(without_capture_time([r])) for r in records)


async def topic_records(bootstrap: str, topic: str) -> list[Record]:
    """Every record of the topic's one partition: its messages up to the end offset (no idle timeout to guess)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=1 << 22
    )
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        end = (await consumer.end_offsets([partition]))[partition]
        consumer.seek(partition, 0)  # a new topic: nothing deleted yet
        records: list[Record] = []
        while await consumer.position(partition) < end:
            for messages in (await consumer.getmany(timeout_ms=1000)).values():
                records += [r for m in messages for r in decode_message(m.value, m.headers)]
        return records
    finally:
        await consumer.stop()


def replay_counts(err: str) -> dict[str, int]:
    labels = ("probes decoded", "acknowledged", "dropped", "failed")
    return {
        label: int(re.search(rf"^{label} +([\d,]+)", err, re.MULTILINE).group(1).replace(",", "")) for label in labels
    }


def held_in(line: str) -> int:
    return int(re.search(r"([\d,]+) records held", line).group(1).replace(",", ""))


def write_capture(path: Path, frames: list[bytes]) -> Path:
    with path.open("wb") as f:
        writer = PcapWriter(f, 1)
        for frame in frames:
            writer.write(0, frame)
    return path


def test_an_outage_longer_than_the_request_timeout(broker, veth, tmp_path):
    print(f"what each client says: {tmp_path}/*.log")
    bootstrap = broker.bootstrap
    replay_frames = [ethernet(packet) for _, packet in generate(REPLAY_PROBES, sources=8, seed=31)]
    capture = write_capture(tmp_path / "probes.pcap", replay_frames)
    during = probe_frames(RATE_PPS * (OUTAGE_S + 15), seed=32, sources=8)
    after = probe_frames(1000, seed=33, sources=8)
    topics = {name: new_topic(bootstrap) for name in ("replay-block", "replay-drop", "collect-block", "collect-drop")}
    common = ["--brokers", bootstrap, "--max-pending", str(CAP), "-v"]
    ports = {"collect-block": free_port(), "collect-drop": free_port()}

    def replay(name: str, policy: str) -> Client:
        argv = [*PTC, "replay", str(capture), "--topic", topics[name], "--when-full", policy, "--batch-size", "500"]
        # A replay must still be decoding when the broker stops, which the pure engine (about 2 s for these probes)
        # is and the native one (0.55 s into a broker that keeps up, all 60,000 acknowledged before the stop) is not.
        env = dict(os.environ, PTC_ENGINE="python")
        return Client(name, [*argv, *common], tmp_path / f"{name}.log", env)

    def collect(name: str, policy: str, *extra: str) -> JsonClient:
        argv = [*PTC, "collect", "--iface", veth.rx_iface, "--topic", topics[name], "--when-full", policy,
                "--log-format", "json", "--stats-interval", "0.5", "--linger-ms", "20",
                "--metrics-port", str(ports[name]), "--metrics-address", "127.0.0.1", *extra]  # fmt: skip
        return JsonClient(name, [*argv, *common], tmp_path / f"{name}.log")

    collectors = [
        collect("collect-block", "block", "--ring-blocks", "4", "--ring-block-size", "65536"),
        collect("collect-drop", "drop"),
    ]
    for collector in collectors:
        collector.counters_when(lambda c: True)  # capturing
    sender = threading.Thread(target=veth.send, args=(during, RATE_PPS))
    sender.start()
    for collector in collectors:
        collector.counters_when(lambda c: c["acked"] > 0)
    replays = [replay("replay-block", "block"), replay("replay-drop", "drop")]
    clients = [*replays, *collectors]
    try:
        deadline = time.monotonic() + 60
        while not all(_has_messages(bootstrap, topics[client.name]) for client in replays):  # both under way
            assert time.monotonic() < deadline and all(client.proc.poll() is None for client in replays)
            time.sleep(0.1)
        assert all(client.proc.poll() is None for client in clients)  # every one sending when the broker stops

        stopped = time.monotonic()
        broker.down()
        down = time.monotonic()
        for port in ports.values():
            wait_health(port, 503, body="Kafka broker unreachable\n")
            assert metric(get(f"http://127.0.0.1:{port}/metrics")[1], "ptc_kafka_broker_up") == 0
        time.sleep(max(0.0, 20 - (time.monotonic() - stopped)))
        cpu_from, cpu_at = {client.name: client.cpu_s() for client in clients}, time.monotonic()
        time.sleep(OUTAGE_S - (time.monotonic() - stopped))
        cpu = {c.name: (c.cpu_s() - cpu_from[c.name]) / (time.monotonic() - cpu_at) for c in clients}
        broker.up()
        back = time.monotonic()

        outcome = {}
        for client in replays:
            client.proc.wait(timeout=300)
            client._reader.join(timeout=5)
            outcome[client.name] = (client.proc.returncode, "\n".join(client.lines))
        for collector in collectors:
            collector.counters_when(lambda c: c["decoded"] > 0 and settled(c), timeout=120, after=back)
        for port in ports.values():
            assert wait_health(port, 200) == "capturing\n"
            assert metric(get(f"http://127.0.0.1:{port}/metrics")[1], "ptc_kafka_broker_up") == 1
        sender.join()
        time.sleep(3)  # what the kernel still had is decoded
        now = time.monotonic()
        before_after = {c.name: c.counters_when(settled, after=now)["decoded"] for c in collectors}
        veth.send(after, RATE_PPS)  # new traffic once the broker is back
        for collector in collectors:
            decoded = before_after[collector.name]
            collector.counters_when(lambda c, d=decoded: c["decoded"] >= d + len(after) and settled(c), after=now)
    finally:
        codes = {client.name: client.stop() for client in clients}
        sender.join()

    for client in clients:  # what happened, before the checks
        lines = client.said("Kafka unreachable", after=stopped)
        first = f"{lines[0][0] - stopped:.1f} s" if lines else "never"
        attempts = client.connection_attempts(down, back)
        print(f"{client.name}: exit {codes[client.name]}, first said {first} after the stop began, {len(lines)} outage "
              f"lines, {attempts} connection attempts in {back - down:.0f} s, CPU {cpu[client.name]:.1%}")  # fmt: skip
        counters = client.final() if isinstance(client, JsonClient) else outcome.get(client.name, (0, ""))[1]
        print(f"  {counters if isinstance(counters, dict) else counters[-400:]}")

    # Each said at once that Kafka was away and what it held, again every 10 s while it lasted, and when it came back.
    for client in clients:
        lines = client.said("Kafka unreachable", after=stopped)
        assert lines, (client.name, client.lines[-10:])
        first_s = lines[0][0] - stopped
        assert first_s < SAID_WITHIN_S, (client.name, first_s)
        during_outage = [line for t, line in lines if t < back]
        lasted = back - stopped  # the sink checks every 2 s: a line every 10 to 12 s
        assert lasted / (REPEAT_S + 2) - 1 <= len(during_outage) <= lasted / REPEAT_S + 2, (client.name, during_outage)
        assert all(held_in(line) <= CAP for line in during_outage), during_outage
        assert client.said("Kafka is taking records again", after=down), client.name
        assert not client.said("renewing the producer"), client.name  # the producer kept its sequence
        attempts = client.connection_attempts(down, back)
        assert attempts <= 3 * (back - down), (client.name, attempts)  # a backoff on every reconnect, not a storm
    for client in (clients[0], *collectors):  # waiting: next to no CPU (replay-drop may still be decoding)
        assert cpu[client.name] < 0.25, cpu

    on_topic = {
        name: asyncio.run(asyncio.wait_for(topic_records(bootstrap, topic), 120)) for name, topic in topics.items()
    }

    # replay, --when-full block: waited, and then delivered every record, once, in order per source
    code, err = outcome["replay-block"]
    counts = replay_counts(err)
    assert code == 0, err[-2000:]
    assert counts == {"probes decoded": REPLAY_PROBES, "acknowledged": REPLAY_PROBES, "dropped": 0, "failed": 0}
    records = on_topic["replay-block"]
    assert len(records) == REPLAY_PROBES and len(keys(records)) == REPLAY_PROBES
    assert by_source(records) == by_source(expected_records(replay_frames))

    # replay, --when-full drop: at most --max-pending held, the rest counted dropped, the held ones delivered once
    code, err = outcome["replay-drop"]
    counts = replay_counts(err)
    assert code == 1 and f"records dropped: --max-pending {CAP:,} records were waiting" in err, err[-2000:]
    assert counts["acknowledged"] + counts["dropped"] == REPLAY_PROBES and counts["failed"] == 0
    assert counts["dropped"] > 0
    records = on_topic["replay-drop"]
    assert len(records) == len(keys(records)) == counts["acknowledged"]
    assert set(keys(records)) <= set(keys(expected_records(replay_frames)))

    # collect, --when-full block: nothing accepted was lost; the capture backed up into the kernel (counted there)
    block = collectors[0].final()
    assert codes["collect-block"] == 0
    assert block["acked"] == block["decoded"] and block["dropped"] == block["failed"] == 0
    assert block["kernel_dropped"] > 0 and block["frames"] + block["kernel_dropped"] <= len(during) + len(after)
    assert max(c["pending"] for c in collectors[0].counters()) <= CAP

    # collect, --when-full drop: at most --max-pending held, the rest dropped and counted
    drop = collectors[1].final()
    assert codes["collect-drop"] == 0
    assert drop["acked"] + drop["dropped"] == drop["decoded"] and drop["failed"] == 0 and drop["dropped"] > 0
    assert max(c["pending"] for c in collectors[1].counters()) <= CAP

    for name, totals in (("collect-block", block), ("collect-drop", drop)):
        records = without_capture_time(on_topic[name])
        assert len(records) == len(keys(records)) == totals["acked"], name  # exactly once
        got = keys(records)
        assert all(key in got for key in keys(expected_records(after))), name  # every probe after the return
    print(f"replay-drop dropped {replay_counts(outcome['replay-drop'][1])['dropped']:,}; collect-block kernel drops "
          f"{block['kernel_dropped']:,}; collect-drop dropped {drop['dropped']:,}")  # fmt: skip


def _has_messages(bootstrap: str, topic: str) -> bool:
    done = subprocess.run(
        ["kcat", "-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-c", "1", "-e", "-q"],
        capture_output=True, timeout=30,
    )  # fmt: skip
    return done.returncode == 0 and bool(done.stdout)
