"""What a `ptc` start imports: only the command that runs, and only the libraries its path needs.

Every start of ptc imports the CLI; each command's module is loaded when that command runs (or when --help,
the man page, completion or a config file with settings need every command's options), and aiokafka, rich,
Quix Streams, matplotlib and the capture's work are imported only where they are used. Each case runs ptc in
a fresh interpreter and reads its sys.modules at the end (docs/benchmarks.md: what start-up costs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Libraries that a replay into a file, a --help or a --version has no use for.
HEAVY = ("aiokafka", "rich", "quixstreams", "confluent_kafka", "matplotlib", "scapy", "prometheus_client", "wsgiref")
OTHER_COMMANDS = ("analyze", "collect", "collect_run", "config", "consume", "generate", "paths", "rules")

RUN = """
import json, sys
from pt_collector.cli.main import main
try:
    main(sys.argv[2:], prog_name="ptc")
except SystemExit as exc:
    status = exc.code
else:
    status = 0
with open(sys.argv[1], "w") as out:
    json.dump({"status": status, "modules": sorted(sys.modules)}, out)
"""


def ptc_modules(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, set[str]]:
    """Run `ptc ARGS` in a fresh interpreter: its exit status and the modules it had imported at the end."""
    report = tmp_path / "modules.json"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PTC_") or k == "PTC_ENGINE"} | (env or {})
    done = subprocess.run(
        [sys.executable, "-c", RUN, str(report), *args], env=environ, capture_output=True, text=True, timeout=60
    )
    assert report.exists(), done.stderr[-2000:]
    found = json.loads(report.read_text())
    return found["status"], set(found["modules"])


def heavy(modules: set[str]) -> set[str]:
    return {name for name in modules if name.split(".")[0] in HEAVY}


def commands(modules: set[str]) -> set[str]:
    return {name.rsplit(".", 1)[1] for name in modules if name.startswith("pt_collector.cli.")}


def test_importing_the_cli_loads_no_command_and_no_heavy_library():
    done = subprocess.run(
        [sys.executable, "-c", "import sys, pt_collector.cli.main; print(' '.join(sorted(sys.modules)))"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    modules = set(done.stdout.split())
    assert "pt_collector.cli.main" in modules
    assert not heavy(modules)
    assert not commands(modules) & {*OTHER_COMMANDS, "replay"}
    assert "pt_collector.pipeline.engine" not in modules  # nor the engine, nor msgspec: no command has run
    assert "msgspec" not in modules and "asyncio" not in modules


@pytest.mark.parametrize("args", [["--version"], ["replay", "--help"]], ids=["version", "replay-help"])
def test_version_and_a_commands_help_load_no_heavy_library(tmp_path, args):
    status, modules = ptc_modules(tmp_path, *args)
    assert status == 0
    assert not heavy(modules)
    assert not commands(modules) & set(OTHER_COMMANDS)
    if args == ["--version"]:
        assert "pt_collector.pipeline.engine" in modules  # it names the engine in use
    else:
        assert "pt_collector.cli.replay" in modules and "pt_collector.pipeline.engine" not in modules


def test_replay_into_a_file_loads_only_replay_and_no_kafka_client(tmp_path, pcaps):
    out = tmp_path / "out.jsonl"
    status, modules = ptc_modules(tmp_path, "replay", str(pcaps / "encap.pcap"), "-o", str(out), "--tts-shift", "18")
    assert status == 0
    assert len(out.read_bytes().splitlines()) == 40  # the replay did its work
    assert not heavy(modules)
    assert not commands(modules) & set(OTHER_COMMANDS)


def test_a_config_file_loads_every_commands_options_but_no_heavy_library(tmp_path, pcaps):
    """The file is checked against every command's options (a [collect] key too), without their work's imports."""
    config = tmp_path / "ptc.toml"
    config.write_text('tts_shift = 18\n[collect]\niface = "eth1"\nworkers = 2\n')
    out = tmp_path / "out.jsonl"
    args = ["--config", str(config), "replay", str(pcaps / "encap.pcap"), "-o", str(out)]
    status, modules = ptc_modules(tmp_path, *args)
    assert status == 0
    assert len(out.read_bytes().splitlines()) == 40
    assert {"collect", "consume", "paths", "analyze", "generate"} <= commands(modules)
    assert "collect_run" not in commands(modules)
    assert not heavy(modules)


def test_a_misspelt_command_is_told_the_one_meant():
    done = subprocess.run(
        [sys.executable, "-m", "pt_collector.cli.main", "replya", "x.pcap"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "No such command 'replya'. Did you mean 'replay'?" in done.stderr


def test_a_config_file_checked_for_a_command_that_is_not_loaded_otherwise(tmp_path):
    """An invalid value for another command's option still fails, in one line, with the file's key."""
    config = tmp_path / "ptc.toml"
    config.write_text("[collect]\nworkers = 0\n")
    done = subprocess.run(
        [sys.executable, "-m", "pt_collector.cli.main", "--config", str(config), "replay", "--help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert f"{config}: collect.workers" in done.stderr
    assert "Traceback" not in done.stderr
