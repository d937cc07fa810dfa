"""``tenure serve``, ``tenure worker``, ``create`` and ``event`` as a user runs them: real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tenure import open_store
from tenure.kinds import builtin_kinds


def _env() -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if k != "TENURE_DATABASE_URL"}
    return {**inherited, "COLUMNS": "160", "NO_COLOR": "1"}


def tenure(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tenure", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_env(),
        timeout=120,
        check=False,
    )


def start(*args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tenure", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=_env(),
    )


def wait_for_state(url: str, resource_id: str, states: set[str], timeout: float = 30.0) -> str:
    store = open_store(url, builtin_kinds())
    try:
        deadline = time.monotonic() + timeout
        while True:
            state = store.get(resource_id).state
            if state in states or time.monotonic() > deadline:
                return state
            time.sleep(0.05)
    finally:
        store.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    proc = start("serve", cwd=tmp_path)
    try:
        # The server migrates the default database on start; wait until it has.
        deadline = time.monotonic() + 30
        while not (tmp_path / "tenure.db").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        yield proc, tmp_path
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_serve_runs_a_transfer_to_the_end_and_stops_cleanly_on_sigterm(
    served: tuple[subprocess.Popen[str], Path],
) -> None:
    proc, cwd = served
    url = f"sqlite:///{cwd / 'tenure.db'}"
    time.sleep(0.5)
    made = tenure("create", "transfer", '{"asset": "q3-report.csv"}', "--json", cwd=cwd)
    assert made.returncode == 0, made.stderr
    resource_id = json.loads(made.stdout)["id"]
    assert wait_for_state(url, resource_id, {"started"}) == "started"
    fired = tenure("event", resource_id, "complete", cwd=cwd)
    assert fired.returncode == 0, fired.stderr
    assert "completing" in fired.stdout
    assert wait_for_state(url, resource_id, {"deprovisioned"}) == "deprovisioned"
    history = json.loads(tenure("history", resource_id, "--json", cwd=cwd).stdout)
    assert [e["event"] for e in history] == [
        "@create", "provision", "provisioned", "request", "requested", "start", "started",
        "complete", "completed", "deprovision", "deprovisioned",
    ]  # fmt: skip
    assert {e["actor"] for e in history} >= {"cli"}
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "tenure serving" in out


def test_create_and_event_refuse_bad_input_and_write_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert tenure("migrate", "--database", url).returncode == 0
    bad_json = tenure("create", "transfer", "{not json", "--database", url)
    assert bad_json.returncode == 1
    assert "not valid JSON" in bad_json.stderr
    bad_spec = tenure("create", "transfer", '{"asset": 5}', "--database", url)
    assert bad_spec.returncode == 1
    assert "asset" in bad_spec.stderr
    made = tenure("create", "transfer", '{"asset": "a"}', "--database", url, "--json")
    resource_id = json.loads(made.stdout)["id"]
    refused = tenure("event", resource_id, "complete", "--database", url)
    assert refused.returncode == 1
    assert "'initial'" in refused.stderr
    assert "provision" in refused.stderr  # the allowed events are named
    stale = tenure("event", resource_id, "terminate", "--if-version", "7", "--database", url)
    assert stale.returncode == 1
    assert "expected version 7" in stale.stderr
    store = open_store(url, builtin_kinds())
    try:
        page = store.list(kind="transfer")
        assert [r.id for r in page.items] == [resource_id]
        assert [e.event for e in store.journal(resource_id)] == ["@create"]
    finally:
        store.close()


def test_worker_command_processes_volumes_and_stops_on_sigint(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    assert tenure("migrate", "--database", url).returncode == 0
    made = tenure("create", "volume", '{"size_gb": 5, "project": "p1"}', "--database", url, "--json")
    assert made.returncode == 0, made.stderr
    resource_id = json.loads(made.stdout)["id"]
    proc = start("worker", "--database", url, "--concurrency", "2")
    try:
        assert wait_for_state(url, resource_id, {"available", "error"}) == "available"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_a_lapsed_claim_is_logged_in_calm_words(caplog: pytest.LogCaptureFixture) -> None:
    """The routine hand-over of a claim the heartbeat could not renew reads as routine, at INFO."""
    import logging
    import threading
    from datetime import timedelta
    from types import SimpleNamespace
    from typing import Any, cast

    from tenure.engine.heartbeat import InFlight
    from tenure.engine.stats import WorkerStats

    class NothingHeld:
        def renew(self, tokens: list[str], *, lease: timedelta) -> set[str]:
            return set()

    in_flight = InFlight(cast(Any, NothingHeld()), WorkerStats(), worker="w1")
    resource = SimpleNamespace(id="r1", kind="transfer")
    ctx = SimpleNamespace(lost=threading.Event())
    in_flight.add(cast(Any, SimpleNamespace(token="t1", resource=resource)), cast(Any, ctx))
    with caplog.at_level(logging.INFO, logger="tenure.engine"):
        in_flight.renew(timedelta(seconds=5))
    assert ctx.lost.is_set()
    [record] = [r for r in caplog.records if "r1" in r.getMessage()]
    assert record.levelno == logging.INFO
    assert record.getMessage() == (
        "worker w1 stepped back from r1: its claim expired before it was renewed; another worker will pick the "
        "resource up"
    )
    assert (getattr(record, "resource_id", None), getattr(record, "kind", None)) == ("r1", "transfer")
