"""The callback inbox, on both stores, and PostgreSQL's LISTEN/NOTIFY relay of other processes' writes.

A callback presents the correlation token of a wait and answers one of its keys. Every delivery gets a
receipt: accepted (recorded), duplicate (the same answer again: nothing changes), or refused with the
reason. Delivering never touches the resource row; the engine applies callbacks later with
``fire_settling``, which settles exactly the callbacks it used in the transaction of its write.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from tenure import (
    CallbackStatus,
    ClaimLost,
    Conflict,
    Delivery,
    Event,
    InvalidArgument,
    InvalidSpec,
    Kind,
    Receipt,
    Resource,
    Role,
    State,
    TransitionNotAllowed,
    open_store,
)
from tenure.store.claims import Claim, WaitPlan
from tenure.store.inbox import MAX_EARLY_CALLBACKS, CallbackRow, token_hash
from tenure.store.protocol import EngineStore
from tenure.store.signal import WorkSignal
from tests.store_support import FakeClock, all_journal

pytestmark = pytest.mark.timeout(120)

ORDER_WAIT = timedelta(minutes=5)
LEASE = timedelta(seconds=30)

order = Kind(
    "order",
    initial="new",
    states=[
        State("new", 1, Role.WORK, on_failure="fail"),
        State("requested", 2, Role.WAIT, deadline=ORDER_WAIT, on_deadline="time_out"),
        State("checking", 3, Role.WORK, on_failure="fail"),
        State("provisioned", 4, Role.REST),
        State("failed", 8, Role.FINAL),
        State("timed_out", 9, Role.FINAL),
    ],
    events=[
        Event("request", "new", "requested"),
        Event("done", "requested", "provisioned"),
        Event("broken", "requested", "failed"),
        Event("again", "requested", "new"),
        Event("time_out", "requested", "timed_out"),
        Event("check", "new", "checking"),
        Event("checked", "checking", "provisioned"),
        Event("reorder", "provisioned", "new"),
        Event("fail", ["new", "checking"], "failed"),
    ],
)

RULES = {"done": "done", "failed": "broken", "retry": "again", "data_key": "defs"}
UNKNOWN_TOKEN = "unknown correlation token for this resource"


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def store_url(reused_store_url: str) -> str:
    """Overrides the root conftest's: one database per module, emptied before each test."""
    return reused_store_url


@pytest.fixture
def s(store: EngineStore) -> EngineStore:
    """The migrated store of each dialect, also knowing the order kind."""
    store.register(order)
    return store


# --- helpers -------------------------------------------------------------------------------------


def waiting_order(
    s: EngineStore, token: str = "tok-1", keys: tuple[str, ...] = ("a", "b"), *, into: str = "request"
) -> Resource:
    """A new order, claimed and moved by ``into`` with a wait for ``keys`` under ``token``."""
    r = s.create("order")
    claims = [c for c in s.claim("w", [("order", "new")], limit=100, lease=LEASE) if c.resource.id == r.id]
    assert len(claims) == 1
    return s.fire_claimed(claims[0], into, wait=WaitPlan(token_hash(token), keys, RULES), actor="w")


def nothing_recorded(s: EngineStore, token: str = "tok-1") -> None:
    assert s.callbacks(token_hash(token)) == []
    assert s.unsettled(["order"]) == []


def seq_of(receipt: Receipt) -> int:
    """The inbox seq of an accepted callback."""
    assert receipt.delivery is Delivery.ACCEPTED, receipt
    assert receipt.seq is not None
    return receipt.seq


def refused(receipt: Receipt, reason: str) -> None:
    assert receipt.delivery is Delivery.REFUSED
    assert not receipt.accepted
    assert receipt.reason == reason


# --- receipts ------------------------------------------------------------------------------------


def test_token_hash_is_the_sha256_of_the_token() -> None:
    assert token_hash("abc") == hashlib.sha256(b"abc").hexdigest()
    assert token_hash("abc") != token_hash("abd")


