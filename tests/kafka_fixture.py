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


def _start(tmp_path_factory) -> tuple[str, dict[str, str]]:
    port, controller_port = _free_ports(2)
    env = dict(
        os.environ,
        KAFKA_PORT=str(port),
        KAFKA_CONTROLLER_PORT=str(controller_port),
        KAFKA_DIR=str(tmp_path_factory.mktemp("kafka")),
        KAFKA_LIBS=str(LIBS),
        # lets the script's readiness probe use this interpreter's aiokafka
        KAFKA_PYTHON=sys.executable,
        KAFKA_CLEAN="1",
    )
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
    return f"127.0.0.1:{port}", env


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
