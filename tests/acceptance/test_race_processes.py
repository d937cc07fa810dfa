"""Writers racing on shared resources from separate OS processes (spawned, each with its own store).

Same game and same checks as the threaded race in ``tests/integration/test_races.py``, but nothing is
shared except the database: each process opens the store from its URL and sends its record of wins
and conflicts back through a queue.
"""

from __future__ import annotations

import multiprocessing
import queue as queue_module
from typing import Any

import pytest

from tenure.store.protocol import EngineStore
from tests.store_support import Report, bring_to_active, check_history, check_lockstep, process_main

pytestmark = pytest.mark.timeout(240)

RESOURCES = 20
PROCESSES = 4
ROUNDS = 30
FREE_OPS = 3
#: Generous: a spawned process imports tenure, pydantic and psycopg before it can start.
REPORT_TIMEOUT = 180.0


def test_racing_processes_never_lose_an_update(store: EngineStore, store_url: str) -> None:
    ids, wins = bring_to_active(store, RESOURCES)

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    results: Any = ctx.Queue()
    processes = [
        ctx.Process(
            target=process_main,
            kwargs={
                "url": store_url,
                "ids": ids,
                "actor": f"process-{n}",
                "rounds": ROUNDS,
                "free_ops": FREE_OPS,
                "seed": 7000 + n,
                "barrier": barrier,
                "queue": results,
            },
            name=f"racer-{n}",
        )
        for n in range(PROCESSES)
    ]
    for p in processes:
        p.start()
    reports: list[Report] = []
    try:
        for _ in processes:
            # Read the reports before joining: a process cannot exit while its queue data is unread.
            reports.append(results.get(timeout=REPORT_TIMEOUT))
    except queue_module.Empty:
        pytest.fail(f"only {len(reports)} of {PROCESSES} racing processes reported back")
    finally:
        for p in processes:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
    errors = [rep.error for rep in reports if rep.error]
    assert errors == [], "\n".join(e or "" for e in errors)
    assert sorted(p.exitcode for p in processes if p.exitcode is not None) == [0] * PROCESSES
    assert sorted(rep.actor for rep in reports) == [f"process-{n}" for n in range(PROCESSES)]

    wins += [w for rep in reports for w in rep.wins]
    check_history(store, ids, wins)
    rounds_won = check_lockstep(reports, PROCESSES)
    lost = [c for rep in reports for c in rep.lost]
    assert rounds_won >= 1
    assert len([c for c in lost if c.round is not None]) == rounds_won * (PROCESSES - 1)
    for c in lost:
        assert c.actual_version > c.expected_version, c
    for refusal in (r for rep in reports for r in rep.refused):
        assert refusal.refused_state != refusal.read_state, refusal