def test_an_accepted_callback_is_recorded_and_leaves_the_resource_alone(s: EngineStore, clock: FakeClock) -> None:
    waiting = waiting_order(s)
    clock.advance(timedelta(seconds=3))
    seen = s.signal.seq
    receipt = s.deliver(waiting.id, "tok-1", "a", CallbackStatus.DONE, data={"url": "https://x"})
    assert (receipt.delivery, receipt.resource_id, receipt.key, receipt.reason) == (
        Delivery.ACCEPTED,
        waiting.id,
        "a",
        "",
    )
    assert receipt.accepted
    assert isinstance(receipt.seq, int)
    assert receipt.to_json() == {
        "delivery": "accepted",
        "resource_id": waiting.id,
        "key": "a",
        "reason": "",
        "seq": receipt.seq,
        "refusal": None,
    }
    [row] = s.callbacks(token_hash("tok-1"))
    assert row == CallbackRow(
        seq=receipt.seq,
        token_hash=token_hash("tok-1"),
        resource_id=waiting.id,
        key="a",
        status=CallbackStatus.DONE,
        data={"url": "https://x"},
        error=None,
        received_at=clock.now,
        applied_at=None,
        result=None,
    )
    assert s.unsettled(["order"]) == [row]
    assert s.get(waiting.id) == waiting
    assert all_journal(s, waiting.id)[-1].version == waiting.version
    assert s.signal.wait(seen, timeout=0) > seen, "a callback is work for the engine"


def test_status_may_be_given_as_text_and_errors_are_kept(s: EngineStore) -> None:
    waiting = waiting_order(s)
    assert s.deliver(waiting.id, "tok-1", "a", "failed", error="no capacity").delivery is Delivery.ACCEPTED
    assert s.deliver(waiting.id, "tok-1", "b", "retry").delivery is Delivery.ACCEPTED
    rows = s.callbacks(token_hash("tok-1"))
    assert [(r.key, r.status, r.error, dict(r.data)) for r in rows] == [
        ("a", CallbackStatus.FAILED, "no capacity", {}),
        ("b", CallbackStatus.RETRY, None, {}),
    ]


def test_the_same_answer_again_is_a_duplicate(s: EngineStore) -> None:
    waiting = waiting_order(s)
    first = s.deliver(waiting.id, "tok-1", "a", "done", data={"x": 1, "y": [1, 2]})
    again = s.deliver(waiting.id, "tok-1", "a", CallbackStatus.DONE, data={"y": [1, 2], "x": 1})
    assert again.delivery is Delivery.DUPLICATE
    assert again.accepted
    assert (again.seq, again.reason) == (first.seq, "already recorded (not applied yet)")
    assert len(s.callbacks(token_hash("tok-1"))) == 1


def test_no_data_and_empty_data_are_the_same_answer(s: EngineStore) -> None:
    waiting = waiting_order(s)
    assert s.deliver(waiting.id, "tok-1", "a", "done").delivery is Delivery.ACCEPTED
    assert s.deliver(waiting.id, "tok-1", "a", "done", data={}).delivery is Delivery.DUPLICATE


def test_a_duplicate_after_settling_says_how_it_was_applied(s: EngineStore) -> None:
    waiting = waiting_order(s)
    first = s.deliver(waiting.id, "tok-1", "a", "done")
    assert first.seq is not None
    s.mark_settled([first.seq], "recorded; still waiting for b")
    again = s.deliver(waiting.id, "tok-1", "a", "done")
    assert (again.delivery, again.seq) == (Delivery.DUPLICATE, first.seq)
    assert again.reason == "already recorded (applied: recorded; still waiting for b)"


def test_a_duplicate_stays_a_duplicate_after_the_resource_moved_on(s: EngineStore) -> None:
    waiting = waiting_order(s)
    first = s.deliver(waiting.id, "tok-1", "a", "done")
    s.fire(waiting, "time_out")
    again = s.deliver(waiting.id, "tok-1", "a", "done")
    assert (again.delivery, again.seq) == (Delivery.DUPLICATE, first.seq)


def test_a_wrong_token_is_refused(s: EngineStore) -> None:
    waiting = waiting_order(s)
    receipt = s.deliver(waiting.id, "tok-2", "a", "done")
    refused(receipt, UNKNOWN_TOKEN)
    assert receipt.seq is None
    nothing_recorded(s)
    nothing_recorded(s, "tok-2")


