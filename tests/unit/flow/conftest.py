"""Fixtures of the flow-layer unit tests; the helpers themselves live in ``flow_support``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    # flow_support sits beside this file and is imported by name.
    sys.path.insert(0, _HERE)

pytest.register_assert_rewrite("flow_support")

from flow_support import Log  # noqa: E402

from tenure.flow import MemoryCheckpoints  # noqa: E402


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture
def checkpoints() -> MemoryCheckpoints:
    return MemoryCheckpoints()


@pytest.fixture
def sleeps() -> list[float]:
    """Delays an engine asked to sleep for (pass ``sleep=sleeps.append``): no test waits for real."""
    return []
