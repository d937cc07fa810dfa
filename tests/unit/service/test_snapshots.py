"""The snapshots a server keeps of its answers: bounded by their bytes, and trusted only as far as the swap goes."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from tenure.errors import Conflict
from tenure.service.snapshots import Snapshots
from tenure.store.model import Resource
from tenure.store.write import plan_create
from tests.kinds_for_tests import job

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def made(rid: str, version: int = 1) -> Resource:
    r = plan_create(job, NOW, spec=None, data=None, sharable=False, idempotency_key=None, actor=None, resource_id=rid)
    return dataclasses.replace(r, version=version)


def test_only_the_answered_version_is_given_and_only_to_a_pinned_write() -> None:
    kept = Snapshots()
    kept.keep(made("a", 3), 100)
    assert kept.pinned("a", 3) == made("a", 3)
    assert kept.pinned("a", 4) is None
    assert kept.pinned("a", None) is None, "an unpinned write takes the row as it is"
    assert kept.pinned("b", 3) is None
    kept.keep(made("a", 4), 100)
    assert kept.pinned("a", 3) is None, "the latest answer replaces the one before"
    assert (len(kept), kept.size) == (1, 100)
    kept.forget("a")
    assert (len(kept), kept.size, kept.pinned("a", 4)) == (0, 0, None)


def test_what_is_kept_is_bounded_by_the_bytes_of_the_answers_least_recent_first() -> None:
    kept = Snapshots(max_bytes=1000, entry_bytes=400)
    for i in range(5):
        kept.keep(made(f"r{i}"), 300)
    assert [rid for rid in ("r0", "r1", "r2", "r3", "r4") if kept.pinned(rid, 1)] == ["r2", "r3", "r4"]
    assert kept.size == 900
    kept.keep(made("r2"), 300)  # answered again: now the most recent
    kept.keep(made("r5"), 300)
    assert [rid for rid in ("r2", "r3", "r4", "r5") if kept.pinned(rid, 1)] == ["r2", "r4", "r5"]
    kept.keep(made("big"), 401)
    assert kept.pinned("big", 1) is None, "an answer larger than an entry may be is not kept"
    kept.keep(made("r4", 2), 401)
    assert kept.pinned("r4", 1) is None, "nor is the old answer of a resource whose new one is too large"
    assert kept.size == 600


def test_an_older_answer_of_the_same_resource_does_not_replace_a_newer_one() -> None:
    kept = Snapshots()
    kept.keep(made("a", 4), 10)
    kept.keep(made("a", 3), 10)  # a read that finished after the write that answered version 4
    assert (kept.pinned("a", 4), kept.pinned("a", 3)) == (made("a", 4), None)
    other_life = dataclasses.replace(made("a", 1), created_at=datetime(2026, 2, 1, tzinfo=UTC))
    kept.keep(other_life, 10)
    assert kept.pinned("a", 1) == other_life, "a new resource under the id replaces the old one's answer"


def _conflict(*, recreated: bool) -> Conflict:
    return Conflict(resource_id="a", expected_version=1, actual_version=1, recreated=recreated)


def test_a_write_from_a_snapshot_is_planned_again_from_the_row_only_when_the_id_was_created_again() -> None:
    kept = Snapshots()
    kept.keep(made("a"), 10)
    seen: list[Resource | str] = []

    def lost_to_a_new_life(target: Resource | str) -> Resource:
        seen.append(target)
        if isinstance(target, Resource):
            raise _conflict(recreated=True)
        return made("a", 2)

    assert kept.write("a", 1, lost_to_a_new_life) == made("a", 2)
    assert seen == [made("a"), "a"]
    assert kept.pinned("a", 1) is None, "the snapshot of the old life is dropped"

    kept.keep(made("a"), 10)
    seen.clear()

    def lost(target: Resource | str) -> Resource:
        seen.append(target)
        raise _conflict(recreated=False)

    with pytest.raises(Conflict):
        kept.write("a", 1, lost)
    assert seen == [made("a")], "a plain lost swap is the answer: a fresh read would lose it too"
    with pytest.raises(Conflict):
        kept.write("a", 2, lost)
    assert seen == [made("a"), "a"], "no snapshot at the pinned version: the row is read"
