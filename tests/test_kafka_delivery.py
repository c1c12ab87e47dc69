"""`ptc replay` into the real broker, read back with `ptc consume` and with kcat.

Every test gets its own topic. The records must be exactly those `ptc replay
--output` writes: none missing, none doubled, in order per source node.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from click.testing import CliRunner

from pt_collector import decode_message
from pt_collector.cli.main import main
from pt_collector.codec.record import json_decoder, to_json_lines
from pt_collector.kafka.client import CODECS

try:  # also runs with --noconftest; kafka_fixture shares one broker with the conftest.py import
    from kafka_fixture import kafka_broker
except ImportError:  # tests/ is a package
    from tests.kafka_fixture import kafka_broker  # noqa: F401

KCAT_TIMEOUT_S = 60


def run(*args: str) -> object:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def new_topic(bootstrap: str, partitions: int = 1, configs: dict[str, str] | None = None) -> str:
    topic = f"ptc-test-{uuid.uuid4().hex[:10]}"

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            new = NewTopic(topic, num_partitions=partitions, replication_factor=1, topic_configs=configs or {})
            await admin.create_topics([new])
        finally:
            await admin.close()

    asyncio.run(asyncio.wait_for(create(), 60))
    return topic


def bundled(pcaps: Path) -> list[Path]:
    return sorted(p for p in pcaps.iterdir() if p.suffix in (".pcap", ".pcapng"))


def file_lines(*args: object) -> list[bytes]:
    """What `ptc replay --output -` writes, one JSON line per record."""
    result = run("replay", *args, "--output", "-", "-q")
    assert result.exit_code == 0, result.stderr
    return result.stdout_bytes.splitlines()


def consume_lines(bootstrap: str, topic: str, count: int, *extra: str) -> list[bytes]:
    result = run("consume", "--brokers", bootstrap, "--topic", topic, "--from-beginning", "--max", count, *extra)
    assert result.exit_code == 0, result.stderr
    assert result.stderr.startswith(f"consumed {count:,} records from ")
    return result.stdout_bytes.splitlines()


def kcat_messages(bootstrap: str, topic: str) -> list[tuple[int, bytes, dict[str, bytes], bytes]]:
    """(partition, key, headers, value) of every message, as kcat reads them."""
    kcat = shutil.which("kcat")
    if kcat is None:
        pytest.fail("kcat is not installed (apt-get install -y kcat)", pytrace=False)
    out = subprocess.run(
        [kcat, "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%p %k %S %h\n%s"],
        capture_output=True,
        timeout=KCAT_TIMEOUT_S,
        check=True,
    ).stdout
    messages, at = [], 0
    while at < len(out):
        end = out.index(b"\n", at)
        partition, key, size, headers = out[at:end].decode().split(" ")
        value = out[end + 1 : end + 1 + int(size)]
        at = end + 1 + int(size)
        pairs = dict(h.split("=", 1) for h in headers.split(","))
        messages.append((int(partition), key.encode(), {k: v.encode() for k, v in pairs.items()}, value))
    return messages


def per_source(lines: list[bytes]) -> dict[str, list[bytes]]:
    groups: dict[str, list[bytes]] = {}
    for line in lines:
        groups.setdefault(json_decoder.decode(line).src.addr, []).append(line)
    return groups


def delivery(stderr: str) -> dict[str, int]:
    """The Kafka lines of the replay summary as numbers."""
    found = {}
    for name, label in (
        ("sent", "sent to Kafka"),
        ("acked", "acknowledged"),
        ("dropped", "dropped"),
        ("failed", "failed"),
    ):
        match = re.search(rf"^{label} +([\d,]+)", stderr, re.MULTILINE)
        assert match, stderr
        found[name] = int(match.group(1).replace(",", ""))
    return found


@pytest.mark.parametrize(
    ("fmt", "compression", "acks"), [("json", "none", "all"), ("msgpack", "gzip", "all"), ("json", "gzip", "1")]
)
def test_bundled_captures_round_trip(kafka_broker, pcaps, fmt, compression, acks):
    files = bundled(pcaps)
    expected = file_lines(*files, "--tts-shift", 18)
    topic = new_topic(kafka_broker, partitions=3)
    result = run(
        "replay", *files, "--tts-shift", 18, "--brokers", kafka_broker, "--topic", topic, "--format", fmt,
        "--compression", compression, "--acks", acks, "--batch-size", 7, "--linger-ms", 5,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert delivery(result.stderr) == {"sent": len(expected), "acked": len(expected), "dropped": 0, "failed": 0}
    assert f"probes decoded  {len(expected):,}" in result.stderr

    consumed = consume_lines(kafka_broker, topic, len(expected), "--timeout", 30)
    assert sorted(consumed) == sorted(expected)  # the same bytes: none missing, none doubled
    assert per_source(consumed) == per_source(expected)  # in order per source node

    messages = kcat_messages(kafka_broker, topic)
    records_by_kcat = []
    partition_of: dict[bytes, set[int]] = {}
    for partition, key, headers, value in messages:
        records = decode_message(value, headers)
        assert headers == {"ptc-schema": b"1", "ptc-format": fmt.encode(), "ptc-count": str(len(records)).encode()}
        assert 1 <= len(records) <= 7
        assert {r.src.addr.encode() for r in records} == {key}
        partition_of.setdefault(key, set()).add(partition)
        records_by_kcat += records
    assert all(len(parts) == 1 for parts in partition_of.values())  # a source's messages share one partition
    kcat_lines = to_json_lines(records_by_kcat).splitlines()
    assert sorted(kcat_lines) == sorted(expected)
    assert per_source(kcat_lines) == per_source(expected)


@pytest.mark.parametrize("compression", ["snappy", "lz4", "zstd"])
def test_codecs_from_the_extras_round_trip(kafka_broker, pcaps, compression):
    if not CODECS[compression]():
        pytest.fail("cramjam is not installed (make setup installs the dev extra)", pytrace=False)
    expected = file_lines(pcaps / "encap.pcap")
    topic = new_topic(kafka_broker)
    result = run(
        "replay", pcaps / "encap.pcap", "--brokers", kafka_broker, "--topic", topic, "--compression", compression,
        "--format", "msgpack",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    consumed = consume_lines(kafka_broker, topic, len(expected), "--timeout", 30)
    assert sorted(consumed) == sorted(expected)
    assert per_source(consumed) == per_source(expected)


def test_a_large_capture_with_split_batches(kafka_broker, tmp_path):
    capture = tmp_path / "big.pcap"
    assert run("generate", capture, "--count", 20_000, "--sources", 6).exit_code == 0
    expected = file_lines(capture, "--tts-shift", 18)
    topic = new_topic(kafka_broker, partitions=2)
    result = run(
        "replay", capture, "--tts-shift", 18, "--brokers", kafka_broker, "--topic", topic, "--format", "msgpack",
        "--batch-bytes", 40_000, "--max-pending", 3000,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    sent = delivery(result.stderr)
    assert sent == {"sent": 20_000, "acked": 20_000, "dropped": 0, "failed": 0}
    messages = int(re.search(r"records in ([\d,]+) messages", result.stderr).group(1).replace(",", ""))
    assert messages >= 20_000 * 507 // 40_000  # msgpack records are ~500 bytes: the byte limit cut the batches
    consumed = consume_lines(kafka_broker, topic, 20_000, "--timeout", 30)
    assert sorted(consumed) == sorted(expected)
    assert per_source(consumed) == per_source(expected)
    assert all(len(value) <= 40_000 for *_, value in kcat_messages(kafka_broker, topic))


def test_drop_policy_counts_what_it_drops(kafka_broker, tmp_path):
    capture = tmp_path / "burst.pcap"
    run("generate", capture, "--count", 5000, "--sources", 3)
    expected = file_lines(capture)
    topic = new_topic(kafka_broker)
    result = run(
        "replay", capture, "--brokers", kafka_broker, "--topic", topic, "--max-pending", 200, "--when-full", "drop",
        "--batch-size", 50,
    )  # fmt: skip
    assert result.exit_code == 1  # not every decoded record reached the broker
    counts = delivery(result.stderr)
    assert counts["dropped"] > 0 and counts["failed"] == 0
    assert counts["sent"] + counts["dropped"] == 5000
    assert counts["acked"] == counts["sent"]
    assert f"Error: {counts['dropped']:,} records dropped: --max-pending 200" in result.stderr
    result = run("consume", "--brokers", kafka_broker, "--topic", topic, "--from-beginning", "--timeout", 1.5, "-q")
    assert result.exit_code == 0
    consumed = result.stdout_bytes.splitlines()
    assert len(consumed) == counts["acked"] == len(set(consumed))  # exactly what was acknowledged, no doubles
    for source, lines in per_source(consumed).items():  # what was kept stays in order
        assert _is_subsequence(lines, per_source(expected)[source])


def _is_subsequence(part: list[bytes], whole: list[bytes]) -> bool:
    it = iter(whole)
    return all(line in it for line in part)


def test_consume_reports_foreign_messages_and_a_short_read(kafka_broker, pcaps):
    topic = new_topic(kafka_broker)
    assert run("replay", pcaps / "vlan.pcap", "--brokers", kafka_broker, "--topic", topic, "-q").exit_code == 0
    subprocess.run(
        ["kcat", "-P", "-b", kafka_broker, "-t", topic], input=b"hello\n", timeout=KCAT_TIMEOUT_S, check=True
    )
    assert run("replay", pcaps / "raw-ipv6.pcap", "--brokers", kafka_broker, "--topic", topic, "-q").exit_code == 0
    result = run("consume", "--brokers", kafka_broker, "--topic", topic, "--from-beginning", "--max", 10,
                 "--timeout", 1.5)  # fmt: skip
    assert result.exit_code == 1
    assert len(result.stdout_bytes.splitlines()) == 4
    assert result.stderr.splitlines() == [
        "consumed 4 records from 3 messages",
        "Error: partition 0 offset 1: not a ptc schema 1 message (no ptc-schema header)",
        "Error: 4 of 10 records before --timeout",
    ]


def test_consume_without_from_beginning_reads_only_new_messages(kafka_broker, pcaps):
    topic = new_topic(kafka_broker)
    assert run("replay", pcaps / "vlan.pcap", "--brokers", kafka_broker, "--topic", topic, "-q").exit_code == 0
    result = run("consume", "--brokers", kafka_broker, "--topic", topic, "--timeout", 1)
    assert result.exit_code == 0
    assert result.stdout_bytes == b""
    assert result.stderr == "consumed 0 records from 0 messages\n"


def test_consume_stops_on_ctrl_c_with_its_summary(kafka_broker, pcaps):
    topic = new_topic(kafka_broker)
    assert run("replay", pcaps / "encap.pcap", "--brokers", kafka_broker, "--topic", topic, "-q").exit_code == 0
    command = [sys.executable, "-m", "pt_collector.cli.main", "consume", "--brokers", kafka_broker, "--topic", topic]
    reader = subprocess.Popen(
        [*command, "--from-beginning"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background shell ignores it
    )  # fmt: skip
    try:
        lines = [reader.stdout.readline() for _ in range(40)]  # every record, then it waits for more
        reader.send_signal(signal.SIGINT)
        rest, err = reader.communicate(timeout=30)
    finally:
        reader.kill()
    assert reader.returncode == 0
    assert len(lines) == 40 and all(line.endswith(b"\n") for line in lines) and rest == b""
    assert err.decode().splitlines() == ["consumed 40 records from 4 messages"]  # one per source node


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("command", ["replay", "consume"])
def test_unreachable_broker_is_one_line_and_exit_1(pcaps, command):
    port = closed_port()
    args = [pcaps / "encap.pcap"] if command == "replay" else []
    started = time.monotonic()
    result = run(command, *args, "--brokers", f"127.0.0.1:{port}", "--connect-timeout", 1.5)
    elapsed = time.monotonic() - started
    assert result.exit_code == 1
    assert result.stdout == ""
    where = f"127.0.0.1:{port} within 1.5 s (--connect-timeout)"
    assert result.stderr.splitlines() == [f"Error: cannot reach Kafka at {where}: [Errno 111] Connection refused"]
    assert 1.4 < elapsed < 10  # it retried until the connect timeout, no longer
