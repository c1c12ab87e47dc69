"""Settings from a TOML file and PTC_* variables: precedence, checks, `ptc config check`, secrets kept out."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from pt_collector import Decoder
from pt_collector.capture.pcap import read_capture
from pt_collector.cli.main import main
from pt_collector.codec.record import from_json_lines
from pt_collector.ops.config import configurable, option_keys

SECRET = "hunter2-secret"


@pytest.fixture(autouse=True)
def no_ptc_environment(monkeypatch):
    """The tests say which PTC_* variables are set; the developer's own must not leak in."""
    for name in [name for name in os.environ if name.startswith("PTC_")]:
        monkeypatch.delenv(name)


def run(*args: object, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


def write(tmp_path, text: str, name: str = "ptc.toml"):
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o600)
    return path


def checked(path, env: dict[str, str] | None = None) -> tuple[dict, dict[str, dict[str, str]]]:
    """`ptc config check`: the settings it prints (TOML) and each one's origin comment."""
    result = run("config", "check", path, env=env)
    assert result.exit_code == 0, result.output
    origins: dict[str, dict[str, str]] = {}
    table = None
    for line in result.stdout.splitlines():
        if line.startswith("["):
            table = origins.setdefault(line.split("]")[0][1:], {})
        elif "=" in line and table is not None:
            table[line.split("=")[0].strip()] = line.rsplit("# ", 1)[-1]
    return tomllib.loads(result.stdout), origins


# ---------------------------------------------------------------- precedence


def replayed(pcaps, *args: object, env: dict[str, str] | None = None) -> list:
    result = run(*args, env=env)
    assert result.exit_code == 0, result.output
    return from_json_lines(result.stdout.encode())


def decoded(pcap, tts_shift: int | None) -> list:
    decoder = Decoder(tts_shift)
    return [r for linktype, ns, frame in read_capture(pcap) if (r := decoder.decode(frame, ns, linktype))]


def test_tts_shift_flag_over_environment_over_file_over_default(pcaps, tmp_path):
    pcap = pcaps / "encap.pcap"
    by_shift = {shift: decoded(pcap, shift) for shift in (None, 16, 17, 18)}
    assert len({repr(records) for records in by_shift.values()}) == 4  # each layer shows
    config = write(tmp_path, "tts_shift = 16\n[replay]\noutput = '-'\nquiet = true\n")
    replay = ("replay", pcap)
    assert replayed(pcaps, *replay, "-o", "-") == by_shift[None]
    assert replayed(pcaps, "--config", config, *replay) == by_shift[16]
    assert replayed(pcaps, "--config", config, *replay, env={"PTC_TTS_SHIFT": "17"}) == by_shift[17]
    both = {"PTC_TTS_SHIFT": "17", "PTC_CONFIG": str(config)}
    assert replayed(pcaps, *replay, "--tts-shift", "18", env=both) == by_shift[18]


def test_a_command_table_overrides_the_top_level(pcaps, tmp_path):
    config = write(tmp_path, "tts_shift = 16\n[replay]\ntts_shift = 18\n")
    records = replayed(pcaps, "--config", config, "replay", pcaps / "encap.pcap", "-o", "-", "-q")
    assert records == decoded(pcaps / "encap.pcap", 18)
    settings, origins = checked(config)
    assert settings["replay"]["tts_shift"] == 18 and origins["replay"]["tts_shift"] == f"{config}: replay.tts_shift"
    assert settings["generate"]["tts_shift"] == 16 and origins["generate"]["tts_shift"] == f"{config}: tts_shift"


def test_flags_from_the_environment(pcaps):
    env = {"PTC_QUIET": "true", "PTC_OUTPUT": "-"}
    result = run("replay", pcaps / "vlan.pcap", env=env)
    assert result.exit_code == 0 and result.stderr == ""  # quiet: no summary
    assert len(from_json_lines(result.stdout.encode())) == 2
    assert "probes decoded" in run("replay", pcaps / "vlan.pcap", env={"PTC_OUTPUT": "-"}).stderr


def test_kafka_settings_in_every_layer(pcaps, tmp_path):
    """An option that declared its variable (PTC_BROKERS) keeps it, between the flag and the file."""
    config = write(tmp_path, 'brokers = "127.0.0.1:1"\nconnect_timeout = 0.2\n')
    replay = ("--config", config, "replay", pcaps / "encap.pcap")

    def reached(*args: str, env: dict[str, str] | None = None) -> str:
        result = run(*replay, *args, env=env)
        assert result.exit_code == 1
        return result.stderr.split("cannot reach Kafka at ")[1].split(" ")[0]

    assert reached() == "127.0.0.1:1"
    assert reached(env={"PTC_BROKERS": "127.0.0.1:2"}) == "127.0.0.1:2"
    assert reached("--brokers", "127.0.0.1:3", env={"PTC_BROKERS": "127.0.0.1:2"}) == "127.0.0.1:3"


