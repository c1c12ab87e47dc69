"""Faults against real brokers: outages, a broker that is not there yet, refusals, SIGTERM under load.

The module's own broker (`broker`) can be stopped and started again; it
also has a SASL_PLAINTEXT listener (user alice, no ACLs: the authorizer
refuses her everything), and it creates no topic on first use. Everything
ptc accepted must end acknowledged or counted (dropped, failed), and the
topic must hold every acknowledged record exactly once.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from kafka_fixture import Broker
from test_collect_veth import PTC, Collector, expected_records, without_capture_time
from test_deploy import probe_frames, read_topic
from test_fleet import by_source
from test_kafka_delivery import new_topic
from test_operations import free_port, get, metric, wait_health

from pt_collector.capture.pcap import PcapWriter
from pt_collector.codec.encode import ethernet
from pt_collector.codec.generate import generate
from pt_collector.codec.record import Record

ALICE = ("alice", "alice-secret")
FAULTS_CONFIG = """
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port},SASL_PLAINTEXT://127.0.0.1:{extra_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{extra_port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=\
org.apache.kafka.common.security.plain.PlainLoginModule required user_alice="alice-secret";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS
allow.everyone.if.no.acl.found=false
auto.create.topics.enable=false
"""


@pytest.fixture(scope="module")
def broker(tmp_path_factory, kafka_broker) -> Broker:  # kafka_broker: the jars are fetched by then
    broker = Broker(tmp_path_factory.mktemp("faults-kafka"), FAULTS_CONFIG)
    broker.up()
    yield broker
    broker.down()


@pytest.fixture
def restarts(broker):
    """The test may stop the broker: it is up again afterwards."""
    yield broker
    broker.up()


class JsonCollector(Collector):
    """`ptc collect` with JSON log lines: its counters as numbers."""

    def __init__(self, *args: str) -> None:
        super().__init__("--log-format", "json", *args)

    def events(self, event: str) -> list[dict]:
        return [entry for entry in map(json.loads, list(self.lines)) if entry.get("event") == event]

    def counters_when(self, predicate, timeout: float = 30.0) -> dict:
        """The first counters line (the latest first) that satisfies `predicate`."""
        line = self.wait_for(lambda line: '"counters"' in line and predicate(json.loads(line)), timeout)
        return json.loads(line)

    def said(self, text: str, timeout: float = 30.0) -> str:
        return self.wait_for(lambda line: text in line, timeout)

    def final(self) -> dict:
        return self.events("stopped")[-1]


def settled(counters: dict) -> bool:
    """Every decoded record is acked, dropped or failed."""
    return (
        counters["pending"] == 0 and counters["acked"] + counters["dropped"] + counters["failed"] == counters["decoded"]
    )


def unique(records: list[Record]) -> Counter:
    return Counter((r.src.addr, r.session_id, r.sequence) for r in records)


def write_pcap(path: Path, frames: list[bytes]) -> Path:
    with path.open("wb") as f:
        writer = PcapWriter(f, 1)
        for frame in frames:
            writer.write(0, frame)
    return path


def topic_has_records(bootstrap: str, topic: str) -> bool:
    done = subprocess.run(
        [*PTC, "consume", "--topic", topic, "--brokers", bootstrap, "--from-beginning", "--max", "1",
         "--timeout", "1", "-q"],
        capture_output=True, timeout=60,
    )  # fmt: skip
    return done.returncode == 0


def replay_until_the_broker_goes(
    broker: Broker, tmp_path: Path, seed: int
) -> tuple[subprocess.Popen, list[bytes], str]:
    """A replay of 60,000 probes under way into a new topic, and then the broker stopped under it."""
    frames = [ethernet(packet) for _, packet in generate(60_000, sources=8, seed=seed)]
    capture = write_pcap(tmp_path / "probes.pcap", frames)
    topic = new_topic(broker.bootstrap)
    replay = subprocess.Popen(
        [*PTC, "replay", str(capture), "--topic", topic, "--brokers", broker.bootstrap, "--max-pending", "2000",
         "--batch-size", "500"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not topic_has_records(broker.bootstrap, topic):  # under way...
        assert replay.poll() is None and time.monotonic() < deadline
    replay.send_signal(signal.SIGSTOP)  # ...and held there while the broker goes
    broker.down()
    replay.send_signal(signal.SIGCONT)
    return replay, frames, topic


def test_replay_through_a_broker_restart_delivers_every_record_once(restarts, tmp_path):
    broker = restarts
    replay, frames, topic = replay_until_the_broker_goes(broker, tmp_path, seed=5)
    try:
        time.sleep(10)
        assert replay.poll() is None  # waiting for the broker, nothing lost (--when-full block)
        broker.up()
        back = time.monotonic()
        _, err = replay.communicate(timeout=180)
        recovered_s = time.monotonic() - back
    finally:
        replay.kill()
    assert replay.returncode == 0, err
    assert "acknowledged    60,000" in err and "failed          0" in err, err
    records = read_topic(broker.bootstrap, topic, 60_000)
    assert len(records) == 60_000 and len(unique(records)) == 60_000  # the idempotent producer: no duplicates
    assert by_source(records) == by_source(expected_records(frames))  # and in order, per source
    print(f"replay finished {recovered_s:.1f} s after the broker was back")


def test_collect_through_a_broker_outage(restarts, veth):
    """--when-full drop: capture goes on, held records stay under the cap, drops are counted, delivery resumes."""
    broker = restarts
    topic = new_topic(broker.bootstrap)
    port = free_port()
    cap = 1500
    collector = JsonCollector(
        "--iface", veth.rx_iface, "--topic", topic, "--brokers", broker.bootstrap, "--max-pending", str(cap),
        "--linger-ms", "20", "--metrics-port", str(port), "--metrics-address", "127.0.0.1",
    )  # fmt: skip
    frames = probe_frames(5000, seed=1)
    before, during, after = frames[:500], frames[500:4500], frames[4500:]
    try:
        assert wait_health(port, 200) == "capturing\n"
        veth.send(before)
        collector.counters_when(lambda c: c["acked"] == 500)
        broker.down()
        wait_health(port, 503, body="Kafka broker unreachable\n")
        veth.send(during)
        held = collector.counters_when(lambda c: c["frames"] == 4500 and c["dropped"] > 0)
        assert held["pending"] <= cap  # memory is bounded by --max-pending
        broker.up()
        back = time.monotonic()
        assert wait_health(port, 200) == "capturing\n"
        collector.counters_when(lambda c: c["decoded"] == 4500 and settled(c), timeout=120)
        recovered_s = time.monotonic() - back
        veth.send(after)
        collector.counters_when(lambda c: c["decoded"] == 5000 and settled(c))
    finally:
        code = collector.stop()
    assert code == 0
    total = collector.final()
    assert total["frames"] == total["decoded"] == 5000  # capture never stopped
    assert total["acked"] + total["dropped"] + total["failed"] == 5000 and total["dropped"] > 0
    assert max(c["pending"] for c in collector.events("counters")) <= cap
    records = read_topic(broker.bootstrap, topic, total["acked"])
    assert len(records) == len(unique(records)) == total["acked"]
    got = unique(without_capture_time(records))
    assert all(key in got for key in unique(expected_records(before + after)))  # before and after: all there
    print(f"dropped {total['dropped']}, failed {total['failed']}, settled {recovered_s:.1f} s after the restart")


def test_collect_starts_before_the_broker(restarts, veth):
    """Capture starts at once; the log and /healthz say the broker is missing; it connects when it comes."""
    broker = restarts
    topic = new_topic(broker.bootstrap)
    broker.down()
    port = free_port()
    collector = JsonCollector(
        "--iface", veth.rx_iface, "--topic", topic, "--brokers", broker.bootstrap, "--connect-timeout", "1",
        "--metrics-port", str(port), "--metrics-address", "127.0.0.1",
    )  # fmt: skip
    frames = probe_frames(300, seed=4)
    try:
        line = collector.said("cannot reach Kafka")
        assert "retrying" in line
        wait_health(port, 503, body="Kafka broker unreachable\n")
        veth.send(frames)
        assert collector.counters_when(lambda c: c["decoded"] == 300)["acked"] == 0
        broker.up()
        collector.said("connected to Kafka after")
        assert wait_health(port, 200) == "capturing\n"
        collector.counters_when(lambda c: c["acked"] == 300)
        assert metric(get(f"http://127.0.0.1:{port}/metrics")[1], "ptc_kafka_broker_up") == 1
    finally:
        code = collector.stop()
    assert code == 0
    errors = [e for e in collector.events("error") if "cannot reach Kafka" in e["msg"]]
    assert 1 <= len(errors) <= 3  # rate-limited, not one per attempt
    records = read_topic(broker.bootstrap, topic, 300)
    assert sorted(unique(records)) == sorted(unique(expected_records(frames)))


def test_sigterm_with_the_broker_unresolvable_is_bounded_and_counts_the_loss(veth):
    collector = JsonCollector(
        "--iface", veth.rx_iface, "--brokers", "no-such-broker.invalid:9092", "--connect-timeout", "1",
        "--shutdown-timeout", "2",
    )  # fmt: skip
    collector.said("no-such-broker.invalid:9092")  # resolving fails: said once, and capture goes on
    veth.send(probe_frames(200, seed=6))
    collector.counters_when(lambda c: c["decoded"] == 200)
    stopped = time.monotonic()
    assert collector.stop(signal.SIGTERM) == 0
    assert time.monotonic() - stopped < 10  # --shutdown-timeout 2, then closing: bounded
    total = collector.final()
    assert total["failed"] == 200 and total["acked"] == 0
    assert [e["msg"] for e in collector.events("pipeline")] == [
        "shutdown: of the 200 records held at the stop, 0 acknowledged, "
        "200 not acknowledged within --shutdown-timeout 2 s (failed)"
    ]
    assert any(
        "200 records not acknowledged within --shutdown-timeout 2 s" in e["msg"] for e in collector.events("error")
    )


def test_the_shutdown_line_counts_what_failed_during_the_flush_as_failed(broker, veth):
    """Records the broker refuses while the flush waits are failed, not flushed (it said "400 of 400 flushed")."""
    topic = new_topic(broker.bootstrap, configs={"max.message.bytes": "40000"})  # no message of 100 records fits
    collector = JsonCollector("--iface", veth.rx_iface, "--topic", topic, "--brokers", broker.bootstrap,
                              "--linger-ms", "600000")  # fmt: skip
    collector.counters_when(lambda c: True)
    veth.send(probe_frames(400, seed=11))  # 4 sources: 4 batches of 100, held until the stop
    collector.counters_when(lambda c: c["decoded"] == 400)
    assert collector.stop(signal.SIGTERM) == 0
    total = collector.final()
    assert (total["acked"], total["failed"]) == (0, 400)
    shutdown = [e["msg"] for e in collector.events("pipeline") if e["msg"].startswith("shutdown:")]
    assert shutdown == ["shutdown: of the 400 records held at the stop, 0 acknowledged, 400 failed"]


def test_sigterm_under_load_flushes_every_batch(veth, kafka_broker):
    topic = new_topic(kafka_broker)
    collector = JsonCollector("--iface", veth.rx_iface, "--topic", topic, "--brokers", kafka_broker)
    frames = probe_frames(20_000, seed=7)
    collector.counters_when(lambda c: True)  # capturing
    sender = threading.Thread(target=veth.send, args=(frames,))
    sender.start()
    collector.counters_when(lambda c: c["decoded"] > 2000)  # in the middle of it
    assert collector.stop(signal.SIGTERM) == 0
    sender.join()
    total = collector.final()
    assert total["decoded"] > 2000 and settled(total)
    for line in [e["msg"] for e in collector.events("pipeline")]:  # when some were held at the stop: all flushed
        said = re.fullmatch(r"shutdown: of the ([\d,]+) records held at the stop, ([\d,]+) acknowledged", line)
        assert said is not None, line  # nothing failed, nothing out of time
        held, acked = (int(n.replace(",", "")) for n in said.groups())
        assert acked == held
    assert total["acked"] == total["decoded"] and total["failed"] == total["dropped"] == 0
    records = read_topic(kafka_broker, topic, total["acked"])
    assert len(records) == len(unique(records)) == total["acked"]


def test_a_topic_that_does_not_exist(broker, veth, tmp_path, pcaps):
    replay = subprocess.run(
        [*PTC, "replay", str(pcaps / "encap.pcap"), "--topic", "no-such-topic", "--brokers", broker.bootstrap,
         "--connect-timeout", "2"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert replay.returncode == 1
    assert replay.stderr.splitlines() == [
        f"Error: no topic 'no-such-topic' on Kafka at {broker.bootstrap} within 2 s "
        "(it does not exist and the broker does not create topics on first use?)"
    ]
    collector = JsonCollector("--iface", veth.rx_iface, "--topic", "no-such-topic", "--brokers", broker.bootstrap,
                              "--connect-timeout", "1")  # fmt: skip
    collector.said("no topic 'no-such-topic'")
    time.sleep(3)
    assert collector.proc.poll() is None  # no crash loop: it keeps capturing and trying
    assert collector.stop() == 0


def test_a_message_too_large_for_the_broker(broker, veth, tmp_path):
    topic = new_topic(broker.bootstrap, configs={"max.message.bytes": "40000"})
    capture = write_pcap(tmp_path / "probes.pcap", probe_frames(400, seed=8))
    replay = subprocess.run(
        [*PTC, "replay", str(capture), "--topic", topic, "--brokers", broker.bootstrap, "--compression", "none"],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip  (uncompressed: the default snappy would fit 100 records under the limit)
    assert replay.returncode == 1
    news = [line for line in replay.stderr.splitlines() if line.startswith("Error: ptc replay: ")]  # as it happened
    errors = [line for line in replay.stderr.splitlines() if line.startswith("Error:") and line not in news]
    assert len(news) == 1 and "Kafka refused a message: MessageSizeTooLargeError" in news[0], replay.stderr
    assert len(errors) == 1 and "MessageSizeTooLargeError" in errors[0], replay.stderr
    assert "keep --batch-bytes 16 KiB under the broker's message.max.bytes" in errors[0]
    # small enough batches go through (the client adds up to 16 KiB of its own: see --batch-bytes)
    replay = subprocess.run(
        [*PTC, "replay", str(capture), "--topic", topic, "--brokers", broker.bootstrap, "--batch-bytes", "20000"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert replay.returncode == 0, replay.stderr
    topic = new_topic(broker.bootstrap, configs={"max.message.bytes": "40000"})  # the collector's own
    collector = JsonCollector("--iface", veth.rx_iface, "--topic", topic, "--brokers", broker.bootstrap,
                              "--linger-ms", "20", "--compression", "none")  # fmt: skip
    collector.counters_when(lambda c: True)
    veth.send(probe_frames(400, seed=9))
    stuck = collector.counters_when(lambda c: c["decoded"] == 400 and settled(c))
    assert stuck["failed"] > 0  # counted...
    assert collector.proc.poll() is None  # ...and capture goes on
    # The refused batch left a gap in the idempotent producer's sequence numbers: the producer is renewed,
    # and what comes next is delivered (before, every later message failed with OutOfOrderSequenceNumber).
    later = probe_frames(20, seed=10)
    veth.send(later, rate_pps=10)  # one small message each
    done = collector.counters_when(lambda c: c["decoded"] == 420 and settled(c))
    assert done["acked"] - stuck["acked"] == 20 and done["failed"] == stuck["failed"], (stuck, done)
    assert collector.stop() == 0
    said = [e["msg"] for e in collector.events("error")]
    assert any("not acknowledged" in m for m in said), said
    assert any("Kafka refused a message: MessageSizeTooLargeError" in m and "--batch-bytes" in m for m in said)
    assert len(said) <= 8, said  # a line per kind of trouble, not per message
    records = read_topic(broker.bootstrap, topic, 20 + stuck["acked"])
    assert len(unique(records)) == len(records) and set(unique(expected_records(later))) <= set(unique(records))


def test_an_authorization_failure(broker, veth, pcaps):
    sasl = ["--brokers", f"127.0.0.1:{broker.extra_port}", "--security-protocol", "SASL_PLAINTEXT",
            "--sasl-mechanism", "PLAIN", "--sasl-username", ALICE[0], "--connect-timeout", "3"]  # fmt: skip
    topic = new_topic(broker.bootstrap)
    for password, cause, *extra in [
        ("wrong", "Authentication failed"),
        (ALICE[1], "ClusterAuthorizationFailedError: [Error 31] ClusterAuthorizationFailedError (the idempotent "
         "producer needs IdempotentWrite on the cluster: grant it, or --no-idempotence)"),
        (ALICE[1], f"cannot use topic '{topic}' on Kafka", "--no-idempotence"),
        (ALICE[1], f"TopicAuthorizationFailedError: {topic}", "--no-idempotence"),
    ]:  # fmt: skip
        replay = subprocess.run(
            [*PTC, "replay", str(pcaps / "encap.pcap"), "--topic", topic, *sasl, "--sasl-password", password, *extra],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert replay.returncode == 1
        assert len(replay.stderr.splitlines()) == 1 and cause in replay.stderr, replay.stderr
        assert password not in replay.stderr
    collector = JsonCollector("--iface", veth.rx_iface, "--topic", topic, *sasl, "--sasl-password", ALICE[1])
    collector.said("ClusterAuthorizationFailedError")
    time.sleep(3)
    assert collector.proc.poll() is None
    assert collector.stop() == 0
    assert ALICE[1] not in "\n".join(collector.lines)


def test_replay_interrupted_while_the_broker_is_away_says_what_it_lost(restarts, tmp_path):
    """Ctrl-C on a replay blocked on a broker that is gone: bounded, and the summary adds up."""
    replay, _, _ = replay_until_the_broker_goes(restarts, tmp_path, seed=6)
    try:
        time.sleep(2)
        replay.send_signal(signal.SIGINT)
        started = time.monotonic()
        _, err = replay.communicate(timeout=60)
        assert time.monotonic() - started < 15  # the producer's close is bounded
    finally:
        replay.kill()
    assert replay.returncode == 1, err
    assert "Error: replay interrupted" in err and "Traceback" not in err, err
    counts = {
        label: int(re.search(rf"^{label} +([\d,]+)", err, re.MULTILINE).group(1).replace(",", ""))
        for label in ("probes decoded", "acknowledged", "dropped", "failed")
    }
    unsent = int(
        re.search(r"replay interrupted: ([\d,]+) decoded records not handed to Kafka", err).group(1).replace(",", "")
    )
    assert counts["failed"] > 0
    assert counts["acknowledged"] + counts["dropped"] + counts["failed"] + unsent == counts["probes decoded"], counts
