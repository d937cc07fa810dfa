"""The group commit's hand-offs, with a plain function for a transaction: every unit answered once, in batches.

The stores' own tests (tests/integration/test_group_commit.py) run it against real databases; here
many threads hammer it so that leadership passes between them thousands of times.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from tenure.store.groupcommit import GroupCommit, Queued


class Transactions:
    """Runs each batch as a 'transaction': answers each unit, and records the batches."""

    def __init__(self, *, fail_every: int = 0, pause: float = 0.0) -> None:
        self.batches: list[int] = []
        self.inside = 0
        self.overlapped = False
        self._fail_every = fail_every
        self._pause = pause
        self._lock = threading.Lock()

    def __call__(self, batch: Sequence[Queued[str]]) -> None:
        with self._lock:
            self.inside += 1
            self.overlapped |= self.inside > 1
            self.batches.append(len(batch))
            number = len(self.batches)
        try:
            if self._pause:
                time.sleep(self._pause)
            if self._fail_every and number % self._fail_every == 0:
                raise RuntimeError(f"transaction {number} failed")
            for item in batch:
                item.result = item.unit("conn")
        finally:
            with self._lock:
                self.inside -= 1


def _hammer(group: GroupCommit[str], threads: int, each: int) -> list[list[Any]]:
    answers: list[list[Any]] = [[] for _ in range(threads)]

    def run(t: int) -> None:
        for i in range(each):
            try:
                answers[t].append(group.submit(lambda conn, t=t, i=i: (conn, t, i)))
            except RuntimeError as exc:
                answers[t].append(exc)

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert not any(w.is_alive() for w in workers), "a thread never got its answer"
    return answers


def test_every_unit_of_many_threads_gets_its_own_answer_and_transactions_never_overlap() -> None:
    run = Transactions(pause=0.0002)
    group: GroupCommit[str] = GroupCommit(run)
    answers = _hammer(group, threads=16, each=200)

    for t, got in enumerate(answers):
        assert got == [("conn", t, i) for i in range(200)]
    assert not run.overlapped, "two batches ran at once"
    assert sum(run.batches) == group.units == 16 * 200
    assert group.transactions == len(run.batches) < 16 * 200, "writes queued meanwhile shared transactions"
    assert group.transactions_running == 0
    assert group.waiting == 0


@pytest.mark.parametrize("max_batch", [1, 3])
def test_a_failed_transaction_fails_its_own_units_and_the_next_leader_goes_on(max_batch: int) -> None:
    run = Transactions(fail_every=5)
    group: GroupCommit[str] = GroupCommit(run, max_batch=max_batch)
    answers = _hammer(group, threads=8, each=100)

    failed = [a for got in answers for a in got if isinstance(a, RuntimeError)]
    assert failed, "some transactions failed"
    assert len(failed) == sum(n for k, n in enumerate(run.batches, 1) if k % 5 == 0)
    assert max(run.batches) <= max_batch
    for t, got in enumerate(answers):
        assert [a for a in got if not isinstance(a, RuntimeError)] == [
            ("conn", t, i) for i, a in enumerate(got) if not isinstance(a, RuntimeError)
        ]