def test_collect_takes_its_interface_from_each_layer(tmp_path):
    """The interface is checked before capture starts: the error names the one collect used."""
    config = write(tmp_path, '[collect]\niface = "nosuch0"\noutput = "-"\n')

    def used(*args: str, env: dict[str, str] | None = None) -> str:
        result = run("--config", config, "collect", *args, env=env)
        assert result.exit_code == 1
        return next(word for word in result.output.split() if word.startswith("nosuch"))

    assert used() == "nosuch0"
    assert used(env={"PTC_IFACE": "nosuch1"}) == "nosuch1"
    assert used("-i", "nosuch2", env={"PTC_IFACE": "nosuch1"}) == "nosuch2"


def test_config_check_shows_each_layer(tmp_path):
    config = write(
        tmp_path,
        'topic = "from-file"\nworkers = 3\n[collect]\niface = "eth1"\nworkers = 4\n[consume]\ntimeout = 2.5\n',
    )
    env = {"PTC_WORKERS": "5", "PTC_BROKERS": "kafka9:9092", "PTC_FORMAT": "msgpack"}
    settings, origins = checked(config, env)
    collect = settings["collect"]
    assert (collect["iface"], collect["workers"], collect["topic"]) == ("eth1", 5, "from-file")
    assert (collect["brokers"], collect["format"], collect["capture"]) == ("kafka9:9092", "msgpack", "ring")
    assert origins["collect"]["workers"] == "PTC_WORKERS"
    assert origins["collect"]["iface"] == f"{config}: collect.iface"
    assert origins["collect"]["capture"] == "default"
    assert settings["consume"]["timeout"] == 2.5 and "workers" not in settings["consume"]
    assert "format" not in settings["consume"]  # consume has no --format: PTC_FORMAT is not its business


def test_config_check_without_a_file_shows_the_environment_and_defaults():
    result = run("config", "check", env={"PTC_TOPIC": "lab"})
    assert result.exit_code == 0
    assert result.stdout.startswith("# no config file")
    assert tomllib.loads(result.stdout)["consume"]["topic"] == "lab"


def test_config_check_reads_the_config_option(tmp_path):
    config = write(tmp_path, "[consume]\ncount = 7\n")
    result = run("--config", config, "config", "check")
    assert result.exit_code == 0 and tomllib.loads(result.stdout)["consume"]["count"] == 7


def test_every_option_has_its_variable():
    for command in configurable(main).values():
        for key, option in option_keys(command).items():
            assert option.envvar == f"PTC_{key.upper()}"
    assert "PTC_<OPTION>" in run("--help").output


# ---------------------------------------------------------------- invalid settings: one line naming the key


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[collect]\nworkers = 0\n", "collect.workers: 0 is not in the range 1<=x<=64"),
        ("tts_shift = 25\n", "tts_shift: 25 is not a TTS shift 0..24 or auto"),
        ("workers = 1.5\n", "workers: 1.5 is not an integer"),
        ("[replay]\nquiet = 'yes'\n", 'replay.quiet: "yes" is not true or false'),
        ("topic = 'probes from lab'\n", "topic: a Kafka topic name is 1 to 249"),
        ("[consume]\nformat = 'json'\n", "consume.format: unknown key (ptc consume has no such option)"),
        (
            "[collect]\nworker = 2\n",
            "collect.worker: unknown key (ptc collect has no such option); did you mean workers?",
        ),
        ("[colect]\nworkers = 2\n", "colect: unknown key; did you mean collect?"),
        ("tts-shift = 18\n", "tts-shift: unknown key; did you mean tts_shift?"),
        ("collect = 3\n", "collect: the settings of `ptc collect` are a table, [collect]"),
        ("[tts_shift_by_source]\n'2001:db8::1/32' = 18\n", "has host bits set"),
        ("[tts_shift_by_source]\n'10.0.0.0/8' = 18\n", 'tts_shift_by_source."10.0.0.0/8": not an IPv6 prefix'),
        ("[tts_shift_by_source]\n'2001:db8::/32' = 30\n", 'tts_shift_by_source."2001:db8::/32": 30 is not a TTS'),
        ("security_protocol = 'TLS'\n", "security_protocol: 'TLS' is not one of"),
        ("ssl_cafile = '/nonexistent/ca.pem'\n", "ssl_cafile: File '/nonexistent/ca.pem' does not exist"),
        ("tts_shift = \n", "not valid TOML: Invalid value (at line 1, column 13)"),
    ],
)
def test_an_invalid_file_is_one_line_naming_the_key(pcaps, tmp_path, text, error):
    config = write(tmp_path, text)
    for args in (["config", "check", config], ["--config", config, "replay", pcaps / "vlan.pcap", "-o", "-"]):
        result = run(*args)
        assert result.exit_code == 2
        assert result.stdout == ""
        assert result.stderr.splitlines() == [result.stderr.strip()]
        assert result.stderr.startswith(f"Error: {config}: ") and error in result.stderr


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"PTC_TTS_SHIFT": "99"}, "Error: PTC_TTS_SHIFT: 99 is not a TTS shift 0..24 or auto"),
        ({"PTC_QUIET": "maybe"}, "Error: PTC_QUIET: 'maybe' is not a valid boolean"),
        ({"PTC_TOPIC": "a/b"}, "Error: PTC_TOPIC: a Kafka topic name is 1 to 249"),
    ],
)
def test_an_invalid_variable_is_one_line_naming_it(pcaps, env, error):
    result = run("replay", pcaps / "vlan.pcap", "-o", "-", env=env)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [result.stderr.strip()] and result.stderr.startswith(error)


