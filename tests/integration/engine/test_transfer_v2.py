"""``transfer`` version 2 end to end on both stores: seed 001's table, driven by a worker and a data plane double.

The double answers each signal synchronously or asynchronously as a test tells it; an asynchronous one
calls back later through the store's inbox (``store.deliver``) with the token the signal carried, as a
data plane posting to ``/v1/callbacks`` would. The clock is the test's: deadlines and backoffs pass
when a test moves it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from tenure import Backoff, InvalidSpec, TransitionNotAllowed, Worker
from tenure.engine.outcome import Retryable
from tenure.engine.signaling import SignalAnswer, SignalRefused
from tenure.kinds.transfer import transfer, transfer_steps
from tenure.kinds.transfer_v2 import transfer_v2_kind, transfer_v2_steps
from tenure.store.inbox import Delivery, Receipt
from tenure.store.model import Resource
from tenure.store.protocol import EngineStore
from tests.store_support import FakeClock

pytestmark = pytest.mark.timeout(120)

DEADLINE = timedelta(minutes=1)
BACKOFF = Backoff(max_attempts=4, base=timedelta(seconds=1), cap=timedelta(seconds=10), jitter=0)
CALLBACK_URL = "http://cp.test/v1/callbacks"
KIND = transfer_v2_kind(dataplanes=["dp1", "dp2"], request_deadline=DEADLINE, retry=BACKOFF)

#: What the double says the flow's state is after each signal, answered at once or not.
STATES = {
    ("prepare", False): "received",
    ("prepare", True): "provisioning",
    ("start", False): "started",
    ("start", True): "provisioning",
    ("suspend", False): "suspended",
    ("suspend", True): "deprovisioning",
    ("terminate", False): "terminated",
    ("terminate", True): "deprovisioning",
}


@dataclass
class Call:
    signal: str
    body: dict[str, Any]

    @property
    def token(self) -> str:
        return str(self.body["callback"]["token"])


@dataclass
class FakeDataPlane:
    """An in-process data plane: answers sync (default) or async per signal, calls back when told.

    ``asynchronous``: the signals it answers async. ``fail``: exceptions to raise, per signal, in
    order (a list is consumed; one exception is raised every time). ``report``: addresses the answer
    reports per signal (as a provisioner that changed them would). ``early``: signals whose callback
    (``done``) it posts before it even answers.
    """

    store: EngineStore
    id: str
    asynchronous: set[str] = field(default_factory=set)
    fail: dict[str, list[BaseException] | BaseException] = field(default_factory=dict)
    report: dict[str, dict[str, Any]] = field(default_factory=dict)
    early: set[str] = field(default_factory=set)
    calls: list[Call] = field(default_factory=list)

    def signal(self, signal: str, body: Mapping[str, Any], /) -> SignalAnswer:
        self.calls.append(Call(signal, copy.deepcopy(dict(body))))
        failure = self.fail.get(signal)
        if isinstance(failure, list) and failure:
            raise failure.pop(0)
        if isinstance(failure, BaseException):
            raise failure
        asynchronous = signal in self.asynchronous
        reported = self.report.get(signal, {})
        if asynchronous and signal in self.early:
            receipt = self.call_back("done")
            assert receipt.delivery is Delivery.ACCEPTED, receipt
        return SignalAnswer(
            asynchronous,
            STATES[signal, asynchronous],
            str(body["transferId"]),
            reported.get("source", body.get("source")),
            reported.get("destination", body.get("destination")),
        )

    def call_back(
        self, status: str = "done", *, data: Mapping[str, Any] | None = None, error: str | None = None, call: int = -1
    ) -> Receipt:
        """Answer the callback of ``self.calls[call]`` (the last one by default)."""
        callback = self.calls[call].body["callback"]
        return self.store.deliver(
            callback["resourceId"], callback["token"], callback["key"], status, data=data, error=error
        )

    def signals(self) -> list[str]:
        return [c.signal for c in self.calls]


@dataclass
class ControlPlane:
    store: EngineStore
    worker: Worker
    clock: FakeClock
    dp1: FakeDataPlane
    dp2: FakeDataPlane

    def create(self, type_: str, **spec: Any) -> str:
        return self.store.create("transfer", {"asset": "asset-7", "type": type_, **spec}).id

    def get(self, resource_id: str) -> Resource:
        return self.store.get(resource_id)

    def events(self, resource_id: str) -> list[str]:
        """The journal's events, without the engine's ``@retry`` entries (a step's attempts that failed)."""
        return [e.event for e in self.store.journal(resource_id) if e.event != "@retry"]

    def drive(self, resource_id: str, *, until: str, limit: int = 60) -> Resource:
        """Run the worker, moving the clock to the next retry or deadline, until the transfer is ``until``."""
        for _ in range(limit):
            self.worker.run_until_idle()
            r = self.store.get(resource_id)
            if r.state == until:
                return r
            upcoming = [t for t in (r.next_attempt_at, r.deadline) if t is not None]
            assert upcoming, f"{resource_id} is stuck in {r.state!r}"
            self.clock.now = max(self.clock.now, min(upcoming))
        pytest.fail(f"{resource_id} did not reach {until!r} (it is in {self.store.get(resource_id).state!r})")

    def to_started(self, type_: str, **spec: Any) -> str:
        """A transfer of ``type_`` brought to ``started`` with synchronous answers."""
        rid = self.create(type_, **spec)
        self.worker.run_until_idle()
        if type_ == "consumer":
            assert self.get(rid).state == "requested"
            self.store.fire(rid, "start", actor="provider-message")
            self.worker.run_until_idle()
        assert self.get(rid).state == "started"
        return rid

    def desire(self, resource_id: str, state: str) -> Resource:
        self.store.set_desired_state(resource_id, state, actor="client")
        self.worker.run_until_idle()
        return self.store.get(resource_id)


@pytest.fixture
def make_cp(open_engine_store: Callable[..., EngineStore], clock: FakeClock) -> Callable[..., ControlPlane]:
    def make(*, max_round_trips: int = 5) -> ControlPlane:
        store = open_engine_store([KIND], clock=clock)
        dp1, dp2 = FakeDataPlane(store, "dp1"), FakeDataPlane(store, "dp2")
        steps = transfer_v2_steps(
            {"dp1": dp1, "dp2": dp2}, callback_url=CALLBACK_URL, kind=KIND, max_round_trips=max_round_trips
        )
        worker = Worker(store, steps, name="cp", rand=lambda: 1.0)
        return ControlPlane(store, worker, clock, dp1, dp2)

    return make


@pytest.fixture
def cp(make_cp: Callable[..., ControlPlane]) -> ControlPlane:
    return make_cp()


# --- seed 001's table, row by row ------------------------------------------------------------------


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_initial_consumer_prepares(cp: ControlPlane, asynchronous: bool) -> None:
    if asynchronous:
        cp.dp1.asynchronous.add("prepare")
    spec = {"resources": [{"id": "bucket", "type": "memory"}], "destination": {"type": "s3", "bucket": "out"}}
    rid = cp.create("consumer", **spec)
    cp.worker.run_until_idle()

    assert cp.dp1.signals() == ["prepare"]
    assert cp.dp2.calls == [], "only the transfer's own data plane is signaled"
    body = cp.dp1.calls[0].body
    assert {k: v for k, v in body.items() if k != "callback"} == {
        "transferId": rid,
        "type": "consumer",
        "asset": "asset-7",
        "destination": {"type": "s3", "bucket": "out"},
        "resources": [{"id": "bucket", "type": "memory", "spec": {}}],
    }
    assert body["callback"]["url"] == CALLBACK_URL
    assert (body["callback"]["resourceId"], body["callback"]["key"]) == (rid, "dataplane")
    assert len(body["callback"]["token"]) >= 24

    if asynchronous:
        waiting = cp.get(rid)
        assert waiting.state == "preparation_requested"
        assert waiting.deadline == cp.clock.now + DEADLINE
        assert cp.events(rid) == ["@create", "prepare_requested"]
        assert cp.dp1.call_back("done", data={"dataFlowId": rid, "state": "provisioned"}).accepted
        cp.worker.run_until_idle()
    r = cp.get(rid)
    assert r.state == "requested", "a consumer rests until the provider's start message"
    assert cp.events(rid)[-2:] == ["prepared", "requested"]
    assert cp.events(rid)[1] == ("prepare_requested" if asynchronous else "prepared")
    prepare = r.data["signals"]["prepare"]
    assert (prepare["asks"], prepare["confirmed"], prepare["awaiting"]) == (1, True, False)
    assert prepare["state"] == ("provisioned" if asynchronous else "received")
    assert r.data["dataFlowId"] == rid
    assert cp.worker.run_until_idle() == 0, "requested rests"

    # The provider's start message (a client event) starts the flow on the same data plane.
    cp.store.fire(rid, "start", actor="provider-message")
    cp.worker.run_until_idle()
    assert cp.get(rid).state == "started"
    assert cp.dp1.signals() == ["prepare", "start"]
    assert cp.dp1.calls[1].token != cp.dp1.calls[0].token


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_initial_provider_starts(cp: ControlPlane, asynchronous: bool) -> None:
    if asynchronous:
        cp.dp2.asynchronous.add("start")
    rid = cp.create("provider", dataplane="dp2", source={"type": "s3", "bucket": "in"})
    cp.worker.run_until_idle()
    if asynchronous:
        assert cp.get(rid).state == "startup_requested"
        assert cp.dp2.call_back("done", data={"state": "started"}).accepted
        cp.worker.run_until_idle()
        assert cp.events(rid) == ["@create", "start_requested", "dataplane_started", "started"]
    else:
        assert cp.events(rid) == ["@create", "dataplane_started", "started"]
    r = cp.get(rid)
    assert r.state == "started"
    assert cp.dp2.signals() == ["start"], "starting does not ask again for a start the data plane confirmed"
    assert cp.dp1.calls == []
    assert r.data["signals"]["start"]["confirmed"] is True
    assert cp.worker.run_until_idle() == 0, "started rests until a desired state asks to leave"


@pytest.mark.parametrize("type_", ["consumer", "provider"])
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_started_suspends_and_resumes_on_the_same_plane(cp: ControlPlane, type_: str, asynchronous: bool) -> None:
    rid = cp.to_started(type_, dataplane="dp2")
    before = cp.dp2.signals()
    if asynchronous:
        cp.dp2.asynchronous.add("suspend")

    r = cp.desire(rid, "suspended")
    if asynchronous:
        assert r.state == "suspension_requested"
        assert cp.events(rid)[-2:] == ["@desired", "suspend_requested"]
        assert cp.dp2.call_back("done", data={"state": "suspended"}).accepted
        cp.worker.run_until_idle()
        assert cp.events(rid)[-3:] == ["suspend_requested", "suspend", "suspended"]
    else:
        assert cp.events(rid)[-3:] == ["@desired", "suspend", "suspended"]
    r = cp.get(rid)
    assert r.state == "suspended"
    assert r.observed_generation == r.generation
    assert cp.dp2.signals() == [*before, "suspend"]

    # Resume: the same data plane is asked to start again.
    r = cp.desire(rid, "started")
    assert r.state == "started"
    assert cp.events(rid)[-3:] == ["@desired", "resume", "started"]
    assert cp.dp2.signals() == [*before, "suspend", "start"]
    assert cp.dp1.calls == []
    assert r.observed_generation == r.generation

    # And suspended again, counting its round trips afresh.
    r = cp.desire(rid, "suspended")
    if asynchronous:
        cp.dp2.call_back("done")
        cp.worker.run_until_idle()
    r = cp.get(rid)
    assert r.state == "suspended"
    assert r.data["signals"]["suspend"]["asks"] == 1


@pytest.mark.parametrize("type_", ["consumer", "provider"])
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_started_terminates(cp: ControlPlane, type_: str, asynchronous: bool) -> None:
    rid = cp.to_started(type_)
    before = cp.dp1.signals()
    if asynchronous:
        cp.dp1.asynchronous.add("terminate")

    r = cp.desire(rid, "terminated")
    if asynchronous:
        assert r.state == "termination_requested"
        assert cp.events(rid)[-2:] == ["@desired", "terminate_requested"]
        assert cp.dp1.call_back("done", data={"state": "deprovisioned"}).accepted
        cp.worker.run_until_idle()
        assert cp.events(rid)[-3:] == ["terminate_requested", "terminate", "terminated"]
    else:
        assert cp.events(rid)[-3:] == ["@desired", "terminate", "terminated"]
    r = cp.get(rid)
    assert (r.state, r.error, r.data["ended"]) == ("terminated", None, "terminated")
    assert "failure" not in r.data
    assert cp.dp1.signals() == [*before, "terminate"], "terminating does not ask again for a confirmed terminate"
    assert r.observed_generation == r.generation


def test_completing_ends_the_flow_on_the_data_plane_so_it_releases_what_it_holds(cp: ControlPlane) -> None:
    rid = cp.to_started("provider")
    r = cp.desire(rid, "completed")
    assert (r.state, r.data["ended"], r.error) == ("completed", "completed", None)
    assert cp.events(rid)[-3:] == ["@desired", "complete", "completed"]
    assert cp.dp1.signals() == ["start", "terminate"], "the data plane heard the flow is over"

    # The counter-party's completion message may also complete it directly.
    other = cp.to_started("consumer")
    cp.store.fire(other, "complete", actor="counter-party")
    cp.worker.run_until_idle()
    assert (cp.get(other).state, cp.get(other).data["ended"]) == ("completed", "completed")


def test_completing_waits_for_a_data_plane_that_deprovisions(cp: ControlPlane) -> None:
    rid = cp.to_started("provider")
    cp.dp1.asynchronous.add("terminate")
    r = cp.desire(rid, "completed")
    assert r.state == "completion_requested"
    cp.dp1.call_back("done")
    cp.worker.run_until_idle()
    r = cp.get(rid)
    assert (r.state, r.data["ended"]) == ("completed", "completed")
    assert cp.events(rid)[-4:] == ["complete", "complete_requested", "completion_confirmed", "completed"]


def test_a_consumer_terminated_while_requested_stops_its_prepared_flow(cp: ControlPlane) -> None:
    rid = cp.create("consumer")
    cp.worker.run_until_idle()
    assert cp.get(rid).state == "requested"

    r = cp.desire(rid, "terminated")
    assert (r.state, r.data["ended"]) == ("terminated", "terminated")
    assert cp.events(rid) == ["@create", "prepared", "requested", "@desired", "terminate", "terminated"]
    assert cp.dp1.signals() == ["prepare", "terminate"], "a flow was prepared: the data plane is told to stop it"


def test_terminating_a_suspended_transfer_waits_for_the_data_plane(cp: ControlPlane) -> None:
    rid = cp.to_started("provider")
    cp.desire(rid, "suspended")
    cp.dp1.asynchronous.add("terminate")
    r = cp.desire(rid, "terminated")
    assert r.state == "termination_requested"
    assert cp.events(rid)[-3:] == ["@desired", "terminate", "terminate_requested"]
    cp.dp1.call_back("done")
    cp.worker.run_until_idle()
    assert (cp.get(rid).state, cp.get(rid).data["ended"]) == ("terminated", "terminated")
    assert cp.dp1.signals() == ["start", "suspend", "terminate"]


# --- callbacks that fail, deadlines, bounds --------------------------------------------------------


@pytest.mark.parametrize("status", ["failed", "retry"])
def test_a_failed_callback_asks_again_and_the_second_answer_counts(cp: ControlPlane, status: str) -> None:
    cp.dp1.asynchronous.add("prepare")
    rid = cp.create("consumer")
    cp.worker.run_until_idle()

    assert cp.dp1.call_back(status, error="bucket quota exceeded").accepted
    cp.worker.run_until_idle()
    r = cp.get(rid)
    assert r.state == "preparation_requested", "back to initial, which prepared again"
    assert cp.events(rid) == ["@create", "prepare_requested", "prepare_retry", "prepare_requested"]
    assert cp.dp1.signals() == ["prepare", "prepare"]
    first, second = cp.dp1.calls
    assert first.token != second.token, "the new ask carries a new callback token"
    prepare = r.data["signals"]["prepare"]
    assert prepare["asks"] == 2
    # The first ask's token is spent: its late answer is refused.
    late = cp.dp1.call_back("done", call=0)
    assert late.delivery is Delivery.REFUSED

    assert cp.dp1.call_back("done", data={"destination": {"bucket": "made"}}).accepted
    cp.worker.run_until_idle()
    r = cp.get(rid)
    assert r.state == "requested"
    assert r.data["destination"] == {"bucket": "made"}
    assert r.data["signals"]["prepare"]["confirmed"] is True


def test_a_deadline_asks_again(cp: ControlPlane) -> None:
    cp.dp1.asynchronous.add("start")
    rid = cp.create("provider")
    cp.worker.run_until_idle()
    assert cp.get(rid).state == "startup_requested"

    cp.clock.advance(DEADLINE)
    cp.worker.run_until_idle()
    r = cp.get(rid)
    assert r.state == "startup_requested"
    assert cp.events(rid) == ["@create", "start_requested", "start_timed_out", "start_requested"]
    assert cp.dp1.signals() == ["start", "start"]
    assert r.data["signals"]["start"]["asks"] == 2

    assert cp.dp1.call_back("done").accepted
    cp.worker.run_until_idle()
    assert cp.get(rid).state == "started"


def test_a_failed_terminate_callback_asks_again_and_the_transfer_still_ends_as_asked(cp: ControlPlane) -> None:
    rid = cp.to_started("consumer")
    cp.dp1.asynchronous.add("terminate")
    assert cp.desire(rid, "terminated").state == "termination_requested"
    assert cp.dp1.call_back("failed", error="bucket busy").accepted
    cp.worker.run_until_idle()
    assert cp.get(rid).state == "termination_requested"
    assert cp.events(rid)[-3:] == ["terminate_requested", "terminate_retry", "terminate_requested"]

    assert cp.dp1.call_back("done").accepted
    cp.worker.run_until_idle()
    r = cp.get(rid)
    assert (r.state, r.error, r.data["ended"]) == ("terminated", None, "terminated")
    assert "failure" not in r.data, "a callback that failed and was retried is no failure of the transfer"
    assert cp.dp1.signals() == ["prepare", "start", "terminate", "terminate"]


def test_a_suspend_the_data_plane_cannot_take_yet_is_asked_again_from_started(cp: ControlPlane) -> None:
    rid = cp.to_started("provider")
    cp.dp1.fail["suspend"] = [Retryable("HTTP 503: restarting")]
    r = cp.desire(rid, "suspended")
    assert (r.state, r.attempts, r.error) == ("started", 1, "Retryable: HTTP 503: restarting")
    r = cp.drive(rid, until="suspended")
    assert cp.dp1.signals() == ["start", "suspend", "suspend"]
    assert r.observed_generation == r.generation


def test_a_suspension_deadline_asks_again_from_suspending(cp: ControlPlane) -> None:
    rid = cp.to_started("provider")
    cp.dp1.asynchronous.add("suspend")
    assert cp.desire(rid, "suspended").state == "suspension_requested"
    cp.clock.advance(DEADLINE)
    cp.worker.run_until_idle()
    assert cp.events(rid)[-3:] == ["suspend_requested", "suspend_timed_out", "suspend_requested"]
    assert cp.dp1.signals() == ["start", "suspend", "suspend"]
    cp.dp1.asynchronous.discard("suspend")
    assert cp.dp1.call_back("done").accepted
    cp.worker.run_until_idle()
    assert cp.get(rid).state == "suspended"


def test_round_trips_are_bounded_and_the_transfer_ends_failed(make_cp: Callable[..., ControlPlane]) -> None:
    cp = make_cp(max_round_trips=2)
    cp.dp1.asynchronous.add("prepare")
    rid = cp.create("consumer")
    cp.worker.run_until_idle()
    for _ in range(2):
        assert cp.dp1.call_back("failed", error="no space").accepted
        cp.worker.run_until_idle()

    r = cp.get(rid)
    assert r.state == "terminated"
    assert r.data["ended"] == "failed"
    assert r.error is not None
    assert "did not confirm prepare in 2 round trips" in r.error
    assert "no space" in r.error
    assert r.data["failure"] == r.error
    assert cp.dp1.signals() == ["prepare", "prepare", "terminate"], "the flow may exist: it is terminated"
    assert cp.events(rid)[-5:] == ["prepare_retry", "prepare_requested", "prepare_retry", "terminate", "terminated"]


def test_an_unreachable_data_plane_is_asked_again_with_backoff(cp: ControlPlane) -> None:
    cp.dp1.fail["start"] = [Retryable("connection refused"), Retryable("HTTP 503")]
    rid = cp.create("provider")
    cp.worker.run_until_idle()
    r = cp.get(rid)
    assert (r.state, r.attempts, r.error) == ("initial", 1, "Retryable: connection refused")
    assert r.next_attempt_at == cp.clock.now + timedelta(seconds=1)
    assert "start" in r.data["signals"]

    r = cp.drive(rid, until="started")
    assert cp.dp1.signals() == ["start", "start", "start"]
    assert r.error is None
    assert cp.events(rid) == ["@create", "dataplane_started", "started"]


def test_a_data_plane_that_stays_unreachable_fails_the_transfer(cp: ControlPlane) -> None:
    cp.dp1.fail["start"] = Retryable("connection refused")
    rid = cp.create("provider")
    r = cp.drive(rid, until="terminated")
    assert r.data["ended"] == "failed"
    assert r.error == "gave up after 4 attempts: Retryable: connection refused"
    assert cp.dp1.signals() == ["start"] * 4 + ["terminate"]
    assert cp.events(rid) == ["@create", "terminate", "terminated"]


def test_a_refused_suspend_gives_the_wish_up_and_the_transfer_keeps_running(cp: ControlPlane) -> None:
    rid = cp.to_started("consumer")
    refusal = SignalRefused("suspend to dp1 was refused: HTTP 409: flow is completed", status=409, detail="x")
    cp.dp1.fail["suspend"] = refusal
    r = cp.desire(rid, "suspended")
    assert r.state == "started", "a wish the data plane refuses is given up; the flow keeps flowing"
    assert r.error is not None
    assert "desired state 'suspended' not reached" in r.error
    assert "HTTP 409: flow is completed" in r.error
    assert cp.dp1.signals() == ["prepare", "start", "suspend"], "asked once: a refusal is final"
    assert r.observed_generation == r.generation, "the engine is done with this generation"
    assert cp.events(rid)[-1] == "@desired-failed"


def test_a_terminate_for_a_flow_the_data_plane_does_not_have_is_no_failure(cp: ControlPlane) -> None:
    rid = cp.to_started("provider")
    cp.dp1.fail["terminate"] = SignalRefused("HTTP 404: no flow", status=404, detail="no flow")
    r = cp.desire(rid, "terminated")
    assert (r.state, r.error, r.data["ended"]) == ("terminated", None, "terminated")
    assert r.data["signals"]["terminate"]["absent"] is True


def test_a_refused_terminate_from_started_gives_the_wish_up_without_asking_twice(cp: ControlPlane) -> None:
    rid = cp.to_started("provider")
    cp.dp1.fail["terminate"] = SignalRefused("HTTP 409: busy", status=409, detail="busy")
    r = cp.desire(rid, "terminated")
    assert r.state == "started"
    assert r.error is not None
    assert "HTTP 409: busy" in r.error
    assert cp.dp1.signals() == ["start", "terminate"]
    assert r.observed_generation == r.generation


# --- addresses and callback data -------------------------------------------------------------------


def test_changed_addresses_are_kept_and_sent_with_later_signals(cp: ControlPlane) -> None:
    cp.dp1.asynchronous.add("prepare")
    rid = cp.create("consumer", source={"bucket": "in"}, destination={"bucket": "out"})
    cp.worker.run_until_idle()
    cp.dp1.call_back("done", data={"dataFlowId": "flow-9", "state": "provisioned", "destination": {"bucket": "out-2"}})
    cp.worker.run_until_idle()
    r = cp.get(rid)
    assert r.data["destination"] == {"bucket": "out-2"}, "the callback's data is applied"
    assert r.data["dataFlowId"] == "flow-9"
    assert r.data["signals"]["prepare"]["state"] == "provisioned"
    assert r.spec["destination"] == {"bucket": "out"}, "the spec is what the client asked for"

    # The start goes to the plane that prepared, with the address it made; its answer changes the source.
    cp.dp1.report["start"] = {"source": {"bucket": "in", "presigned": "https://in/x"}}
    cp.store.fire(rid, "start", actor="provider-message")
    cp.worker.run_until_idle()
    start = cp.dp1.calls[-1]
    assert (start.signal, start.body["destination"], start.body["source"]) == (
        "start",
        {"bucket": "out-2"},
        {"bucket": "in"},
    )
    r = cp.get(rid)
    assert r.state == "started"
    assert r.data["source"] == {"bucket": "in", "presigned": "https://in/x"}

    cp.desire(rid, "suspended")
    suspend = cp.dp1.calls[-1]
    assert suspend.signal == "suspend"
    assert suspend.body["source"] == {"bucket": "in", "presigned": "https://in/x"}
    assert suspend.body["destination"] == {"bucket": "out-2"}


def test_a_callback_faster_than_the_answer_is_not_lost(cp: ControlPlane) -> None:
    cp.dp1.asynchronous.add("prepare")
    cp.dp1.early.add("prepare")
    rid = cp.create("consumer")
    cp.worker.run_until_idle()
    assert cp.get(rid).state == "requested"
    assert cp.events(rid) == ["@create", "prepare_requested", "prepared", "requested"]


# --- what clients may do ---------------------------------------------------------------------------


def test_clients_ask_with_desired_state_not_with_engine_events(cp: ControlPlane) -> None:
    rid = cp.to_started("provider")
    r = cp.get(rid)
    for event in ("suspend", "terminate", "suspend_requested"):
        with pytest.raises(TransitionNotAllowed) as caught:
            cp.store.fire(r, event, actor="client")
        assert "only the engine fires it" in str(caught.value)
        assert caught.value.allowed == ("complete",)
    assert cp.get(rid).version == r.version, "nothing was written"

    consumer = cp.create("consumer")
    cp.worker.run_until_idle()
    with pytest.raises(TransitionNotAllowed):
        cp.store.fire(consumer, "terminate", actor="client")
    with pytest.raises(InvalidSpec) as refused:
        cp.store.fire(consumer, "start", data={"signals": {"start": {"confirmed": True}}}, actor="client")
    assert [f for f, _ in refused.value.problems] == ["data.signals"]
    cp.store.fire(consumer, "start", data={"note": "from the provider"}, actor="provider-message")
    cp.worker.run_until_idle()
    assert cp.get(consumer).state == "started"
    assert cp.dp1.signals()[-1] == "start", "the start message did not skip the start signal"


def test_a_data_plane_that_is_not_configured_fails_the_transfer_at_once(
    open_engine_store: Callable[..., EngineStore], clock: FakeClock
) -> None:
    store = open_engine_store([KIND], clock=clock)
    steps = transfer_v2_steps({"dp1": FakeDataPlane(store, "dp1")}, callback_url=CALLBACK_URL, kind=KIND)
    worker = Worker(store, steps, name="cp", rand=lambda: 1.0)
    r = store.create("transfer", {"asset": "a", "type": "provider", "dataplane": "dp2"})
    worker.run_until_idle()
    r = store.get(r.id)
    assert (r.state, r.data["ended"]) == ("terminated", "failed")
    assert r.error == "data plane 'dp2' is not configured here (configured: dp1)"


# --- versions side by side -------------------------------------------------------------------------


def test_version_1_transfers_finish_on_version_1_next_to_version_2(
    open_engine_store: Callable[..., EngineStore], clock: FakeClock
) -> None:
    old = open_engine_store([transfer], clock=clock)
    before = old.create("transfer", {"asset": "a-1"})
    assert before.kind_version == 1

    store = open_engine_store([transfer, KIND], clock=clock)
    dp1 = FakeDataPlane(store, "dp1")
    steps = transfer_steps() | transfer_v2_steps({"dp1": dp1}, callback_url=CALLBACK_URL, kind=KIND)
    after = store.create("transfer", {"asset": "a-2", "type": "provider"})
    assert after.kind_version == 2
    Worker(store, steps, name="cp", rand=lambda: 1.0).run_until_idle()

    assert [e.event for e in store.journal(before.id)] == [
        "@create",
        "provision",
        "provisioned",
        "request",
        "requested",
        "start",
        "started",
    ]
    assert [e.event for e in store.journal(after.id)] == ["@create", "dataplane_started", "started"]
    assert dp1.signals() == ["start"]
