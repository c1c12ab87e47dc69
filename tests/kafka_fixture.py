"""Session-scoped pytest fixture: a real single-node Kafka broker on 127.0.0.1.

The broker is started by scripts/kafka.sh on a free port pair with its data in
a pytest temp dir, reusing the jars cached in <repo>/.kafka/libs (fetched from
Maven Central on first use). It yields the bootstrap string "127.0.0.1:PORT".

Enable it in tests/conftest.py with
    from kafka_fixture import kafka_broker  # noqa: F401
(or ``from tests.kafka_fixture import ...`` if tests/ is a package).
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "kafka.sh"
LIBS = REPO / ".kafka" / "libs"

# A cold Maven fetch is the slow part; the broker wait itself is bounded by
# KAFKA_START_TIMEOUT inside the script.
UP_TIMEOUT_S = 900
DOWN_TIMEOUT_S = 60


def _free_ports(count: int) -> list[int]:
    """Ports the kernel just handed out, all bound at once so they differ."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


LOW_PORTS_FROM = 10000


def _ephemeral_start() -> int:
    """The first port of the kernel's ephemeral range (the source ports of outgoing connections)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free_low_ports(count: int) -> list[int]:
    """Free ports below the ephemeral range, for a broker that is stopped and started again.

    A client that reconnects in a loop to a stopped broker's port in the
    ephemeral range can be given that very port as its source port: it
    connects to itself, and the broker can no longer bind its port. Below
    the range that cannot happen. The ports are bound at once, so they differ.
    """
    socks: list[socket.socket] = []
    try:
        for port in random.sample(range(LOW_PORTS_FROM, _ephemeral_start()), 200):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            socks.append(s)
            if len(socks) == count:
                return [s.getsockname()[1] for s in socks]
        raise RuntimeError(f"no {count} free ports between {LOW_PORTS_FROM} and the ephemeral range")
    finally:
        for s in socks:
            s.close()


def _run(action: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), action],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# Importing the fixture into both conftest.py and a test module (so that module
# also runs with --noconftest) makes pytest treat it as two session fixtures;
# they share one broker through this refcount instead of starting two.
_shared: dict = {"users": 0}


def _env(directory: Path, port: int, controller_port: int, **extra: str) -> dict[str, str]:
    return dict(
        os.environ,
        KAFKA_PORT=str(port),
        KAFKA_CONTROLLER_PORT=str(controller_port),
        KAFKA_DIR=str(directory),
        KAFKA_LIBS=str(LIBS),
        # lets the script's readiness probe use this interpreter's aiokafka
        KAFKA_PYTHON=sys.executable,
        **extra,
    )


def _start(tmp_path_factory) -> tuple[str, dict[str, str]]:
    port, controller_port = _free_ports(2)
    env = _env(tmp_path_factory.mktemp("kafka"), port, controller_port, KAFKA_CLEAN="1")
    _up(env)
    return f"127.0.0.1:{port}", env


class Broker:
    """A broker of a test module's own, to stop and start again (its data stays in between).

    Its ports are below the ephemeral range (`_free_low_ports`), so that it can always bind them again.
    `extra_config` is appended to the server properties (KAFKA_EXTRA_CONFIG);
    `{port}`, `{controller_port}` and `{extra_port}` (a third free port, `extra_port` here) are filled in.
    """

    def __init__(self, directory: Path, extra_config: str = "") -> None:
        port, controller_port, self.extra_port = _free_low_ports(3)
        self.bootstrap = f"127.0.0.1:{port}"
        config = directory / "extra.properties"
        config.write_text(extra_config.format(port=port, controller_port=controller_port, extra_port=self.extra_port))
        self.env = _env(directory, port, controller_port, KAFKA_EXTRA_CONFIG=str(config))

    def up(self) -> None:
        _up(self.env)

    def down(self) -> None:
        done = _run("down", self.env, DOWN_TIMEOUT_S)
        assert done.returncode == 0, done.stderr


def _up(env: dict[str, str]) -> None:
    try:
        up = _run("up", env, UP_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        _run("down", env, DOWN_TIMEOUT_S)
        pytest.fail(f"kafka.sh up timed out after {exc.timeout}s", pytrace=False)
    if up.returncode != 0:
        # A broker that cannot start is a broken environment, not a reason to
        # skip: the script already put the log tail on stderr.
        pytest.fail(
            f"kafka.sh up failed (exit {up.returncode}):\n{up.stdout}{up.stderr}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    if _shared["users"] == 0:
        _shared["bootstrap"], _shared["env"] = _start(tmp_path_factory)
    _shared["users"] += 1
    try:
        yield _shared["bootstrap"]
    finally:
        _shared["users"] -= 1
        if _shared["users"] == 0:
            _run("down", _shared["env"], DOWN_TIMEOUT_S)
