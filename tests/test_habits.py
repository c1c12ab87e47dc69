"""Habits operators bring from tcpdump and kcat, through the real command line (issue 13: items 1, 3, 6, 7, 8).

Replay to stdout unless a Kafka destination is set (into the real broker when one is), the short flags with
one meaning each, -c / -w / -C and a trailing filter expression over a real veth pair, --config anywhere, the
live table's columns and Kafka line, every option's help and variable, the man page, `make demo`'s stdout,
and one error form everywhere.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from test_collect_veth import CollectProcess, expected_records, frames_to_send, without_capture_time

from pt_collector.capture.pcap import read_capture
from pt_collector.cli.main import main
from pt_collector.cli.manpage import render
from pt_collector.codec.record import Record, from_json_lines
from pt_collector.ops.config import commands_of

ROOT = Path(__file__).resolve().parent.parent
PTC = [sys.executable, "-m", "pt_collector.cli.main"]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the developer's own PTC_* variables, plus `extra`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("PTC_")}
    return {**env, **extra}


def ptc(*args: object, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*PTC, *map(str, args)], capture_output=True, env=env or clean_env(), timeout=timeout, check=False
    )


def stderr_of(done: subprocess.CompletedProcess) -> str:
    return done.stderr.decode()


def replayed_lines(pcap: Path, *args: object) -> list[bytes]:
    done = ptc("replay", pcap, "-o", "-", "-q", *args)
    assert done.returncode == 0, stderr_of(done)
    return done.stdout.splitlines()


def in_order(records: list[Record]) -> list[Record]:
    """Records by source and sequence: Kafka keeps the order per source (partition), not across them."""
    return sorted(records, key=lambda r: (r.src.addr, r.session_id, r.sequence))


# ---------------------------------------------------------------- item 1: where replay's records go


def test_replay_without_a_kafka_destination_writes_json_lines_to_stdout(pcaps):
    started = time.monotonic()
    done = ptc("replay", pcaps / "encap.pcap", "--tts-shift", "18")
    assert done.returncode == 0, stderr_of(done)
    assert time.monotonic() - started < 60  # no wait for a broker: it never asked one (generous: a shared CPU)
    assert done.stdout.splitlines() == replayed_lines(pcaps / "encap.pcap", "--tts-shift", "18")
    assert len(done.stdout.splitlines()) == 40
    assert "Kafka" not in stderr_of(done) and "written         40" in stderr_of(done)


def test_replay_help_says_when_it_goes_to_kafka():
    text = ptc("replay", "--help").stdout.decode()
    assert "JSON lines on stdout by default" in text
    assert "PTC_TOPIC or PTC_BROKERS" in re.sub(r"\s+", " ", text)
    assert "a [[rules]] topic" in re.sub(r"\s+", " ", text)


def test_kafka_options_without_a_destination_are_a_usage_error(pcaps):
    done = ptc("replay", pcaps / "encap.pcap", "--batch-size", "5", "--compression", "gzip")
    assert done.returncode == 2 and done.stdout == b""
    assert stderr_of(done).splitlines()[-1] == (
        "Error: --batch-size, --compression: Kafka options, but no Kafka destination is set (--topic, --brokers)"
    )


@pytest.mark.parametrize("layer", ["flags", "environment", "config-file-after-the-command"])
def test_a_kafka_destination_in_any_layer_sends_to_the_real_broker(kafka_broker, pcaps, tmp_path, layer):
    topic = f"habits-{layer}-{time.time_ns()}"
    pcap = pcaps / "encap.pcap"
    if layer == "flags":
        done = ptc("replay", pcap, "-t", topic, "-b", kafka_broker)
    elif layer == "environment":
        done = ptc("replay", pcap, env=clean_env(PTC_TOPIC=topic, PTC_BROKERS=kafka_broker))
    else:
        config = tmp_path / "ptc.toml"
        config.write_text(f'topic = "{topic}"\nbrokers = "{kafka_broker}"\n')
        done = ptc("replay", pcap, "--config", config)
    assert done.returncode == 0, stderr_of(done)
    assert done.stdout == b""  # into Kafka, not stdout
    consumed = ptc("consume", "-t", topic, "-b", kafka_broker, "--from-beginning", "-c", 40, "-q")
    assert consumed.returncode == 0, stderr_of(consumed)
    assert in_order(from_json_lines(consumed.stdout)) == in_order(from_json_lines(b"\n".join(replayed_lines(pcap))))


def test_a_rule_naming_a_topic_is_a_kafka_destination(pcaps, tmp_path):
    config = tmp_path / "ptc.toml"
    config.write_text('[[rules]]\nsrc = "2001:db8::/32"\nfunction = "pass"\ntopic = "lab"\n')
    env = clean_env(PTC_CONNECT_TIMEOUT="0.2")
    done = ptc("replay", pcaps / "encap.pcap", "--config", config, env=env)
    assert done.stdout == b""  # the rule's topic alone: into Kafka (at the default brokers), not stdout
    assert "Kafka" in stderr_of(done), stderr_of(done)
    plain = config.with_name("plain.toml")
    plain.write_text('[[rules]]\nsrc = "2001:db8::/32"\nfunction = "pass"\n')
    assert len(ptc("replay", pcaps / "encap.pcap", "--config", plain, env=env).stdout.splitlines()) == 40


# ---------------------------------------------------------------- item 3: short flags


EXPECTED_SHORT = {
    "-b": "--brokers", "-c": "--count", "-C": "--file-size", "-h": "--help", "-i": "--iface", "-n": "--numeric",
    "-o": "--output", "-q": "--quiet", "-r": "--read", "-t": "--topic", "-v": "--verbose", "-w": "--write",
}  # fmt: skip


def test_every_short_flag_has_one_meaning_across_the_commands():
    meanings: dict[str, set[str]] = {}
    for command in commands_of(main).values():
        ctx = click.Context(command, info_name="x", **main.context_settings)
        for param in [p for p in command.get_params(ctx) if isinstance(p, click.Option)]:
            shorts = [o for o in param.opts + param.secondary_opts if re.fullmatch(r"-[A-Za-z]", o)]
            long_name = next(o for o in param.opts if o.startswith("--"))
            for short in shorts:
                meanings.setdefault(short, set()).add(long_name)
    assert meanings == {short: {long_name} for short, long_name in EXPECTED_SHORT.items()}
    assert "-V" in next(p for p in main.params if p.name == "version").opts
    assert "-P" not in meanings  # kcat's producer mode is a command here (replay, collect): a usage error


def test_version_and_kcat_habits():
    assert ptc("-V").stdout.decode().startswith("ptc, version ")
    done = ptc("consume", "-P")
    assert done.returncode == 2 and stderr_of(done).splitlines()[-1] == "Error: No such option '-P'."


def test_replay_count_read_and_numeric(pcaps):
    pcap = pcaps / "encap.pcap"
    every = replayed_lines(pcap)
    done = ptc("replay", "-n", "-r", pcap, "-c", 5)
    assert done.returncode == 0, stderr_of(done)
    assert done.stdout.splitlines() == every[:5]
    assert "stopped         after -c 5 probes (35 decoded past it not written)" in stderr_of(done)
    assert ptc("replay", "--count", 3, pcap, "-q").stdout.splitlines() == every[:3]
    both = ptc("replay", "-r", pcaps / "vlan.pcap", pcaps / "raw-ipv6.pcap", "-q")
    assert both.stdout.splitlines() == replayed_lines(pcaps / "vlan.pcap") + replayed_lines(pcaps / "raw-ipv6.pcap")
    assert ptc("replay", "-c", 1000, pcap, "-q").stdout.splitlines() == every  # fewer than N: all, status 0
    nothing = ptc("replay")
    assert nothing.returncode == 2 and stderr_of(nothing).splitlines()[-1].startswith("Error: Missing argument")


def test_replay_count_into_the_real_broker(kafka_broker, pcaps):
    topic = f"habits-count-{time.time_ns()}"
    done = ptc("replay", pcaps / "encap.pcap", "-c", 7, "-t", topic, "-b", kafka_broker)
    assert done.returncode == 0, stderr_of(done)  # every record it sent was acknowledged: the 7
    consumed = ptc("consume", "-t", topic, "-b", kafka_broker, "--from-beginning", "--timeout", 3)
    first = from_json_lines(b"\n".join(replayed_lines(pcaps / "encap.pcap")[:7]))
    assert in_order(from_json_lines(consumed.stdout)) == in_order(first)


def test_generate_count(tmp_path):
    out = tmp_path / "g.pcap"
    assert ptc("generate", out, "-c", 12).returncode == 0
    assert sum(1 for _ in read_capture(out)) == 12


def test_config_anywhere_on_the_line(pcaps, tmp_path):
    config = tmp_path / "ptc.toml"
    config.write_text('tts_shift = 18\n[collect]\niface = "eth7"\n')
    pcap = pcaps / "encap.pcap"
    assert replayed_lines(pcap, "--config", config) == replayed_lines(pcap, "--tts-shift", 18)
    assert ptc("--config", config, "replay", pcap, "-q").stdout.splitlines() == replayed_lines(pcap, "--tts-shift", 18)
    assert replayed_lines(pcap, f"--config={config}") != replayed_lines(pcap)  # hop times: not null
    check = ptc("config", "check", "collect", "--config", config)
    assert check.returncode == 0, stderr_of(check)
    assert 'iface = "eth7"' in check.stdout.decode() and "[replay]" not in check.stdout.decode()
    assert "--config FILE" in ptc("replay", "--help").stdout.decode()


def test_config_check_one_command(tmp_path):
    every = ptc("config", "check").stdout.decode()
    one = ptc("config", "check", "collect").stdout.decode()
    assert re.findall(r"^\[(\w+)\]", one, re.M) == ["collect"]
    assert len(re.findall(r"^\[(\w+)\]", every, re.M)) >= 5
    assert len(one.splitlines()) < len(every.splitlines()) // 3
    config = tmp_path / "ptc.toml"
    config.write_text("[replay]\ntts_shift = 16\n")
    with_file = ptc("config", "check", "replay", config).stdout.decode()
    assert "tts_shift = 16" in with_file and "[collect]" not in with_file
    too_many = ptc("config", "check", "replay", config, config)
    assert too_many.returncode == 2 and stderr_of(too_many).splitlines()[-1].startswith("Error: config check takes")


# ---------------------------------------------------------------- item 3 over a real veth pair


def collect(*args: object, stdout=None) -> CollectProcess:
    return CollectProcess([*PTC, "collect", "--stats-interval", "0.2", *map(str, args)], env=clean_env(), stdout=stdout)


def test_collect_count_stops_after_n_probes(veth, tmp_path):
    probes, noise = frames_to_send(100, seed=21)
    out = tmp_path / "out.jsonl"
    collector = collect("-i", veth.rx_iface, "-o", out, "-c", 30, "-n")
    collector.wait_for(lambda line: "kernel" in line)
    veth.send(noise + probes)
    assert collector.proc.wait(timeout=60) == 0  # it stopped by itself
    collector.stop()
    records = from_json_lines(out.read_bytes())
    assert without_capture_time(records) == without_capture_time(expected_records(probes)[:30])
    stopped = collector.wait_for(lambda line: "stopped after -c 30 probes" in line)
    final = collector.wait_for(lambda line: "stopped:" in line)
    beyond = int(re.search(r"\((\d+) decoded past it dropped\)", stopped).group(1)) if "past" in stopped else 0
    assert f"{30 + beyond:,} probes" in final and f"30 acked, {beyond:,} dropped" in final, final


def test_collect_trailing_filter_expression(veth, tmp_path):
    """A trailing tcpdump expression is the kernel's filter: only the probes from one sink pass (their outer
    source address), and the IPv6 UDP, IPv4 and ARP noise stays out."""
    probes, noise = frames_to_send(90, seed=22)
    expected = expected_records(probes)
    sink = expected[0].sink.addr
    passing = [frame for frame, record in zip(probes, expected, strict=True) if record.sink.addr == sink]
    assert 0 < len(passing) < len(probes)
    out = tmp_path / "out.jsonl"
    collector = collect("-i", veth.rx_iface, "-o", out, "ip6", "src", "host", sink)
    collector.wait_for(lambda line: "kernel" in line)
    veth.send(noise + probes)
    collector.wait_for(lambda line: f"| {len(passing):,} frames:" in line)
    assert collector.stop() == 0
    records = from_json_lines(out.read_bytes())
    assert without_capture_time(records) == without_capture_time(expected_records(passing))
    assert f"kernel {len(passing):,} received" in collector.lines[-1]  # the rest: filtered out in the kernel
    both = ptc("collect", "-i", veth.rx_iface, "-o", "-", "--bpf", "ip6", "ip6")
    assert both.returncode == 2 and stderr_of(both).splitlines()[-1] == "Error: a filter EXPRESSION and --bpf: give one"
    bad = ptc("collect", "-i", veth.rx_iface, "-o", "-", "ip6", "and", "and")
    assert bad.returncode == 2 and "Error: Invalid value for EXPRESSION: bad capture filter" in stderr_of(bad)


def untagged(frame: bytes) -> bytes:
    """An Ethernet frame without its 802.1Q tag, as a packet socket reads it (the tag goes to metadata)."""
    return frame[:12] + frame[16:] if frame[12:14] == b"\x81\x00" else frame


def test_collect_write_rotates_by_size(veth, tmp_path):
    probes, _ = frames_to_send(12000, seed=23)
    out, saved = tmp_path / "out.jsonl", tmp_path / "probes.pcap"
    collector = collect("-i", veth.rx_iface, "-o", out, "-w", saved, "-C", 1)
    collector.wait_for(lambda line: "kernel" in line)
    veth.send(probes, rate_pps=50_000)
    collector.wait_for(lambda line: f"| {len(probes):,} frames:" in line, timeout=60)
    assert collector.stop() == 0
    rotated = sorted(tmp_path.glob("probes.pcap?*"), key=lambda p: int(p.name.removeprefix("probes.pcap")))
    files = [saved, *rotated]
    assert [f.name for f in files] == ["probes.pcap"] + [f"probes.pcap{i}" for i in range(1, len(files))]
    assert len(files) >= 2, sum(len(p) for p in probes)
    biggest = max(len(p) for p in probes) + 16
    for file in files[:-1]:  # rotated once over 1,000,000 bytes: by at most one frame
        assert 1_000_000 < file.stat().st_size <= 1_000_000 + biggest
    frames = [frame for file in files for _, _, frame in read_capture(file)]
    assert frames == [untagged(frame) for frame in probes]  # the frames as captured: the kernel took the tags off
    assert len(from_json_lines(out.read_bytes())) == len(probes)
    assert any(f"saved {len(probes):,} frames to {saved} (and {len(files) - 1} files after it" in line
               for line in collector.lines)  # fmt: skip


def test_collect_count_and_write_need_one_worker(veth, tmp_path):
    done = ptc("collect", "-i", veth.rx_iface, "-o", tmp_path / "o", "--workers", 2, "-c", 5, "-w", tmp_path / "p")
    assert (
        done.returncode == 2 and stderr_of(done).splitlines()[-1] == "Error: -c, -w: with one worker only (--workers 2)"
    )
    done = ptc("collect", "-i", veth.rx_iface, "-o", "-", "-C", 5)
    assert (
        done.returncode == 2
        and stderr_of(done).splitlines()[-1] == "Error: -C (--file-size) rotates the -w FILE: give -w FILE"
    )


# ---------------------------------------------------------------- item 6: the live table, with a broker down


def test_live_table_says_why_the_broker_is_down(veth):
    collector = collect("-i", veth.rx_iface, "--stats", "-b", "127.0.0.1:1", "--connect-timeout", "0.2")
    collector.wait_for(lambda line: "cannot reach Kafka" in line)
    time.sleep(1.5)  # a table refresh after the sink said so
    assert collector.stop() == 0
    text = " ".join(" ".join(collector.lines).split())  # the table's lines wrap at the console's width
    assert "Kafka: broker unreachable; records: 0 in flight" in text, text[-600:]
    assert "Kafka: why: cannot reach Kafka at 127.0.0.1:1" in text, text[-600:]


# ---------------------------------------------------------------- item 7: help, man page, completion, make demo


def every_option() -> list[tuple[str, click.Parameter, click.Context]]:
    found = []
    for path, command in commands_of(main).items():
        ctx = click.Context(command, info_name=path, **main.context_settings)
        found += [(path, param, ctx) for param in command.get_params(ctx) if isinstance(param, click.Option)]
    return found


def test_every_option_has_help_and_shows_its_variable():
    missing_help, missing_var = [], []
    for path, option, ctx in every_option():
        if "--help" in option.opts or option.name == "numeric":  # click's own; tcpdump's -n, a no-op
            continue
        names, text = option.get_help_record(ctx) or ("", "")
        if not option.help:
            missing_help.append(f"{path} {names}")
        if "[env var: PTC_" not in text:
            missing_var.append(f"{path} {names}")
    assert missing_help == [] and missing_var == []


def test_help_stands_without_the_docs_folder_and_summaries_are_whole():
    top = ptc("--help").stdout.decode()
    assert "..." not in top.split("Commands:")[1]  # no summary cut off
    for path in ["", *commands_of(main)]:
        text = ptc(*path.split(), "--help").stdout.decode()
        assert text and "docs/" not in text and ".md" not in text, path


def test_the_shipped_man_page_is_made_from_the_commands():
    shipped = (ROOT / "man" / "ptc.1").read_text()
    assert shipped == render(), "man/ptc.1 is out of date: make man"
    for path in commands_of(main):
        assert f'.SS "ptc {path}' in shipped
    assert "PTC\\_TOPIC" in shipped or "PTC_TOPIC" in shipped
    page = subprocess.run(["man", "-l", "-P", "cat", str(ROOT / "man" / "ptc.1")], capture_output=True, text=True,
                          env={**os.environ, "MANWIDTH": "100"}, check=True)  # fmt: skip
    assert "ptc replay [OPTIONS] [FILES]..." in page.stdout and "EXIT STATUS" in page.stdout


def test_shell_completion_is_clicks():
    ptc_script = Path(sys.executable).parent / "ptc"
    done = subprocess.run(
        [str(ptc_script)], capture_output=True, text=True, timeout=60, check=False,
        env=clean_env(_PTC_COMPLETE="bash_complete", COMP_WORDS="ptc rep", COMP_CWORD="1"),
    )  # fmt: skip
    assert "plain,replay" in done.stdout.splitlines()
    source = subprocess.run(
        [str(ptc_script)], capture_output=True, text=True, env=clean_env(_PTC_COMPLETE="bash_source")
    )
    assert "_ptc_completion" in source.stdout


def test_make_demo_stdout_is_json_lines_only():
    """As typed in a shell: not as a sub-make of `make test` (make prints "Entering directory" on stdout there)."""
    env = {name: value for name, value in clean_env().items() if name not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    done = subprocess.run(["make", "demo"], cwd=ROOT, capture_output=True, timeout=600, env=env, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 40 and all(isinstance(json.loads(line), dict) for line in lines)


def test_make_setup_says_nothing_on_stdout():
    """The setup recipe: every command silent (@) and its output on stderr, for `make demo > out.jsonl` on a fresh
    clone (make -n prints what it would run, @ or not: the recipe's lines are read from the Makefile instead)."""
    text = (ROOT / "Makefile").read_text()
    recipe = text.split("$(STAMP): pyproject.toml $(NATIVE_SRC)\n")[1].split("\n\n")[0]
    for line in [line for line in recipe.splitlines() if line.startswith("\t") and not line.startswith("\t\t")]:
        assert line.startswith("\t@"), line
        assert ">&2" in line or "touch" in line or line.rstrip().endswith("\\"), line


# ---------------------------------------------------------------- item 8: one error form


ERROR_PATHS = [
    ("bad option", ["replay", "--no-such"], 2),
    ("bad value", ["replay", "pcaps/encap.pcap", "--tts-shift", "99"], 2),
    ("missing file", ["replay", "no-such.pcap"], 2),
    ("not a capture", ["replay", "README.md"], 1),
    ("full disk", ["replay", "pcaps/encap.pcap", "-o", "/dev/full"], 1),
    ("no config", ["--config", "/no/such.toml", "replay", "pcaps/encap.pcap"], 2),
    ("bad env", ["replay", "pcaps/encap.pcap"], 2),
    ("kafka unreachable", ["replay", "pcaps/encap.pcap", "-b", "127.0.0.1:1", "--connect-timeout", "0.2"], 1),
    ("kafka options, no destination", ["replay", "pcaps/encap.pcap", "--acks", "1"], 2),
    ("consume unreachable", ["consume", "-b", "127.0.0.1:1", "--connect-timeout", "0.2"], 1),
    ("paths unreachable", ["paths", "-b", "127.0.0.1:1", "--connect-timeout", "0.2", "-c", "1"], 1),
    ("paths not a capture", ["paths", "README.md"], 1),
    ("collect no interface", ["collect", "-i", "nosuchif0", "-o", "-"], 1),
    ("collect bad filter", ["collect", "-i", "lo", "-o", "-", "ip6", "and", "and"], 2),
    ("generate unwritable", ["generate", "/no/such/dir/x.pcap"], 1),
    ("rules without config", ["rules", "test", "pcaps/encap.pcap"], 2),
    ("config check bad file", ["config", "check", "README.md"], 2),
    ("config check bad command", ["config", "check", "collect", "a", "b"], 2),
    ("unknown command", ["replya"], 2),
]


@pytest.mark.parametrize(("args", "status"), [case[1:] for case in ERROR_PATHS], ids=[case[0] for case in ERROR_PATHS])
def test_every_error_starts_with_the_same_prefix(args, status):
    env = clean_env(PTC_TTS_SHIFT="99") if args == ["replay", "pcaps/encap.pcap"] else clean_env()
    done = subprocess.run([*PTC, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120, check=False)
    assert done.returncode == status, done.stderr
    lines = done.stderr.splitlines()
    errors = [line for line in lines if line.startswith("Error: ")]
    assert errors, lines
    assert not [line for line in lines if not line.startswith("Error: ") and re.search(r"\berror\b", line, re.I)]
    assert "Traceback" not in done.stderr
