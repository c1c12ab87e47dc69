"""Kafka settings: option checks (usage errors, one line), aiokafka arguments, secrets kept out of output."""

from __future__ import annotations

import ssl

import pytest
from click.testing import CliRunner

from pt_collector.cli.main import main
from pt_collector.kafka import client as kafka
from pt_collector.kafka.client import Cluster, KafkaConfigError, ProducerSettings, Security

CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def run(*args: object, env: dict[str, str] | None = None) -> object:
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("Error")]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["-o", "-", "--topic", "t"], "Error: --topic: Kafka options, but --output writes a file"),
        (["-o", "-", "--format", "msgpack", "-v"], "Error: --format: Kafka options, but --output"),
        (["--acks", "1", "--idempotence"], "Error: --idempotence needs --acks all"),
        (["--security-protocol", "SASL_SSL"], "Error: SASL_SSL needs --sasl-username and --sasl-password"),
        (["--sasl-username", "u"], "Error: SASL credentials need --security-protocol SASL_PLAINTEXT or SASL_SSL"),
        (["--ssl-cafile", CA_BUNDLE], "Error: --ssl-* files need --security-protocol SSL or SASL_SSL"),
        (["--batch-bytes", "10"], "Error: Invalid value for '--batch-bytes'"),
        (["--when-full", "wait"], "Error: Invalid value for '--when-full'"),
        (
            ["--topic", "probes from lab"],
            "Error: Invalid value for '-t' / '--topic' (env var: 'PTC_TOPIC'): a Kafka topic name is 1 to 249",
        ),
    ],
)
def test_replay_usage_errors(pcaps, args, error):
    to_kafka = [] if "-o" in args else ["--brokers", "127.0.0.1:1", "--connect-timeout", "0.2"]
    result = run("replay", pcaps / "encap.pcap", *args, *to_kafka)
    assert result.exit_code == 2
    assert len(error_lines(result)) == 1 and error_lines(result)[0].startswith(error)


def test_missing_codec_is_one_line(pcaps, monkeypatch):
    monkeypatch.setitem(kafka.CODECS, "zstd", lambda: False)
    result = run("replay", pcaps / "encap.pcap", "--compression", "zstd", "--topic", "t")
    assert result.exit_code == 2
    assert error_lines(result) == [
        "Error: --compression zstd needs the cramjam package: pip install 'pt-collector[zstd]'"
    ]
    assert "Traceback" not in result.output


def test_the_password_never_shows(pcaps):
    env = {"PTC_SASL_PASSWORD": "hunter2-secret"}
    help_text = run("replay", "--help", env=env).output
    assert "PTC_SASL_PASSWORD" in help_text and "hunter2" not in help_text
    result = run(
        "replay", pcaps / "encap.pcap", "--security-protocol", "SASL_PLAINTEXT", "--sasl-username", "ptc",
        "--brokers", "127.0.0.1:1", "--connect-timeout", "0.2", env=env,
    )  # fmt: skip
    assert result.exit_code == 1
    assert "hunter2" not in result.output + result.stderr
    assert "hunter2" not in repr(
        Security("SASL_SSL", sasl_username="u", sasl_password="hunter2", ssl_password="hunter2")
    )


def test_consume_has_the_cluster_options_and_no_producer_ones():
    text = run("consume", "--help").output
    for option in ("--brokers", "--from-beginning", "--max", "--timeout", "--security-protocol", "--ssl-cafile"):
        assert option in text
    assert "--batch-size" not in text


def test_replay_help_names_the_defaults():
    text = run("replay", "--help").output
    for words in ("pt-probes", "127.0.0.1:9092", "--when-full", "block", "--max-pending", "200000", "Kafka", "snappy"):
        assert words in text


def test_producer_arguments():
    assert ProducerSettings().producer_options() == {
        "acks": "all",
        "enable_idempotence": True,
        "compression_type": "snappy",
        "max_batch_size": 900 * 1024 + 16 * 1024,
        "max_request_size": 1024 * 1024,
        "linger_ms": 0,
    }
    relaxed = ProducerSettings(acks="1", compression="gzip", max_value_bytes=4 * 1024 * 1024).producer_options()
    assert relaxed["acks"] == 1 and relaxed["enable_idempotence"] is False
    assert relaxed["compression_type"] == "gzip"
    assert relaxed["max_request_size"] == 4 * 1024 * 1024 + kafka.REQUEST_OVERHEAD
    assert ProducerSettings(acks="0", idempotence=False).producer_options()["acks"] == 0


def test_cluster_arguments_plaintext_sasl_and_tls():
    assert Cluster(" a:1, b:2 ").client_options() == {
        "bootstrap_servers": ["a:1", "b:2"],
        "client_id": "ptc",
        "security_protocol": "PLAINTEXT",
    }
    security = Security("SASL_SSL", "SCRAM-SHA-512", "ptc", "pw", ssl_cafile=CA_BUNDLE, ssl_check_hostname=False)
    options = Cluster("a:1", security).client_options()
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("ptc", "pw")
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["ssl_context"].check_hostname is False
    assert Cluster("a:1", Security("SSL")).client_options()["ssl_context"].check_hostname is True


def test_unusable_tls_files_are_a_config_error(tmp_path):
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(KafkaConfigError, match="TLS setup failed"):
        Cluster("a:1", Security("SSL", ssl_cafile=str(junk))).client_options()
    with pytest.raises(KafkaConfigError, match="no broker address"):
        Cluster(" , ").client_options()