def test_a_variable_for_another_command_is_not_checked(pcaps):
    """PTC_WORKERS means nothing to replay: a bad one fails collect, not replay."""
    env = {"PTC_WORKERS": "0"}
    assert run("replay", pcaps / "vlan.pcap", "-o", "-", "-q", env=env).exit_code == 0
    result = run("collect", "-i", "lo", env=env)
    assert result.exit_code == 2 and result.stderr.startswith("Error: PTC_WORKERS: 0 is not in the range 1<=x<=64")


def test_a_missing_config_file_is_one_line(tmp_path):
    result = run("--config", tmp_path / "nope.toml", "consume")
    assert result.exit_code == 2
    assert result.stderr == f"Error: {tmp_path / 'nope.toml'}: cannot read: No such file or directory\n"


# ---------------------------------------------------------------- secrets


SECRETS_FILE = f"""
security_protocol = "SASL_PLAINTEXT"
sasl_mechanism = "SCRAM-SHA-256"
sasl_username = "ptc"
sasl_password = "{SECRET}"
brokers = "127.0.0.1:1"
connect_timeout = 0.2
"""


def test_config_check_hides_secrets_from_the_file_and_the_environment(tmp_path):
    config = write(tmp_path, SECRETS_FILE)
    result = run("config", "check", config, env={"PTC_SSL_PASSWORD": f"{SECRET}-key"})
    assert result.exit_code == 0
    assert SECRET not in result.output
    settings, origins = checked(config, {"PTC_SSL_PASSWORD": f"{SECRET}-key"})
    assert settings["collect"]["sasl_password"] == "***" and settings["collect"]["ssl_password"] == "***"
    assert origins["consume"]["sasl_password"] == f"{config}: sasl_password"
    assert origins["consume"]["ssl_password"] == "PTC_SSL_PASSWORD"
    assert settings["consume"]["sasl_username"] == "ptc"


def test_secrets_from_the_file_never_show_in_a_run(pcaps, tmp_path):
    config = write(tmp_path, SECRETS_FILE)
    for args in (
        ["replay", pcaps / "encap.pcap"],
        ["replay", pcaps / "encap.pcap", "-v"],
        ["consume", "--timeout", "1"],
    ):
        result = run("--config", config, *args)
        assert result.exit_code == 1, result.output
        assert "cannot reach Kafka at 127.0.0.1:1" in result.stderr
        assert SECRET not in result.output
    help_text = run("--config", config, "replay", "--help").output
    assert "PTC_SASL_PASSWORD" in help_text and SECRET not in help_text


def test_an_invalid_secret_is_named_but_not_shown(tmp_path):
    config = write(tmp_path, "sasl_password = 123456789\n")
    result = run("config", "check", config)
    assert result.exit_code == 2
    assert result.stderr == f"Error: {config}: sasl_password: the value is not a string\n"
    broken = write(tmp_path, f'sasl_password = "{SECRET}\n', name="broken.toml")  # unterminated string
    result = run("config", "check", broken)
    assert result.exit_code == 2 and SECRET not in result.output


def test_config_check_warns_when_others_can_read_the_secrets(tmp_path):
    config = write(tmp_path, SECRETS_FILE)
    assert "warning" not in run("config", "check", config).stderr
    config.chmod(0o644)
    result = run("config", "check", config)
    assert result.exit_code == 0
    assert result.stderr == (f"Warning: {config} holds sasl_password and other users can read it: chmod 600 {config}\n")


def test_the_documented_example_is_valid(tmp_path):
    docs = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    example = docs.split("```toml\n", 1)[1].split("```", 1)[0]
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    config = write(tmp_path, example.replace("/etc/ptc/kafka-ca.pem", str(ca)))
    settings, origins = checked(config, {"PTC_WORKERS": "2", "PTC_SASL_PASSWORD": SECRET})
    assert origins["collect"]["sasl_password"] == "PTC_SASL_PASSWORD" and settings["collect"]["sasl_password"] == "***"
    assert settings["collect"]["workers"] == 2 and settings["collect"]["format"] == "msgpack"
    assert settings["replay"]["format"] == "json" and settings["consume"]["timeout"] == 30.0
    assert list(settings["tts_shift_by_source"]) == ["2001:db8:1:42::/64", "2001:db8:1::/48", "2001:db8:2::/48"]