def test_the_token_of_another_resource_is_refused_like_an_unknown_one(s: EngineStore) -> None:
    mine = waiting_order(s, "tok-1")
    other = waiting_order(s, "tok-2")
    refused(s.deliver(other.id, "tok-1", "a", "done"), UNKNOWN_TOKEN)
    refused(s.deliver("no-such-resource", "tok-1", "a", "done"), UNKNOWN_TOKEN)
    assert s.unsettled(["order"]) == []
    assert s.deliver(mine.id, "tok-1", "a", "done").delivery is Delivery.ACCEPTED


def test_a_key_not_awaited_is_refused_naming_the_keys_expected(s: EngineStore) -> None:
    waiting = waiting_order(s, keys=("vm", "disk", "net"))
    refused(s.deliver(waiting.id, "tok-1", "zzz", "done"), "'zzz' is not awaited; expected one of vm, disk, net")
    nothing_recorded(s)


@pytest.mark.parametrize(
    "change",
    [
        {"status": "failed"},
        {"data": {"x": 2}},
        {"error": "flaky"},
        {"data": {}},
    ],
    ids=["status", "data", "error", "no-data"],
)
def test_a_different_answer_for_a_key_is_refused(s: EngineStore, change: Mapping[str, Any]) -> None:
    waiting = waiting_order(s)
    first = s.deliver(waiting.id, "tok-1", "a", "done", data={"x": 1})
    answer: dict[str, Any] = {"status": "done", "data": {"x": 1}, "error": None, **change}
    receipt = s.deliver(waiting.id, "tok-1", "a", answer["status"], data=answer["data"], error=answer["error"])
    refused(receipt, "a different answer for 'a' was already recorded")
    assert receipt.seq == first.seq
    [row] = s.callbacks(token_hash("tok-1"))
    assert (row.status, dict(row.data), row.error) == (CallbackStatus.DONE, {"x": 1}, None)


def test_an_answer_to_a_superseded_attempt_is_refused_naming_where_the_resource_is(s: EngineStore) -> None:
    waiting = waiting_order(s)
    assert waiting.version == 2
    s.fire(waiting, "time_out")
    refused(
        s.deliver(waiting.id, "tok-1", "b", "done"),
        "the attempt this token was issued for has been superseded (it waited in state 'requested' at "
        "version 2; the resource is now in state 'timed_out' at version 3)",
    )
    nothing_recorded(s)


def test_only_the_latest_attempt_takes_answers(s: EngineStore) -> None:
    first = waiting_order(s, "tok-1")
    assert s.deliver(first.id, "tok-1", "a", "retry").accepted
    retried = s.fire(first, "again")  # back to new: due for another attempt
    [c] = s.claim("w", [("order", "new")], lease=LEASE)
    assert c.resource.id == retried.id
    second = s.fire_claimed(c, "request", wait=WaitPlan(token_hash("tok-2"), ("a", "b"), RULES))
    assert second.version == 4
    receipt = s.deliver(first.id, "tok-1", "b", "done")
    assert receipt.delivery is Delivery.REFUSED
    assert "state 'requested' at version 2; the resource is now in state 'requested' at version 4" in receipt.reason
    assert s.deliver(first.id, "tok-2", "b", "done").delivery is Delivery.ACCEPTED
    assert [cb.key for cb in s.callbacks(token_hash("tok-2"))] == ["b"]


# --- provisional waits: a step read its token before saying what it waits for ------------------


def claimed_order(s: EngineStore) -> Claim:
    r = s.create("order")
    claims = [c for c in s.claim("w", [("order", "new")], limit=100, lease=LEASE) if c.resource.id == r.id]
    assert len(claims) == 1
    return claims[0]


