from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # helpers beside the tests

from kafka_fixture import kafka_broker  # noqa: F401
from netns import veth  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
PCAPS = ROOT / "pcaps"


@pytest.fixture
def pcaps() -> Path:
    return PCAPS
