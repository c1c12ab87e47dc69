"""Output and input errors, as an operator meets them: one line, the documented exit status, the counts.

An output that cannot be written (/dev/full, a full filesystem, a closed
stdout) is a runtime failure, exit status 1, with what was written and what
was not counted; a bad --brokers list or a config file that is not UTF-8 is
a usage error, exit status 2; `ptc consume` of a topic that does not exist
says so, exit status 1, and does not create it. Through the real command
line, a real tmpfs filled up, the real Kafka broker and a real veth pair.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from click.testing import CliRunner
from kafka_fixture import Broker
from test_collect_veth import Collector, frames_to_send
from test_worker_restart import probes as probes_from_16_sources

from pt_collector.cli.main import main
from pt_collector.codec.record import from_json_lines

PTC = [sys.executable, "-m", "pt_collector.cli.main"]
NO_SPACE = "No space left on device"


def run(*args: object, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


def ptc(*args: object, shell_suffix: str = "", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """ptc as a shell runs it (`shell_suffix`: redirections such as `>&-`)."""
    command = " ".join([*PTC, *(str(a) for a in args)]) + shell_suffix
    return subprocess.run(command, shell=True, capture_output=True, text=True, timeout=timeout, check=False)


def summary(stderr: str) -> dict[str, int]:
    """The replay summary's counters by label."""
    counts = {}
    for line in stderr.splitlines():
        if match := re.fullmatch(r"([a-z][a-z ]*?)\s{2,}([\d,]+)", line):
            counts[match[1]] = int(match[2].replace(",", ""))
    return counts


def final_counts(line: str) -> dict[str, int]:
    """The counters of ptc collect's last line: probes, sent, acked, dropped, failed."""
    return {
        word: int(n.replace(",", "")) for n, word in re.findall(r"([\d,]+) (probes|sent|acked|dropped|failed)", line)
    }


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("io-errors") / "probes.pcap"
    assert run("generate", path, "--count", 3000).exit_code == 0
    return path


@pytest.fixture
def full_fs(tmp_path) -> Iterator[Path]:
    """A 64 KiB tmpfs: a filesystem that fills up after about a hundred records."""
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


# ---------------------------------------------------------------- replay: an output that cannot be written


def test_replay_into_dev_full_is_one_line_exit_1_and_counted(capture):
    result = ptc("replay", capture, "--output", "/dev/full")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    counts = summary(result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    not_written = counts["not written"]
    assert errors == [
        f"Error: cannot write /dev/full: {NO_SPACE}: replay stopped, {not_written:,} decoded records not written"
    ]
    assert counts["written"] == 0 and not_written == counts["probes decoded"] > 0


def test_replay_into_a_full_filesystem_keeps_whole_records_and_counts_the_rest(capture, full_fs, tmp_path):
    out = full_fs / "out.jsonl"
    result = ptc("replay", capture, "--output", out)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    counts = summary(result.stderr)
    assert f"Error: cannot write {out}: {NO_SPACE}: replay stopped" in result.stderr
    written = from_json_lines(out.read_bytes())  # whole records only: the line the disk cut was taken back out
    assert len(written) == counts["written"] > 0
    assert counts["written"] + counts["not written"] == counts["probes decoded"]
    everything = from_json_lines(ptc("replay", capture, "-o", "-", "-q").stdout.encode())
    assert written == everything[: len(written)]  # the records before the full disk, in order


def test_replay_to_stdout_on_dev_full(capture):
    result = ptc("replay", capture, "-o", "-", shell_suffix=" >/dev/full")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    assert f"Error: cannot write stdout: {NO_SPACE}: replay stopped" in result.stderr
    assert summary(result.stderr)["written"] == 0


@pytest.mark.parametrize(
    "args",
    [
        ["replay", "{capture}", "-o", "-"],
        ["consume", "--brokers", "127.0.0.1:9"],
        ["collect", "--iface", "lo", "-o", "-"],
    ],
    ids=["replay", "consume", "collect"],
)
def test_closed_stdout_is_one_line_and_exit_1(capture, args):
    result = ptc(*(a.format(capture=capture) for a in args), shell_suffix=" >&-")
    assert result.returncode == 1
    assert result.stderr.splitlines() == ["Error: cannot write stdout: it is closed (give --output FILE)"]


REPORTS = {
    "paths": ["paths", "{capture}"],
    "rules-test": ["rules", "test", "--config", "{rules}", "{capture}"],
    "rules-summary": ["rules", "test", "--summary", "--config", "{rules}", "{capture}"],
    "config-check": ["config", "check", "{rules}"],
}


@pytest.mark.parametrize(
    "redirect, reason", [(">/dev/full", NO_SPACE), (">&-", "it is closed")], ids=["full", "closed"]
)
@pytest.mark.parametrize("command", list(REPORTS))
def test_the_reports_on_stdout_fail_in_one_line(capture, tmp_path, command, redirect, reason):
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rules]]\nname = "all"\nsrc = "::/0"\nfunction = "pass"\n')
    args = [arg.format(capture=capture, rules=rules) for arg in REPORTS[command]]
    assert ptc(*args, shell_suffix=" >/dev/null").returncode == 0
    result = ptc(*args, shell_suffix=f" {redirect}")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"Error: cannot write stdout: {reason}"]