def test_a_provisional_wait_records_answers_to_any_key(s: EngineStore) -> None:
    c = claimed_order(s)
    s.open_wait(c.resource, token_hash("early"))
    wait = s.wait(token_hash("early"))
    assert wait is not None
    assert wait.provisional
    assert (wait.resource_id, wait.version, wait.state, wait.keys, dict(wait.rules), wait.deadline) == (
        c.resource.id,
        1,
        "new",
        (),
        {},
        None,
    )
    assert s.deliver(c.resource.id, "early", "anything", "done").delivery is Delivery.ACCEPTED
    assert s.get(c.resource.id) == c.resource, "the claim and the row are untouched"


def test_the_write_into_the_wait_state_completes_the_provisional_wait(s: EngineStore, clock: FakeClock) -> None:
    c = claimed_order(s)
    s.open_wait(c.resource, token_hash("early"))
    early = seq_of(s.deliver(c.resource.id, "early", "a", "done", data={"x": 1}))
    clock.advance(timedelta(seconds=2))
    after = s.fire_claimed(c, "request", wait=WaitPlan(token_hash("early"), ("a", "b"), RULES))
    wait = s.wait(token_hash("early"))
    assert wait is not None
    assert not wait.provisional
    assert (wait.version, wait.state, wait.keys, dict(wait.rules), wait.deadline) == (
        2,
        "requested",
        ("a", "b"),
        RULES,
        after.deadline,
    )
    assert s.current_wait(c.resource.id, 2) == wait
    assert [cb.seq for cb in s.callbacks(token_hash("early"))] == [early], "the early answer is kept"
    again = s.deliver(c.resource.id, "early", "a", "done", data={"x": 1})
    assert (again.delivery, again.seq) == (Delivery.DUPLICATE, early)
    refused(s.deliver(c.resource.id, "early", "zzz", "done"), "'zzz' is not awaited; expected one of a, b")
    assert s.deliver(c.resource.id, "early", "b", "done").delivery is Delivery.ACCEPTED


def test_a_provisional_wait_is_superseded_when_the_step_ends_otherwise(s: EngineStore, clock: FakeClock) -> None:
    c = claimed_order(s)
    s.open_wait(c.resource, token_hash("early"))
    s.retry_later(c, error="flaky", at=clock.now, attempts=1)
    refused(
        s.deliver(c.resource.id, "early", "a", "done"),
        "the attempt this token was issued for has been superseded (it waited in state 'new' at version 1; "
        "the resource is now in state 'new' at version 2)",
    )
    nothing_recorded(s, "early")


def test_a_provisional_wait_takes_a_bounded_number_of_early_answers(s: EngineStore) -> None:
    c = claimed_order(s)
    s.open_wait(c.resource, token_hash("t"))
    for i in range(MAX_EARLY_CALLBACKS):
        assert s.deliver(c.resource.id, "t", f"k{i}", "done").delivery.value == "accepted"

    one_more = s.deliver(c.resource.id, "t", "one-more", "done")

    assert one_more.delivery.value == "refused"
    assert f"{MAX_EARLY_CALLBACKS} answers were already recorded" in one_more.reason
    assert s.deliver(c.resource.id, "t", "k0", "done").delivery.value == "duplicate"


# --- invalid deliveries --------------------------------------------------------------------------

Deliver = Callable[[EngineStore, str], object]


@pytest.mark.parametrize(
    ("deliver", "field", "constraint"),
    [
        (lambda s, rid: s.deliver(rid, "tok-1", "a", "maybe"), "status", "must be one of done, failed, retry"),
        (lambda s, rid: s.deliver(rid, "tok-1", "a", "DONE"), "status", "must be one of done, failed, retry"),
        (lambda s, rid: s.deliver(rid, "tok-1", "", "done"), "key", "must be 1 to 200 characters"),
        (lambda s, rid: s.deliver(rid, "tok-1", "k" * 201, "done"), "key", "must be 1 to 200 characters"),
        (lambda s, rid: s.deliver(rid, "tok-1", 7, "done"), "key", "must be 1 to 200 characters"),
        (lambda s, rid: s.deliver(rid, "tok-1", "a\x00", "done"), "key", "must not contain the NUL character (U+0000)"),
        (
            lambda s, rid: s.deliver(rid, "tok-1", "a", "failed", error="bad\x00"),
            "error",
            "must not contain the NUL character (U+0000)",
        ),
        (
            lambda s, rid: s.deliver(rid, "tok-1", "a", "failed", error="e" * 4001),
            "error",
            "must be text of at most 4000 characters",
        ),
        (
            lambda s, rid: s.deliver(rid, "tok-1", "a", "failed", error=3),
            "error",
            "must be text of at most 4000 characters",
        ),
    ],
    ids=[
        "status",
        "status-case",
        "empty-key",
        "long-key",
        "key-type",
        "nul-key",
        "nul-error",
        "long-error",
        "error-type",
    ],
)
def test_invalid_arguments_are_refused_before_anything_is_written(
    s: EngineStore, deliver: Deliver, field: str, constraint: str
) -> None:
    waiting = waiting_order(s)
    with pytest.raises(InvalidArgument) as info:
        deliver(s, waiting.id)
    assert (info.value.field, info.value.constraint) == (field, constraint)
    nothing_recorded(s)
    assert s.get(waiting.id) == waiting


