"""A long-running worker keeps no memory per lifecycle: its resident set stays flat.

A real worker in its own process (:mod:`tests.acceptance.memory_worker`) runs many whole ``transfer``
lifecycles on a real store, through the built-in provisioner, and samples its resident set size
(RSS) as it goes. Once warmed up (imports done, caches and pools filled), the RSS must stop growing:
its growth from lifecycle :data:`WARM` to the end stays under a bound. The provisioner that kept
every request it was asked grew by about 2.7 MiB per 1,000 lifecycles here, well over the bound of
the short version (which the normal suite runs, on SQLite); ``TENURE_SOAK=1`` runs 10,000 lifecycles
on both stores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tenure import open_store

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SOAK = os.environ.get("TENURE_SOAK", "").strip() == "1"

#: Lifecycles run, and the one after which the process counts as warmed up (both multiples of the
#: driver's window of 40).
LIFECYCLES = 10_000 if SOAK else 2_400
WARM = 1_000 if SOAK else 800
#: The most the RSS may grow from WARM to the end, in KiB.
BOUND_KIB = (4 if SOAK else 2) * 1024

pytestmark = [
    pytest.mark.soak,
    pytest.mark.timeout(1800 if SOAK else 300),
    pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the RSS from /proc (Linux)"),
]


def _migrated(url: str) -> None:
    store = open_store(url, check_schema=False)
    try:
        store.migrate()
    finally:
        store.close()


def _rss_growth(url: str, tmp_path: Path) -> tuple[int, dict[str, int]]:
    """Run the worker process on ``url``; the RSS growth from WARM to the end (KiB), and every sample."""
    _migrated(url)
    out = tmp_path / "memory.json"
    marks = ",".join(str(n) for n in range(WARM, LIFECYCLES, WARM))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.acceptance.memory_worker",
            url,
            "--lifecycles",
            str(LIFECYCLES),
            "--marks",
            marks,
            "--out",
            str(out),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=1700 if SOAK else 280,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    samples: dict[str, int] = json.loads(out.read_text())["rss_kib"]
    return samples[str(LIFECYCLES)] - samples[str(WARM)], samples


def test_a_worker_keeps_no_memory_per_lifecycle(tmp_path: Path) -> None:
    growth, samples = _rss_growth(f"sqlite:///{tmp_path}/memory.db?synchronous=normal", tmp_path)
    assert growth < BOUND_KIB, f"RSS grew {growth} KiB from lifecycle {WARM} to {LIFECYCLES}: {samples}"


@pytest.mark.postgres
@pytest.mark.skipif(not SOAK, reason="long soak test: set TENURE_SOAK=1 to run it")
def test_soak_a_worker_on_postgres_keeps_no_memory_per_lifecycle(
    make_pg_database: Callable[[], str], tmp_path: Path
) -> None:
    growth, samples = _rss_growth(make_pg_database(), tmp_path)
    assert growth < BOUND_KIB, f"RSS grew {growth} KiB from lifecycle {WARM} to {LIFECYCLES}: {samples}"