@pytest.mark.parametrize("closed", [">&-", "<&-"], ids=["stdout", "stdin"])
def test_a_closed_standard_descriptor_does_not_crash_a_replay_into_kafka(capture, kafka_broker, closed):
    """Closed, fd 0 or 1 went to the first socket opened, and uvloop aborted the process when it closed it."""
    topic = f"ptc-closed-{uuid.uuid4().hex[:10]}"
    result = ptc("replay", capture, "--brokers", kafka_broker, "--topic", topic, shell_suffix=f" {closed}")
    assert result.returncode == 0, result.stderr
    assert summary(result.stderr)["acknowledged"] == 3000


# ---------------------------------------------------------------- usage errors: --brokers, the config file


@pytest.mark.parametrize(
    "brokers, reason",
    [
        ("localhost:abc", "'localhost:abc': the port 'abc' is not a number 1..65535"),
        ("localhost:70000", "'localhost:70000': the port '70000' is not a number 1..65535"),
        ("k1:9092,localhost:", "'localhost:': no port after the colon"),
        (":9092", "':9092': no host name"),
        ("[::1]x", "'[::1]x': write an IPv6 address with a port as [ADDRESS]:PORT"),
        ("[kafka]:9092", "'[kafka]:9092': 'kafka' is not an IPv6 address"),
        ("a:1:2", "'a:1:2' is neither HOST:PORT nor an IPv6 address"),
        (" , ", "no broker address given (HOST:PORT,...)"),
    ],
)
def test_a_bad_broker_list_is_a_usage_error(capture, brokers, reason):
    result = run("replay", capture, "--brokers", brokers)
    assert result.exit_code == 2, result.output
    error = f"Error: Invalid value for '-b' / '--brokers' (env var: 'PTC_BROKERS'): {reason}"
    assert result.stderr.splitlines()[-1] == error


@pytest.mark.parametrize("command", [["consume"], ["collect", "--iface", "lo"]], ids=["consume", "collect"])
def test_consume_and_collect_check_the_broker_list_too(command):
    """Before, collect took localhost:abc and ran for ever without a word: a subprocess, which cannot hang the tests."""
    result = ptc(*command, "--brokers", "localhost:abc", timeout=30)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "Error: Invalid value for '-b' / '--brokers' (env var: 'PTC_BROKERS'): "
        "'localhost:abc': the port 'abc' is not a number 1..65535"
    )


def test_a_bad_broker_list_from_the_environment_or_the_file_names_where(tmp_path):
    config = tmp_path / "ptc.toml"
    config.write_text('[replay]\nbrokers = "localhost:abc"\n')
    result = run("config", "check", config)
    assert result.exit_code == 2
    reason = "'localhost:abc': the port 'abc' is not a number 1..65535"
    assert result.output.splitlines() == [f"Error: {config}: replay.brokers: {reason}"]
    result = run("config", "check", env={"PTC_BROKERS": "k1:9092,k2:x"})
    assert result.exit_code == 2
    assert result.output.splitlines() == ["Error: PTC_BROKERS: 'k2:x': the port 'x' is not a number 1..65535"]


def test_good_broker_lists_pass():
    for brokers in ["k1:9092,k2:9093", "kafka", "[::1]:9092", "::1", "[fd00::1]", "10.0.0.1:9092 , k2:1"]:
        result = run("config", "check", env={"PTC_BROKERS": brokers})
        assert result.exit_code == 0, (brokers, result.output)


@pytest.mark.parametrize("command", [["replay", "{capture}", "-o", "-"], ["config", "check"]])
def test_a_config_file_that_is_not_utf8_is_one_line_and_exit_2(capture, tmp_path, command):
    config = tmp_path / "latin1.toml"
    config.write_bytes('[replay]\ntopic = "caf\xe9"\n'.encode("latin-1"))
    result = ptc("--config", config, *(a.format(capture=capture) for a in command))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"Error: {config}: not valid TOML: not UTF-8 text, byte 0xe9 at offset 21 (line 2)"
    ]