def test_a_bad_status_names_the_allowed_values(s: EngineStore) -> None:
    waiting = waiting_order(s)
    with pytest.raises(InvalidArgument) as info:
        s.deliver(waiting.id, "tok-1", "a", "maybe")
    assert info.value.got == "maybe"
    assert str(info.value) == "status must be one of done, failed, retry, got 'maybe'"


def test_a_nul_in_the_error_reports_the_error(s: EngineStore) -> None:
    waiting = waiting_order(s)
    with pytest.raises(InvalidArgument) as info:
        s.deliver(waiting.id, "tok-1", "a", "failed", error="bad\x00")
    assert info.value.got == "bad\x00"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"x": object()}, "data"),
        ({"x": float("nan")}, "data"),
        ({"x": {"y": "nul\x00"}}, "data.x.y"),
        ({"nul\x00": 1}, "data.nul\x00"),
        (["not", "a", "mapping"], "data"),
    ],
    ids=["object", "nan", "nul-value", "nul-key", "list"],
)
def test_data_must_be_a_storable_json_object(s: EngineStore, data: Any, field: str) -> None:
    waiting = waiting_order(s)
    with pytest.raises(InvalidSpec) as info:
        s.deliver(waiting.id, "tok-1", "a", "done", data=data)
    assert info.value.kind == "callback"
    assert [f for f, _ in info.value.problems] == [field]
    nothing_recorded(s)


def test_the_longest_key_and_error_are_accepted(s: EngineStore) -> None:
    key = "k" * 200
    waiting = waiting_order(s, keys=(key,))
    receipt = s.deliver(waiting.id, "tok-1", key, "failed", error="e" * 4000)
    assert receipt.delivery is Delivery.ACCEPTED
    [row] = s.callbacks(token_hash("tok-1"))
    assert (row.key, row.error) == (key, "e" * 4000)


# --- reading the inbox ---------------------------------------------------------------------------


def test_waits_callbacks_and_unsettled_read_oldest_first(s: EngineStore, clock: FakeClock) -> None:
    one = waiting_order(s, "tok-1", ("a", "b"))
    two = waiting_order(s, "tok-2", ("a",))
    seqs = []
    for rid, token, key in ((two.id, "tok-2", "a"), (one.id, "tok-1", "b"), (one.id, "tok-1", "a")):
        clock.advance()
        receipt = s.deliver(rid, token, key, "done")
        assert receipt.seq is not None
        seqs.append(receipt.seq)
    assert seqs == sorted(seqs)
    assert [cb.key for cb in s.callbacks(token_hash("tok-1"))] == ["b", "a"]
    assert [cb.seq for cb in s.unsettled(["order"])] == seqs
    assert [cb.seq for cb in s.unsettled(["order"], limit=2)] == seqs[:2]
    assert s.wait(token_hash("tok-3")) is None
    assert s.callbacks(token_hash("tok-3")) == []


