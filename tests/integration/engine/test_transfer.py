"""The ``transfer`` kind end to end: its steps, provisioner plug-ins and callbacks, driven by a worker.

Synchronous plug-ins answer at once; asynchronous ones answer pending and the test plays their
callbacks with the token each request carried. Flows are also run as steps (``flow_step``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import pytest

from tenure import (
    Backoff,
    Event,
    InvalidSpec,
    Kind,
    ProvisionRequest,
    ProvisionResult,
    Role,
    State,
    Steps,
    TenureError,
    Worker,
    open_store,
)
from tenure.engine.flows import FlowStep, flow_step
from tenure.engine.provision import MemoryProvisioner
from tenure.flow import FunctionTask, linear
from tenure.kinds.transfer import transfer_kind, transfer_steps
from tenure.store.protocol import EngineStore
from tests.store_support import FakeClock

DEADLINE = timedelta(minutes=1)
BACKOFF = Backoff(max_attempts=8, base=timedelta(seconds=1), cap=timedelta(seconds=10), jitter=0)

Eventually = Callable[[Callable[[], object], str], None]

SYNC_LIFECYCLE = ["@create", "provision", "provisioned", "request", "requested", "start", "started"]
ENDING = ["complete", "completed", "deprovision", "deprovisioned"]


def make_worker(
    store: EngineStore,
    provisioners: Mapping[str, object],
    *,
    max_attempts: int = 5,
    retry: Backoff = BACKOFF,
) -> Worker:
    kind = transfer_kind(request_deadline=DEADLINE, retry=retry)
    steps = transfer_steps(provisioners, kind=kind, max_attempts=max_attempts)
    return Worker(store, steps, name="mover", rand=lambda: 1.0)


def events(store: EngineStore, resource_id: str) -> list[str]:
    return [e.event for e in store.journal(resource_id)]


def two_async(asset: str = "a-1") -> dict[str, Any]:
    return {"asset": asset, "resources": [{"id": "bucket", "type": "async"}, {"id": "queue", "type": "async"}]}


def drive(
    worker: Worker, store: EngineStore, clock: FakeClock, resource_id: str, *, until: str, limit: int = 100
) -> None:
    """Run the worker, jumping the clock to the next retry or deadline, until the resource is ``until``."""
    for _ in range(limit):
        worker.run_until_idle()
        r = store.get(resource_id)
        if r.state == until:
            return
        upcoming = [t for t in (r.next_attempt_at, r.deadline) if t is not None]
        assert upcoming, f"{resource_id} is stuck in {r.state!r}"
        clock.now = max(clock.now, min(upcoming))
    pytest.fail(f"{resource_id} did not reach {until!r} (it is in {store.get(resource_id).state!r})")


class Scripted:
    """A synchronous provisioner whose answers are given per action; it records every request.

    ``makes`` says whether a provision call creates the thing before answering (an answer of retry
    after a timeout, say, when the thing was made all the same).
    """

    def __init__(
        self,
        *,
        provision: Callable[[ProvisionRequest], ProvisionResult] | None = None,
        deprovision: Callable[[ProvisionRequest], ProvisionResult] | None = None,
        makes: bool = True,
    ) -> None:
        self._provision = provision or (lambda r: ProvisionResult.done({"name": r.definition.id}))
        self._deprovision = deprovision or (lambda r: ProvisionResult.done())
        self.makes = makes
        self.made: set[str] = set()
        self.requests: list[ProvisionRequest] = []

    def provision(self, request: ProvisionRequest) -> ProvisionResult:
        self.requests.append(request)
        if self.makes:
            self.made.add(request.definition.id)
        return self._provision(request)

    def deprovision(self, request: ProvisionRequest) -> ProvisionResult:
        self.requests.append(request)
        result = self._deprovision(request)
        if result.status.value == "done":
            self.made.discard(request.definition.id)
        return result

    def calls(self, action: str) -> list[tuple[str, int]]:
        return [(r.definition.id, r.attempt) for r in self.requests if r.action == action]


def raising(exc: Exception) -> Callable[[ProvisionRequest], ProvisionResult]:
    def answer(request: ProvisionRequest) -> ProvisionResult:
        raise exc

    return answer


# --- synchronous plug-ins --------------------------------------------------------------------------


def test_a_transfer_runs_its_whole_lifecycle_with_a_synchronous_provisioner(store: EngineStore) -> None:
    memory = MemoryProvisioner()
    worker = make_worker(store, {"memory": memory})
    spec = {"asset": "a-1", "resources": [{"id": "bucket", "type": "memory", "spec": {"size_gb": 5}}]}
    r = store.create("transfer", spec)

    worker.run_until_idle()

    started = store.get(r.id)
    assert started.state == "started"
    assert events(store, r.id) == SYNC_LIFECYCLE
    assert memory.made == {f"{r.id}/bucket": {"size_gb": 5}}
    assert started.data["provision"] == {
        "bucket": {"type": "memory", "status": "done", "attempts": 1, "error": None, "data": {"name": f"{r.id}/bucket"}}
    }
    assert started.data["start"]["dataplane"]["data"] == {"endpoint": f"memory://{r.id}"}
    assert worker.run_until_idle() == 0, "started is a rest state: nothing runs until the client acts"

    store.fire(r.id, "complete", actor="client")
    worker.run_until_idle()

    done = store.get(r.id)
    assert (done.state, done.error, done.data["ended"]) == ("deprovisioned", None, "completed")
    assert events(store, r.id) == SYNC_LIFECYCLE + ENDING
    assert memory.made == {}
    assert [(q.action, q.definition.id, q.attempt) for q in memory.requests] == [
        ("provision", "bucket", 1),
        ("start", "dataplane", 1),
        ("deprovision", "bucket", 1),
    ]
    assert all(q.resource_id == r.id for q in memory.requests)
    actors = {e.actor for e in store.journal(r.id)} - {None}
    assert actors == {"mover", "client"}


def test_a_client_terminate_deprovisions_and_records_how_it_ended(store: EngineStore) -> None:
    memory = MemoryProvisioner()
    worker = make_worker(store, {"memory": memory})
    r = store.create("transfer", {"asset": "a-1"})
    worker.run_until_idle()

    store.fire(r.id, "terminate", actor="client")
    worker.run_until_idle()

    after = store.get(r.id)
    assert (after.state, after.data["ended"]) == ("deprovisioned", "terminated")
    assert events(store, r.id) == [*SYNC_LIFECYCLE, "terminate", "terminated", "deprovision", "deprovisioned"]
    assert memory.made == {}


@pytest.mark.parametrize(
    "forged",
    [{"destination": "x"}, None, ["bucket"], {"bucket": {"status": "failed"}}],
    ids=["object", "null", "list", "not-provisioned"],
)
def test_a_client_event_cannot_rewrite_what_was_provisioned_so_deprovisioning_still_happens(
    store: EngineStore, forged: object
) -> None:
    memory = MemoryProvisioner()
    worker = make_worker(store, {"memory": memory})
    r = store.create("transfer", {"asset": "a-1", "resources": [{"id": "bucket", "type": "memory"}]})
    worker.run_until_idle()
    started = store.get(r.id)
    assert memory.made == {f"{r.id}/bucket": {}}

    with pytest.raises(InvalidSpec) as refused:
        store.fire(started, "complete", data={"provision": forged, "note": "done"}, actor="client")
    assert [field for field, _ in refused.value.problems] == ["data.provision"]
    assert "written by the kind's steps only" in str(refused.value)
    assert store.get(r.id) == started, "nothing written"
    for key in ("start", "deprovision", "ended"):
        with pytest.raises(InvalidSpec):
            store.fire(started, "complete", data={key: {}}, actor="client")

    store.fire(started, "complete", data={"note": "done"}, actor="client")  # data of its own is fine
    worker.run_until_idle()

    done = store.get(r.id)
    assert (done.state, done.data["ended"], done.data["note"]) == ("deprovisioned", "completed", "done")
    assert memory.made == {}, "what was provisioned was deprovisioned"
    assert ("deprovision", "bucket") in [(q.action, q.definition.id) for q in memory.requests]


def test_a_create_cannot_plant_what_the_steps_would_have_provisioned(store: EngineStore) -> None:
    make_worker(store, {"memory": MemoryProvisioner()})  # knows the transfer kind
    with pytest.raises(InvalidSpec) as refused:
        store.create("transfer", {"asset": "a-1"}, data={"provision": {"destination": {"status": "done"}}})
    assert [field for field, _ in refused.value.problems] == ["data.provision"]
    assert store.list(kind="transfer").items == []


def test_the_built_in_transfer_refuses_at_create_a_type_no_provisioner_serves(store_url: str) -> None:
    """A transfer that could never run is refused when it is created, naming the types that can."""
    from tenure.kinds.transfer import transfer

    s = open_store(store_url, [transfer], check_schema=False)
    try:
        s.migrate()
        with pytest.raises(InvalidSpec) as refused:
            s.create("transfer", {"asset": "a-1", "resources": [{"id": "b", "type": "s3"}], "dataplane": "kafka"})
        problems = dict(refused.value.problems)
        assert "'s3' has no provisioner here (known types: memory)" in problems["resources"]
        assert "'kafka' has no provisioner here (known types: memory)" in problems["dataplane"]
        assert s.list(kind="transfer").items == [], "nothing written"
        assert s.create("transfer", {"asset": "a-1"}).state == "initial", "the known type is taken"
    finally:
        s.close()


# --- asynchronous plug-ins -------------------------------------------------------------------------


def test_an_asynchronous_provisioner_is_waited_for_and_its_callbacks_move_the_transfer_on(
    store: EngineStore, clock: FakeClock
) -> None:
    slow = MemoryProvisioner(asynchronous=True)
    worker = make_worker(store, {"async": slow, "memory": MemoryProvisioner()})
    r = store.create("transfer", two_async())

    worker.run_until_idle()

    waiting = store.get(r.id)
    assert waiting.state == "provisioning_requested"
    assert waiting.deadline == clock.now + DEADLINE
    assert [(q.action, q.key, q.attempt) for q in slow.requests] == [
        ("provision", "bucket", 1),
        ("provision", "queue", 1),
    ]
    token = slow.requests[0].token
    assert slow.requests[1].token == token, "one token for the attempt, one key per definition"
    assert [q.idempotency_key for q in slow.requests] == [f"{r.id}/provision/bucket", f"{r.id}/provision/queue"]
    wait = store.current_wait(r.id, waiting.version)
    assert wait is not None
    assert wait.keys == ("bucket", "queue")

    for q in slow.requests:
        assert store.deliver(r.id, q.token, q.key, "done", data={"arn": f"arn:{q.key}"}).accepted
    worker.run_until_idle()

    started = store.get(r.id)
    assert started.state == "started"
    assert {k: (v["status"], v["data"]) for k, v in started.data["provision"].items()} == {
        "bucket": ("done", {"arn": "arn:bucket"}),
        "queue": ("done", {"arn": "arn:queue"}),
    }

    store.fire(r.id, "complete", actor="client")
    worker.run_until_idle()
    assert store.get(r.id).state == "deprovisioning_requested"
    asked = [q for q in slow.requests if q.action == "deprovision"]
    assert [q.key for q in asked] == ["bucket", "queue"]
    assert asked[0].token != token
    assert [q.idempotency_key for q in asked] == [f"{r.id}/deprovision/bucket", f"{r.id}/deprovision/queue"]
    for q in asked:
        assert store.deliver(r.id, q.token, q.key, "done").accepted
    worker.run_until_idle()

    assert store.get(r.id).state == "deprovisioned"
    assert slow.made == {}
    assert events(store, r.id) == [
        "@create", "provision", "provision_requested", "provisioned", "request", "requested", "start", "started",
        "complete", "completed", "deprovision", "deprovision_requested", "deprovisioned",
    ]  # fmt: skip


def test_after_a_partial_success_only_the_definitions_not_done_are_provisioned_again(store: EngineStore) -> None:
    slow = MemoryProvisioner(asynchronous=True)
    worker = make_worker(store, {"async": slow, "memory": MemoryProvisioner()})
    r = store.create("transfer", two_async())
    worker.run_until_idle()
    first = {q.key: q for q in slow.requests}

    store.deliver(r.id, first["bucket"].token, "bucket", "done", data={"arn": "arn:bucket"})
    store.deliver(r.id, first["queue"].token, "queue", "retry", error="throttled")
    worker.run_until_idle()

    again = store.get(r.id)
    assert again.state == "provisioning_requested"
    assert [(q.key, q.attempt) for q in slow.requests] == [("bucket", 1), ("queue", 1), ("queue", 2)]
    wait = store.current_wait(r.id, again.version)
    assert wait is not None
    assert wait.keys == ("queue",)
    assert again.data["provision"]["bucket"]["status"] == "done"
    assert events(store, r.id)[-3:] == ["provision_requested", "provision_retry", "provision_requested"]

    retried = slow.requests[-1]
    assert retried.idempotency_key == first["queue"].idempotency_key == f"{r.id}/provision/queue"
    assert retried.token != first["queue"].token, "the retry is a new ask: answers come under its token"
    store.deliver(r.id, retried.token, "queue", "done", data={"arn": "arn:queue"})
    worker.run_until_idle()

    after = store.get(r.id)
    assert after.state == "started"
    assert {k: v["data"] for k, v in after.data["provision"].items()} == {
        "bucket": {"arn": "arn:bucket"},
        "queue": {"arn": "arn:queue"},
    }


def test_a_failed_callback_terminates_and_deprovisions_what_was_asked_for(store: EngineStore) -> None:
    slow = MemoryProvisioner(asynchronous=True)
    worker = make_worker(store, {"async": slow, "memory": MemoryProvisioner()})
    r = store.create("transfer", two_async())
    worker.run_until_idle()
    first = {q.key: q for q in slow.requests}

    store.deliver(r.id, first["queue"].token, "queue", "failed", error="no such region")
    worker.run_until_idle()

    after = store.get(r.id)
    assert after.state == "deprovisioning_requested", "the pending bucket may exist: it is deprovisioned"
    assert [q.key for q in slow.requests if q.action == "deprovision"] == ["bucket"]
    assert after.data["provision"]["queue"] == {
        "type": "async", "status": "failed", "attempts": 1, "error": "no such region", "data": {},
    }  # fmt: skip
    assert events(store, r.id)[2:] == [
        "provision_requested", "provision_failed", "terminated", "deprovision", "deprovision_requested",
    ]  # fmt: skip


# --- plug-ins that fail ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(lambda r: ProvisionResult.failed("quota exceeded"), id="answers-failed"),
        pytest.param(raising(TenureError("quota exceeded")), id="raises-a-tenure-error"),
    ],
)
def test_a_provisioner_failing_for_good_terminates_the_transfer(
    store: EngineStore, answer: Callable[[ProvisionRequest], ProvisionResult]
) -> None:
    refusing = Scripted(provision=answer, makes=False)
    worker = make_worker(store, {"memory": refusing})
    r = store.create("transfer", {"asset": "a-1"})

    worker.run_until_idle()

    after = store.get(r.id)
    assert (after.state, after.data["ended"]) == ("deprovisioned", "failed")
    assert after.data["failure"], "a transfer that failed keeps why, after its error gave way"
    assert events(store, r.id) == [
        "@create", "provision", "provision_failed", "terminated", "deprovision", "deprovisioned",
    ]  # fmt: skip
    assert after.data["provision"]["destination"]["status"] == "failed"
    assert after.data["provision"]["destination"]["error"] == "quota exceeded"
    assert refusing.calls("provision") == [("destination", 1)]
    assert refusing.calls("deprovision") == [], "what failed was never made: nothing to deprovision"
    failed = next(e for e in store.journal(r.id) if e.event == "provision_failed")
    assert failed.to_state == "terminating"


def test_a_provisioner_that_always_asks_for_a_retry_is_retried_up_to_its_limit(
    store: EngineStore, clock: FakeClock
) -> None:
    flaky = Scripted(provision=raising(ConnectionError("unreachable")), makes=False)
    worker = make_worker(store, {"memory": flaky}, max_attempts=3)
    r = store.create("transfer", {"asset": "a-1"})

    drive(worker, store, clock, r.id, until="deprovisioned")

    assert flaky.calls("provision") == [("destination", 1), ("destination", 2), ("destination", 3)]
    assert flaky.calls("deprovision") == [("destination", 1)], "asked for three times: it may exist"
    assert {q.idempotency_key for q in flaky.requests if q.action == "provision"} == {
        f"{r.id}/provision/destination"
    }, "one idempotency key for every ask about the definition"
    after = store.get(r.id)
    assert after.data["provision"]["destination"] == {
        "type": "memory", "status": "failed", "last_status": "retry", "attempts": 3,
        "error": "gave up after 3 attempts", "data": {},
    }  # fmt: skip
    assert after.data["deprovision"]["destination"]["status"] == "done"
    assert events(store, r.id) == [
        "@create", "provision", "@retry", "@retry", "@retry", "provision_failed", "terminated", "deprovision",
        "deprovisioned",
    ]  # fmt: skip
    retries = [e for e in store.journal(r.id) if e.event == "@retry"]
    assert {e.detail["error"] for e in retries} == {"destination: ConnectionError: unreachable"}
    assert [e.detail["attempt"] for e in retries] == [1, 2, 3]


def test_the_states_retry_limit_also_bounds_a_retrying_provisioner(store: EngineStore, clock: FakeClock) -> None:
    flaky = Scripted(provision=lambda r: ProvisionResult.retry("busy"), makes=False)
    worker = make_worker(store, {"memory": flaky}, max_attempts=10, retry=Backoff(max_attempts=2, jitter=0))
    r = store.create("transfer", {"asset": "a-1"})

    drive(worker, store, clock, r.id, until="deprovisioned")

    assert flaky.calls("provision") == [("destination", 1), ("destination", 2)]
    assert events(store, r.id)[:4] == ["@create", "provision", "@retry", "provision_failed"]


@pytest.mark.parametrize("how", ["retry-answers", "deadlines"])
def test_a_definition_given_up_on_is_still_deprovisioned(store: EngineStore, clock: FakeClock, how: str) -> None:
    plugin: Scripted | MemoryProvisioner
    if how == "retry-answers":
        # Made each time, but the answer is lost to a timeout: the provisioner asks for a retry.
        plugin = Scripted(provision=lambda r: ProvisionResult.retry("timed out"), makes=True)
        last_status = "retry"
    else:
        plugin = MemoryProvisioner(asynchronous=True)  # made when asked, but never answers
        last_status = "pending"
    worker = make_worker(store, {"memory": plugin}, max_attempts=2)
    r = store.create("transfer", {"asset": "a-1"})

    if isinstance(plugin, MemoryProvisioner):
        drive(worker, store, clock, r.id, until="deprovisioning_requested")
        asked = plugin.requests[-1]
        assert (asked.action, asked.key) == ("deprovision", "destination")
        assert store.deliver(r.id, asked.token, asked.key, "done").accepted
        worker.run_until_idle()
    else:
        drive(worker, store, clock, r.id, until="deprovisioned")

    after = store.get(r.id)
    assert (after.state, after.data["ended"]) == ("deprovisioned", "failed")
    assert after.data["failure"], "a transfer that failed keeps why, after its error gave way"
    given_up = after.data["provision"]["destination"]
    assert (given_up["status"], given_up["last_status"], given_up["attempts"], given_up["error"]) == (
        "failed",
        last_status,
        2,
        "gave up after 2 attempts",
    )
    actions = [(q.action, q.attempt) for q in plugin.requests]
    assert actions == [("provision", 1), ("provision", 2), ("deprovision", 1)]
    assert not plugin.made, f"left behind: {plugin.made}"


def test_a_definition_that_failed_for_good_before_the_limit_is_not_deprovisioned(store: EngineStore) -> None:
    """The other side of the rule: an answer of failed says nothing was made, whatever came before."""
    answers = iter([ProvisionResult.retry("busy"), ProvisionResult.failed("no such region")])
    plugin = Scripted(provision=lambda r: next(answers), makes=False)
    worker = make_worker(store, {"memory": plugin}, max_attempts=5, retry=Backoff(max_attempts=5, base=timedelta(0)))
    r = store.create("transfer", {"asset": "a-1"})

    worker.run_until_idle()

    after = store.get(r.id)
    assert (after.state, after.data["ended"]) == ("deprovisioned", "failed")
    assert after.data["failure"], "a transfer that failed keeps why, after its error gave way"
    assert after.data["provision"]["destination"]["status"] == "failed"
    assert "last_status" not in after.data["provision"]["destination"]
    assert plugin.calls("provision") == [("destination", 1), ("destination", 2)]
    assert plugin.calls("deprovision") == []


def test_a_deprovisioning_that_fails_ends_in_deprovisioning_failed(store: EngineStore) -> None:
    stuck = Scripted(deprovision=lambda r: ProvisionResult.failed("bucket not empty"))
    worker = make_worker(store, {"memory": stuck, "plane": MemoryProvisioner()})
    r = store.create("transfer", {"asset": "a-1", "dataplane": "plane"})
    worker.run_until_idle()
    store.fire(r.id, "complete", actor="client")

    worker.run_until_idle()

    after = store.get(r.id)
    assert after.state == "deprovisioning_failed"
    assert after.state != "deprovisioned"
    assert after.error == "destination: bucket not empty"
    assert after.data["ended"] == "completed"
    assert after.data["deprovision"]["destination"]["status"] == "failed"
    assert events(store, r.id) == [*SYNC_LIFECYCLE, "complete", "completed", "deprovision", "deprovision_failed"]
    assert stuck.made == {"destination"}


def test_an_asynchronous_deprovisioning_answered_failed_ends_in_deprovisioning_failed(store: EngineStore) -> None:
    slow = MemoryProvisioner(asynchronous=True)
    worker = make_worker(store, {"async": slow, "memory": MemoryProvisioner()})
    r = store.create("transfer", {"asset": "a-1", "resources": [{"id": "bucket", "type": "async"}]})
    worker.run_until_idle()
    q = slow.requests[0]
    store.deliver(r.id, q.token, q.key, "done")
    worker.run_until_idle()
    store.fire(r.id, "terminate", actor="client")
    worker.run_until_idle()
    gone = slow.requests[-1]
    assert (gone.action, store.get(r.id).state) == ("deprovision", "deprovisioning_requested")

    store.deliver(r.id, gone.token, gone.key, "failed", error="access denied")
    worker.run_until_idle()

    after = store.get(r.id)
    assert (after.state, after.error) == ("deprovisioning_failed", "bucket: access denied")
    assert events(store, r.id)[-1] == "deprovision_failed"


# --- deadlines ------------------------------------------------------------------------------------


def test_the_provisioning_deadline_asks_again_up_to_max_attempts(store: EngineStore, clock: FakeClock) -> None:
    silent = MemoryProvisioner(asynchronous=True)
    worker = make_worker(store, {"memory": silent}, max_attempts=3)
    r = store.create("transfer", {"asset": "a-1"})

    worker.run_until_idle()
    for attempt in (1, 2, 3):
        waiting = store.get(r.id)
        assert waiting.state == "provisioning_requested"
        assert [q.attempt for q in silent.requests] == list(range(1, attempt + 1))
        clock.advance(DEADLINE - timedelta(microseconds=1))
        assert worker.run_until_idle() == 0
        clock.advance(timedelta(microseconds=1))
        worker.run_until_idle()

    provisions = [q for q in silent.requests if q.action == "provision"]
    assert [q.attempt for q in provisions] == [1, 2, 3]
    assert len({q.token for q in provisions}) == 3, "every attempt hands out its own token"
    assert {q.idempotency_key for q in provisions} == {f"{r.id}/provision/destination"}, (
        "a deadline re-ask is a repeat: the same idempotency key"
    )
    waiting = store.get(r.id)
    assert waiting.state == "deprovisioning_requested", "asked for and never answered: it may exist"
    assert waiting.data["provision"]["destination"]["error"] == "gave up after 3 attempts"
    assert waiting.data["provision"]["destination"]["last_status"] == "pending"
    (gone,) = [q for q in silent.requests if q.action == "deprovision"]
    assert (gone.key, gone.idempotency_key) == ("destination", f"{r.id}/deprovision/destination")
    assert store.deliver(r.id, gone.token, gone.key, "done").accepted
    worker.run_until_idle()

    after = store.get(r.id)
    assert after.state == "deprovisioned"
    asked = ["provision_requested", "provision_timed_out"]
    assert events(store, r.id) == [
        "@create", "provision", *asked, *asked, *asked, "provision_failed", "terminated", "deprovision",
        "deprovision_requested", "deprovisioned",
    ]  # fmt: skip
    timed_out = [e for e in store.journal(r.id) if e.event == "provision_timed_out"]
    assert all("deadline" in e.detail for e in timed_out)

    late = silent.requests[0]
    assert not store.deliver(r.id, late.token, late.key, "done").accepted


def test_a_deadline_re_ask_does_not_re_provision_a_definition_that_answered_done(
    store: EngineStore, clock: FakeClock
) -> None:
    provisioner = MemoryProvisioner(asynchronous=True)
    worker = make_worker(store, {"async": provisioner})
    r = store.create("transfer", two_async())
    worker.run_until_idle()
    assert store.get(r.id).state == "provisioning_requested"

    token = provisioner.requests[-1].token
    assert store.deliver(r.id, token, "bucket", "done", data={"url": "s3://b"}).accepted
    worker.run_until_idle()  # recorded; still waiting for queue
    provisioner.requests.clear()
    clock.advance(DEADLINE + timedelta(seconds=1))

    worker.run_until_idle()  # the deadline fires provision_timed_out; the step asks again

    assert store.get(r.id).state == "provisioning_requested"
    assert [q.definition.id for q in provisioner.requests] == ["queue"]


# --- in the background ------------------------------------------------------------------------------


def test_a_started_worker_applies_callbacks_as_they_arrive(
    real_store: EngineStore, start_worker: Callable[[Worker], Worker], eventually: Eventually
) -> None:
    slow = MemoryProvisioner(asynchronous=True)
    worker = make_worker(real_store, {"async": slow, "memory": MemoryProvisioner()})
    r = real_store.create("transfer", two_async())
    start_worker(worker)
    eventually(lambda: real_store.get(r.id).state == "provisioning_requested", "the transfer waits")
    eventually(lambda: len(slow.requests) == 2, "both definitions were asked for")

    for q in list(slow.requests):
        real_store.deliver(r.id, q.token, q.key, "done")

    eventually(lambda: real_store.get(r.id).state == "started", "the callbacks moved the transfer on")


# --- flows as steps -------------------------------------------------------------------------------

build = Kind(
    "build",
    initial="building",
    states=[
        State("building", 1, Role.WORK, on_failure="broke", retry=Backoff(max_attempts=3, jitter=0)),
        State("built", 2, Role.FINAL),
        State("broken", 3, Role.FINAL),
    ],
    events=[Event("built", "building", "built"), Event("broke", "building", "broken")],
)


def build_worker(store: EngineStore, step: FlowStep) -> Worker:
    steps = Steps()
    steps.add(build, "building", flow_step(step))
    return Worker(store, steps, name="builder", rand=lambda: 1.0)


def test_a_flow_step_advances_with_the_flows_outputs(store: EngineStore) -> None:
    def compile_it(source: str) -> str:
        return f"{source}.o"

    def link(compiled: str, resource_id: str) -> str:
        return f"{resource_id}:{compiled}.bin"

    flow = linear(
        "compile",
        FunctionTask(compile_it, provides="compiled"),
        FunctionTask(link, provides="binary"),
    )
    worker = build_worker(store, FlowStep(flow, on_success="built", on_failure="broke"))
    r = store.create("build", {"source": "main.c"})

    assert worker.tick() == 1

    after = store.get(r.id)
    assert after.state == "built"
    assert dict(after.data) == {"compiled": "main.c.o", "binary": f"{r.id}:main.c.o.bin"}
    last = store.journal(r.id)[-1]
    assert last.event == "built"
    assert last.detail["step"] == "flow:compile"
    assert (last.detail["flow"], last.detail["flow_state"]) == ("compile", "success")
    assert last.detail["flow_run"] == f"{r.id}@1"


def test_a_flow_step_whose_task_fails_reverts_and_fails_with_the_tasks_error(store: EngineStore) -> None:
    reverted: list[str] = []

    def reserve(size: int) -> str:
        return f"slot-{size}"

    def undo(result: str) -> None:
        reverted.append(result)

    def fill(slot: str) -> str:
        raise ValueError(f"{slot} is full")

    flow = linear(
        "fill",
        FunctionTask(reserve, provides="slot", revert=undo),
        FunctionTask(fill, provides="filled"),
    )
    worker = build_worker(store, FlowStep(flow, on_success="built", on_failure="broke"))
    r = store.create("build", {"size": 3})

    worker.tick()

    after = store.get(r.id)
    assert (after.state, after.error) == ("broken", "fill: ValueError: slot-3 is full")
    assert reverted == ["slot-3"]
    assert events(store, r.id) == ["@create", "broke"]


def test_a_flow_step_whose_revert_fails_is_retried_and_resumes_the_same_run(
    store: EngineStore, clock: FakeClock
) -> None:
    attempts: list[int] = []

    def reserve() -> str:
        return "slot"

    def undo() -> None:
        attempts.append(len(attempts) + 1)
        if len(attempts) == 1:
            raise RuntimeError("the undo API is down")

    def fill(slot: str) -> str:
        raise ValueError("full")

    flow = linear("fragile", FunctionTask(reserve, provides="slot", revert=undo), FunctionTask(fill))
    worker = build_worker(store, FlowStep(flow, on_success="built", on_failure="broke"))
    r = store.create("build")

    worker.tick()

    stuck = store.get(r.id)
    assert (stuck.state, stuck.attempts) == ("building", 1)
    assert stuck.error is not None
    assert stuck.error.startswith(f"flow run {r.id}@1: a revert failed: ")

    clock.advance(timedelta(seconds=1))
    worker.tick()

    after = store.get(r.id)
    assert (after.state, after.error) == ("broken", "fill: ValueError: full")
    assert attempts == [1, 2], "the retry resumed the run and retried its revert, it did not start over"
    assert events(store, r.id) == ["@create", "@retry", "broke"]