# ---------------------------------------------------------------- consume: a topic that does not exist


def topics_of(bootstrap: str) -> set[str]:
    async def topics() -> set[str]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await consumer.start()
        try:
            return await consumer.topics()
        finally:
            await consumer.stop()

    return asyncio.run(asyncio.wait_for(topics(), 60))


def consume_missing(bootstrap: str) -> tuple[subprocess.CompletedProcess[str], str]:
    topic = f"ptc-missing-{uuid.uuid4().hex[:10]}"
    result = ptc("consume", "--brokers", bootstrap, "--topic", topic, "--timeout", 3, "--connect-timeout", 5)
    return result, topic


def test_consume_of_a_missing_topic_says_so_and_does_not_create_it(kafka_broker):
    """The test broker creates topics on first use (auto.create.topics.enable=true): consume must not."""
    result, topic = consume_missing(kafka_broker)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"Error: no topic '{topic}' on Kafka at {kafka_broker} (ptc consume does not create topics)"
    ]
    assert topic not in topics_of(kafka_broker)


@pytest.fixture(scope="module")
def no_auto_create_broker(tmp_path_factory, kafka_broker) -> Iterator[str]:  # kafka_broker: the jars are fetched
    broker = Broker(tmp_path_factory.mktemp("no-auto-create-kafka"), "auto.create.topics.enable=false\n")
    broker.up()
    try:
        yield broker.bootstrap
    finally:
        broker.down()


def test_consume_of_a_missing_topic_is_not_an_unreachable_broker(no_auto_create_broker):
    result, topic = consume_missing(no_auto_create_broker)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"Error: no topic '{topic}' on Kafka at {no_auto_create_broker} (ptc consume does not create topics)"
    ]


# ---------------------------------------------------------------- collect: an output that cannot be written


def stops_by_itself(collector: Collector, timeout_s: float) -> int:
    """The exit status of a collector that ends without a signal; one still running is stopped, and fails the test."""
    try:
        code = collector.proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        collector.stop()
        raise AssertionError(f"still running after {timeout_s} s; it said: {collector.lines[-6:]}") from None
    collector._reader.join(timeout=5)
    return code


def test_collect_into_dev_full_stops_with_one_line_exit_1_and_the_counts(veth):
    probes, _ = frames_to_send(300)
    collector = Collector("--iface", veth.rx_iface, "--output", "/dev/full")
    collector.wait_capturing(veth.rx_iface)
    veth.send(probes)
    assert stops_by_itself(collector, 30) == 1
    lines = collector.lines
    assert not any("Traceback" in line for line in lines), lines
    final, decoded = final_counts(lines[-1]), final_counts(lines[-1])["probes"]
    # Capture stops at the first refused batch: frames still in ring blocks the kernel had not handed over by
    # then are not read (the kernel's received count has them), so `decoded` may be less than 300.
    assert "stopped:" in lines[-1] and 0 < decoded <= 300, lines[-1]
    assert (final["sent"], final["acked"], final["dropped"], final["failed"]) == (decoded, 0, 0, decoded)
    error = f"cannot write /dev/full: {NO_SPACE}: capture stopped, {decoded:,} decoded records not written"
    assert [line for line in lines if NO_SPACE in line] == [f"Error: ptc collect {veth.rx_iface}: {error}"]


def test_collect_workers_on_a_full_filesystem_stop_counted_without_restarts(veth, full_fs):
    out = full_fs / "out.jsonl"
    collector = Collector("--iface", veth.rx_iface, "--output", str(out), "--workers", "2")
    collector.wait_capturing(veth.rx_iface)
    veth.send(probes_from_16_sources(1000, seed=5))  # about a tenth fits
    assert stops_by_itself(collector, 60) == 1  # no restart loop
    lines = collector.lines
    assert not any("Traceback" in line or "restarting" in line for line in lines), lines
    assert any("stopped: its output cannot be written: not restarted, stopping the others" in line for line in lines)
    assert any(f"cannot write {out}: {NO_SPACE}: capture stopped" in line for line in lines), lines
    final = final_counts(lines[-1])
    assert "stopped:" in lines[-1] and "worker restarts" not in lines[-1], lines[-1]
    assert final["acked"] == len(from_json_lines(out.read_bytes())) > 0  # whole records, each counted
    assert final["failed"] > 0 and final["acked"] + final["failed"] == final["sent"] == final["probes"]