def test_mark_settled_settles_once(s: EngineStore, clock: FakeClock) -> None:
    waiting = waiting_order(s)
    a = seq_of(s.deliver(waiting.id, "tok-1", "a", "done"))
    b = seq_of(s.deliver(waiting.id, "tok-1", "b", "done"))
    clock.advance()
    settled_at = clock.now
    s.mark_settled([a], "first")
    clock.advance()
    s.mark_settled([a, b], "second")
    rows = {cb.seq: cb for cb in s.callbacks(token_hash("tok-1"))}
    assert (rows[a].applied_at, rows[a].result) == (settled_at, "first")
    assert (rows[b].applied_at, rows[b].result) == (clock.now, "second")
    assert s.unsettled(["order"]) == []


# --- applying callbacks: fire_settling -----------------------------------------------------------


def test_fire_settling_settles_exactly_the_given_callbacks_with_the_write(s: EngineStore, clock: FakeClock) -> None:
    waiting = waiting_order(s, "tok-1")
    other = waiting_order(s, "tok-2")
    a = seq_of(s.deliver(waiting.id, "tok-1", "a", "done", data={"ip": "10.0.0.1"}))
    b = seq_of(s.deliver(waiting.id, "tok-1", "b", "done"))
    elsewhere = seq_of(s.deliver(other.id, "tok-2", "a", "done"))
    clock.advance(timedelta(seconds=2))
    after = s.fire_settling(
        waiting,
        "done",
        [a, b],
        result="applied: fired done",
        data={"defs": {"a": {"status": "done"}}},
        actor="engine",
        detail={"callbacks": [a, b]},
    )
    assert (after.state, after.version, after.data) == ("provisioned", 3, {"defs": {"a": {"status": "done"}}})
    assert s.get(waiting.id) == after
    entry = all_journal(s, waiting.id)[-1]
    assert (entry.event, entry.actor, dict(entry.detail)) == ("done", "engine", {"callbacks": [a, b]})
    rows = {cb.seq: cb for cb in s.callbacks(token_hash("tok-1"))}
    assert {seq: (cb.applied_at, cb.result) for seq, cb in rows.items()} == {
        a: (clock.now, "applied: fired done"),
        b: (clock.now, "applied: fired done"),
    }
    assert [cb.seq for cb in s.unsettled(["order"])] == [elsewhere]


def test_fire_settling_loses_to_a_concurrent_write_and_settles_nothing(s: EngineStore) -> None:
    waiting = waiting_order(s)
    a = seq_of(s.deliver(waiting.id, "tok-1", "a", "done"))
    b = seq_of(s.deliver(waiting.id, "tok-1", "b", "done"))
    moved = s.fire(waiting, "time_out")  # the deadline sweep won the race
    with pytest.raises(Conflict) as info:
        s.fire_settling(waiting, "done", [a, b], result="applied")
    err = info.value
    assert type(err) is Conflict, "an unfenced write loses with a plain Conflict, not ClaimLost"
    assert not isinstance(err, ClaimLost)
    assert (err.resource_id, err.expected_version, err.actual_version, err.actual_state) == (
        waiting.id,
        2,
        3,
        "timed_out",
    )
    assert [cb.seq for cb in s.unsettled(["order"])] == [a, b]
    assert s.get(waiting.id) == moved
    assert all_journal(s, waiting.id)[-1].version == 3


def test_fire_settling_with_an_event_not_allowed_settles_nothing(s: EngineStore) -> None:
    waiting = waiting_order(s)
    a = seq_of(s.deliver(waiting.id, "tok-1", "a", "done"))
    with pytest.raises(TransitionNotAllowed):
        s.fire_settling(waiting, "checked", [a], result="applied")
    assert [cb.seq for cb in s.unsettled(["order"])] == [a]
    assert s.get(waiting.id) == waiting


def test_fire_settling_keeps_the_result_of_a_callback_already_settled(s: EngineStore) -> None:
    waiting = waiting_order(s)
    a = seq_of(s.deliver(waiting.id, "tok-1", "a", "done"))
    b = seq_of(s.deliver(waiting.id, "tok-1", "b", "done"))
    s.mark_settled([a], "recorded; still waiting for b")
    s.fire_settling(waiting, "done", [a, b], result="applied: fired done")
    results = {cb.seq: cb.result for cb in s.callbacks(token_hash("tok-1"))}
    assert results == {a: "recorded; still waiting for b", b: "applied: fired done"}


