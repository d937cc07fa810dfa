"""Fixtures of the flow-layer unit tests; the helpers themselves live in ``flow_support``."""

from __future__ import annotations

import pytest

from tenure.flow import MemoryCheckpoints
from tests.unit.flow.flow_support import Log


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
