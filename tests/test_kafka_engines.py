"""Both engines into the real broker: the same capture gives the same Kafka messages, to the byte.

The native engine's Kafka path cuts its messages from records already encoded per source node
(kafka.message.SourceGroups); the pure engine's from Record objects (build_messages). With the batches
closed by --batch-size and --batch-bytes only (a linger longer than the run, room for every record), the
two must give the same messages: same keys, same headers, same values, in the same order per key.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from test_kafka_delivery import bundled, file_lines, kcat_messages, new_topic

from pt_collector import decode_message
from pt_collector.cli.main import main
from pt_collector.codec.record import to_json_lines
from pt_collector.pipeline import engine as engines

pytestmark = pytest.mark.skipif(not engines.NATIVE, reason="the native engine is not built")


def replay_with(engine: str, *args: object) -> str:
    result = CliRunner().invoke(main, ["replay", *map(str, args)], env={"PTC_ENGINE": engine}, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert f"engine          {engine}" in result.stderr
    return result.stderr


def per_key(messages: list[tuple[int, bytes, dict[str, bytes], bytes]]) -> dict[bytes, list[tuple[dict, bytes]]]:
    keyed: dict[bytes, list[tuple[dict, bytes]]] = {}
    for _, key, headers, value in messages:
        keyed.setdefault(key, []).append((headers, value))
    return keyed


@pytest.mark.parametrize(("fmt", "compression"), [("json", "none"), ("msgpack", "zstd"), ("json", "lz4")])
def test_both_engines_send_the_same_messages(kafka_broker, pcaps, tmp_path, fmt, compression):
    capture = tmp_path / "traffic.pcap"
    assert CliRunner().invoke(main, ["generate", str(capture), "--count", "6000", "--sources", "5"]).exit_code == 0
    files = [capture, *bundled(pcaps)]
    expected = file_lines(*files, "--tts-shift", 18)
    options = (
        "--tts-shift", 18, "--brokers", kafka_broker, "--format", fmt, "--compression", compression,
        "--batch-size", 300, "--batch-bytes", 50_000, "--linger-ms", 600_000, "--max-pending", 1_000_000,
    )  # fmt: skip
    topics = {}
    for engine in ("native", "python"):
        topics[engine] = new_topic(kafka_broker)
        stderr = replay_with(engine, *files, "--topic", topics[engine], *options)
        assert f"acknowledged    {len(expected):,}" in stderr
    native, pure = (per_key(kcat_messages(kafka_broker, topics[e])) for e in ("native", "python"))
    assert native == pure  # same keys; per key the same messages in the same order: headers and values
    values = [value for messages in native.values() for _, value in messages]
    assert max(map(len, values)) <= 50_000 < sum(map(len, values))  # the byte limit cut them
    records = [r for messages in native.values() for headers, value in messages for r in decode_message(value, headers)]
    assert sorted(to_json_lines(records).splitlines()) == sorted(expected)