# --- callbacks do not wait for workers -----------------------------------------------------------


def test_callbacks_are_accepted_while_a_worker_holds_the_resource(s: EngineStore) -> None:
    checking = waiting_order(s, into="check")  # a work state that also waits for an answer
    [c] = s.claim("w2", [("order", "checking")], lease=LEASE)
    assert (c.resource.id, c.resource.version) == (checking.id, checking.version)
    receipt = s.deliver(checking.id, "tok-1", "a", "done")
    assert receipt.delivery is Delivery.ACCEPTED
    assert s.get(checking.id) == c.resource, "the claim is untouched"
    assert s.renew([c], lease=LEASE) == {c.token}
    assert s.fire_claimed(c, "checked").state == "provisioned"


@pytest.mark.postgres
def test_delivery_does_not_wait_for_an_uncommitted_write_of_the_resource(pg_url: str, clock: FakeClock) -> None:
    """A transaction that updated the resource row and has not committed yet does not hold deliveries up."""
    s = open_store(pg_url, [order], clock=clock, check_schema=False)
    try:
        s.migrate()
        waiting = waiting_order(s)
        outcome: list[Receipt] = []
        with psycopg.connect(pg_url) as locker:
            locker.execute("UPDATE resources SET claimed_by = 'somebody' WHERE id = %s", (waiting.id,))
            t = threading.Thread(target=lambda: outcome.append(s.deliver(waiting.id, "tok-1", "a", "done")))
            t.start()
            t.join(timeout=10)
            still_locked = t.is_alive()
            locker.rollback()
        t.join(timeout=10)
        assert not still_locked, "a delivery waited for the uncommitted write of the resource row"
        assert [r.delivery for r in outcome] == [Delivery.ACCEPTED]
    finally:
        s.close()


# --- racing deliveries ---------------------------------------------------------------------------

THREADS = 8
KEYS = ("k0", "k1", "k2", "k3", "k4")


def race(url: str, clock: FakeClock, deliver: Callable[[EngineStore, int, str], Receipt]) -> dict[str, list[Receipt]]:
    """Every thread (each with its own store) delivers every key, all threads at once per key."""
    barrier = threading.Barrier(THREADS)
    receipts: dict[str, list[Receipt]] = {k: [] for k in KEYS}
    failures: list[str] = []

    def thread(n: int) -> None:
        store = open_store(url, [order], clock=clock)
        try:
            for key in KEYS:
                barrier.wait(60)
                receipts[key].append(deliver(store, n, key))
        except BaseException as exc:
            failures.append(f"thread {n}: {exc!r}")
            barrier.abort()
        finally:
            store.close()

    threads = [threading.Thread(target=thread, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert not any(t.is_alive() for t in threads), "a delivering thread hung"
    assert failures == []
    return receipts


def test_racing_duplicates_are_accepted_exactly_once(s: EngineStore, store_url: str, clock: FakeClock) -> None:
    waiting = waiting_order(s, keys=KEYS)
    receipts = race(store_url, clock, lambda st, n, key: st.deliver(waiting.id, "tok-1", key, "done", data={"k": key}))
    rows = {cb.key: cb for cb in s.callbacks(token_hash("tok-1"))}
    assert sorted(rows) == list(KEYS)
    for key, got in receipts.items():
        kinds = sorted(r.delivery.value for r in got)
        assert kinds == ["accepted"] + ["duplicate"] * (THREADS - 1), (key, got)
        assert {r.seq for r in got} == {rows[key].seq}


def test_racing_different_answers_keep_the_first(s: EngineStore, store_url: str, clock: FakeClock) -> None:
    waiting = waiting_order(s, keys=KEYS)
    receipts = race(store_url, clock, lambda st, n, key: st.deliver(waiting.id, "tok-1", key, "done", data={"n": n}))
    rows = {cb.key: cb for cb in s.callbacks(token_hash("tok-1"))}
    for key, got in receipts.items():
        winners = [r for r in got if r.delivery is Delivery.ACCEPTED]
        assert len(winners) == 1, (key, got)
        assert all(r.reason == f"a different answer for {key!r} was already recorded" for r in got if r not in winners)
        assert {r.seq for r in got} == {rows[key].seq}
    assert len(rows) == len(KEYS)


# --- the PostgreSQL relay of other processes' writes ---------------------------------------------

RELAY_TIMEOUT = 10.0


def bumped(signal: WorkSignal, seen: int) -> int:
    """Wait (up to RELAY_TIMEOUT) for ``signal`` to move past ``seen``; returns its new value."""
    now = signal.wait(seen, RELAY_TIMEOUT)
    assert now != seen, f"the signal did not move within {RELAY_TIMEOUT:g}s"
    return now


def listen_backends(url: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND query LIKE '%LISTEN tenure_%' AND pid <> pg_backend_pid()"
        ).fetchall()
    return [int(r[0]) for r in rows]


def eventually(check: Callable[[], bool], what: str, timeout: float = RELAY_TIMEOUT) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, f"not within {timeout:g}s: {what}"
        time.sleep(0.02)


def start_listening(s: EngineStore) -> int:
    """Start the store's listener; returns the signal's value once the listener is subscribed."""
    before = s.signal.seq
    listener = s.listen()
    assert listener is not None
    assert listener.connected.wait(RELAY_TIMEOUT)
    return bumped(s.signal, before)  # every (re)connection bumps the signal once


def test_another_store_objects_writes_wake_the_listening_store(
    s: EngineStore, store_url: str, clock: FakeClock
) -> None:
    """PostgreSQL relays its triggers' NOTIFY; SQLite watches the file's data_version."""
    seen = start_listening(s)
    assert s.listen() is s.listen(), "one listener per store"
    writer = open_store(store_url, [order], clock=clock)
    try:
        r = writer.create("order")
        seen = bumped(s.signal, seen)
        [c] = writer.claim("w", [("order", "new")], lease=LEASE)
        waiting = writer.fire_claimed(c, "request", wait=WaitPlan(token_hash("tok-1"), ("a",), RULES))
        seen = bumped(s.signal, seen)
        assert writer.deliver(r.id, "tok-1", "a", "done").accepted
        seen = bumped(s.signal, seen)
        writer.fire(writer.fire(waiting, "done"), "reorder")  # back into a work state
        bumped(s.signal, seen)
    finally:
        writer.close()


@pytest.fixture
def pg_pair(pg_url: str, clock: FakeClock) -> Iterator[tuple[EngineStore, EngineStore]]:
    """Two store objects on one fresh database of its own: the first listens, the second writes."""
    listening = open_store(pg_url, [order], clock=clock, check_schema=False)
    listening.migrate()
    writing = open_store(pg_url, [order], clock=clock)
    try:
        yield listening, writing
    finally:
        writing.close()
        listening.close()


@pytest.mark.postgres
def test_the_listener_reconnects_after_its_connection_is_killed(
    pg_pair: tuple[EngineStore, EngineStore], pg_url: str
) -> None:
    listening, writer = pg_pair
    seen = start_listening(listening)
    listener = listening.listen()
    assert listener is not None
    eventually(lambda: len(listen_backends(pg_url)) == 1, "the listener's connection shows up")
    [victim] = listen_backends(pg_url)

    with psycopg.connect(pg_url, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (victim,)).fetchone() == (True,)
    eventually(lambda: listener.connects >= 2, "the listener reconnects")
    seen = bumped(listening.signal, seen)  # the reconnection tells waiters to look for themselves
    assert listener.failures >= 1
    assert listener.last_error
    eventually(lambda: len(listen_backends(pg_url)) == 1, "one listening connection again")
    assert listen_backends(pg_url) != [victim]

    writer.create("order")
    bumped(listening.signal, seen)


@pytest.mark.postgres
def test_closing_the_store_stops_its_listener(pg_url: str, clock: FakeClock) -> None:
    s = open_store(pg_url, [order], clock=clock, check_schema=False)
    s.migrate()
    start_listening(s)
    eventually(lambda: len(listen_backends(pg_url)) == 1, "the listener's connection shows up")
    s.close()
    eventually(lambda: listen_backends(pg_url) == [], "the listener's connection is closed")
