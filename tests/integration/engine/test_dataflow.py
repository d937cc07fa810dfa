"""The ``dataflow`` kind end to end: signals, a worker running its steps, and callbacks to a control plane.

Signals go through the signaling API's own function (:func:`tenure.service.signaling.apply_signal`),
the worker runs the steps, and a small HTTP receiver on 127.0.0.1 stands in for the control plane's
``/v1/callbacks``, answering what each test scripts. Retries and deadlines move on the store's fake
clock; the ``memory-async`` provisioner's answers come from its timer thread in real time.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tenure import Backoff, Kind, Worker
from tenure.engine.delayed import Delayed
from tenure.engine.planes import ControlPlaneRef
from tenure.engine.provision import MemoryProvisioner
from tenure.kinds.dataflow import MemoryAsyncProvisioner, dataflow_kind, dataflow_steps
from tenure.service.problems import ProblemError
from tenure.service.signaling import FINISHING, SignalIn, apply_signal
from tenure.store.protocol import EngineStore
from tests.store_support import FakeClock

DEADLINE = timedelta(minutes=1)
BACKOFF = Backoff(max_attempts=4, base=timedelta(seconds=1), cap=timedelta(seconds=10), jitter=0)
DP_TOKEN = "dp1-token-presented-to-the-cp"
PATIENCE = 10.0


@dataclass(frozen=True)
class Posted:
    path: str
    authorization: str | None
    body: dict[str, Any]


class Receiver:
    """A stand-in control plane: records each POSTed callback and answers the next scripted status (else 202).

    ``on_post`` runs before the answer goes back (as a control plane that acts on a callback at once:
    the data plane's flow is still telling it). ``echo``: the answer quotes the request's body back.
    """

    def __init__(self) -> None:
        self.posts: list[Posted] = []
        self.script: list[int] = []
        self.on_post: Callable[[Posted], None] | None = None
        self.echo = False
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                posted = Posted(self.path, self.headers.get("Authorization"), body)
                with receiver._lock:
                    receiver.posts.append(posted)
                    status = receiver.script.pop(0) if receiver.script else 202
                if receiver.on_post is not None:
                    receiver.on_post(posted)
                echoed = {"detail": f"refused {json.dumps(body)} from {self.headers.get('Authorization')}"}
                payload = json.dumps(echoed if receiver.echo else {"status": status}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def callback(self, token: str = "cb-token-1", resource: str = "t-1") -> dict[str, str]:
        return {"url": f"{self.url}/v1/callbacks", "resourceId": resource, "token": token, "key": "dataplane"}

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def timers() -> Iterator[Delayed]:
    made = Delayed(limit=100)
    yield made
    made.close()


@dataclass
class Plane:
    """A data plane's engine over ``store``: its worker, its provisioners, the control plane it tells."""

    store: EngineStore
    clock: FakeClock
    kind: Kind
    receiver: Receiver
    memory: MemoryProvisioner
    #: Answers pending and keeps the requests, for the test to answer with their tokens.
    asynchronous: MemoryProvisioner
    worker: Worker

    def worker_with(self, provisioners: Mapping[str, object]) -> Worker:
        """Another worker (another process, say) with other provisioners, on the same store and kind."""
        steps = dataflow_steps(provisioners, ControlPlaneRef(self.receiver.url, DP_TOKEN), kind=self.kind)
        return Worker(self.store, steps, name="dp-2", rand=lambda: 1.0)

    def signal(self, name: str, transfer: str = "t-1", **body: Any) -> Mapping[str, Any]:
        body.setdefault("callback", self.receiver.callback(resource=transfer))
        return apply_signal(self.store, name, SignalIn.model_validate({"transferId": transfer, **body}), "cp")

    def run(self, flow: str, until: str) -> Any:
        """Run the worker (following retries on the fake clock, waiting for timers) until ``flow`` is ``until``."""
        limit = time.monotonic() + PATIENCE
        while True:
            self.worker.run_until_idle()
            r = self.store.get(flow)
            if r.state == until:
                return r
            if time.monotonic() > limit:
                pytest.fail(f"{flow} did not reach {until!r}: it is {r.state!r} ({r.error})")
            if r.next_attempt_at is not None and r.next_attempt_at > self.clock.now:
                self.clock.now = r.next_attempt_at
            time.sleep(0.005)

    def events(self, flow: str) -> list[str]:
        return [e.event for e in self.store.journal(flow)]


@pytest.fixture
def plane(store: EngineStore, clock: FakeClock, receiver: Receiver, timers: Delayed) -> Plane:
    kind = dataflow_kind(request_deadline=DEADLINE, retry=BACKOFF)
    memory = MemoryProvisioner()
    asynchronous = MemoryProvisioner(asynchronous=True)
    provisioners = {
        "memory": memory,
        "async": asynchronous,
        # Not 0: an answer racing the write that puts the flow in its wait state can be refused as
        # superseded on PostgreSQL (the inbox reads the wait and the resource in two statements).
        "memory-async": MemoryAsyncProvisioner(store, timers=timers, default_delay_ms=50),
    }
    steps = dataflow_steps(provisioners, ControlPlaneRef(receiver.url, DP_TOKEN), kind=kind)
    worker = Worker(store, steps, name="dp", rand=lambda: 1.0)
    return Plane(store, clock, kind, receiver, memory, asynchronous, worker)


def new_flow(resources: Sequence[Mapping[str, Any]] = (), **more: Any) -> dict[str, Any]:
    return {
        "type": "consumer",
        "asset": "asset-7",
        "source": {"type": "s3", "bucket": "in"},
        "destination": {"type": "s3", "bucket": "out"},
        "resources": list(resources),
        **more,
    }


BUCKET = {"id": "bucket", "type": "memory", "spec": {"size_gb": 5}}


def later(**spec: Any) -> dict[str, Any]:
    return {"id": "queue", "type": "memory-async", "spec": spec}


def only_post(receiver: Receiver) -> Posted:
    assert len(receiver.posts) == 1, receiver.posts
    return receiver.posts[0]


# --- prepare ---------------------------------------------------------------------------------------


def test_a_prepare_with_nothing_to_provision_answers_at_once_and_rests_received(plane: Plane) -> None:
    answer = plane.signal("prepare", **new_flow())

    assert answer == {
        "transferId": "t-1",
        "dataFlowId": "t-1",
        "signal": "prepare",
        "async": False,
        "state": "received",
        "source": {"type": "s3", "bucket": "in"},
        "destination": {"type": "s3", "bucket": "out"},
        "replayed": False,
    }
    assert plane.worker.run_until_idle() == 0
    flow = plane.store.get("t-1")
    assert (flow.state, flow.spec["signal"], flow.spec["type"]) == ("received", "prepare", "consumer")
    assert plane.events("t-1") == ["@create", "prepare"]
    assert plane.receiver.posts == []


def test_a_prepare_with_resources_provisions_and_calls_back_with_the_data_planes_token(plane: Plane) -> None:
    answer = plane.signal("prepare", **new_flow([BUCKET]))
    assert (answer["async"], answer["state"]) == (True, "provisioning")

    flow = plane.run("t-1", "provisioned")

    assert plane.memory.made == {"t-1/bucket": {"size_gb": 5}}
    assert flow.data["provisioned"] == ["bucket"]
    assert plane.events("t-1") == ["@create", "provision", "provisioned", "notified_provisioned"]
    post = only_post(plane.receiver)
    assert post.path == "/v1/callbacks"
    assert post.authorization == f"Bearer {DP_TOKEN}"
    assert post.body == {
        "resourceId": "t-1",
        "token": "cb-token-1",
        "key": "dataplane",
        "status": "done",
        "data": {
            "dataFlowId": "t-1",
            "state": "provisioned",
            "source": {"type": "s3", "bucket": "in"},
            "destination": {"type": "s3", "bucket": "out"},
        },
    }
    assert flow.data["notification"]["outcome"] == "delivered"


def test_an_asynchronous_provisioner_answers_through_the_inbox_and_the_flow_waits_for_it(plane: Plane) -> None:
    plane.signal("prepare", **new_flow([BUCKET, later(delayMs=50)]))

    # The timer may fire before the worker's pass ends on a busy machine: the journal, not a snapshot,
    # shows the flow went into provision_requested and came out on the provisioner's answer.
    flow = plane.run("t-1", "provisioned")

    assert flow.data["provisioned"] == ["bucket", "queue"]
    assert flow.data["provision"]["queue"]["data"] == {"name": "t-1/queue"}
    assert plane.events("t-1")[:4] == ["@create", "provision", "provision_requested", "provisioned"]
    assert only_post(plane.receiver).body["data"]["state"] == "provisioned"


# --- start -----------------------------------------------------------------------------------------


def test_a_start_of_a_new_flow_with_nothing_to_provision_starts_it_at_once(plane: Plane) -> None:
    answer = plane.signal("start", **new_flow(type="provider"))

    assert (answer["async"], answer["state"]) == (False, "started")
    assert plane.worker.run_until_idle() == 0
    assert plane.store.get("t-1").state == "started"
    assert plane.events("t-1") == ["@create", "start"]
    assert plane.receiver.posts == []


def test_a_start_of_a_new_flow_with_resources_provisions_then_starts_and_calls_back(plane: Plane) -> None:
    answer = plane.signal("start", **new_flow([BUCKET], type="provider"))
    assert (answer["async"], answer["state"]) == (True, "provisioning")

    plane.run("t-1", "started")

    assert plane.events("t-1") == ["@create", "provision", "provisioned", "notified_started"]
    assert only_post(plane.receiver).body["data"]["state"] == "started"


def test_a_start_after_a_prepare_starts_at_once_what_is_provisioned(plane: Plane) -> None:
    plane.signal("prepare", **new_flow([BUCKET]))
    plane.run("t-1", "provisioned")

    answer = plane.signal("start", callback=plane.receiver.callback("cb-token-2"))

    assert (answer["async"], answer["state"], answer["replayed"]) == (False, "started", False)
    assert plane.worker.run_until_idle() == 0
    assert plane.store.get("t-1").state == "started"
    assert len(plane.receiver.posts) == 1  # only the prepare's


# --- suspend, terminate, start again -----------------------------------------------------------------


def test_suspend_and_terminate_of_a_flow_that_holds_nothing_settle_at_once(plane: Plane) -> None:
    plane.signal("start", **new_flow())

    suspended = plane.signal("suspend")
    assert (suspended["async"], suspended["state"]) == (False, "suspended")
    started = plane.signal("start")
    assert (started["async"], started["state"], started["replayed"]) == (False, "started", False)
    terminated = plane.signal("terminate")
    assert (terminated["async"], terminated["state"]) == (False, "terminated")

    assert plane.worker.run_until_idle() == 0
    assert plane.events("t-1") == ["@create", "start", "suspend", "start", "terminate"]
    assert plane.receiver.posts == []


def test_a_suspend_deprovisions_and_a_start_provisions_again(plane: Plane) -> None:
    plane.signal("start", **new_flow([BUCKET]))
    plane.run("t-1", "started")

    suspend = plane.signal("suspend", callback=plane.receiver.callback("cb-suspend"))
    assert (suspend["async"], suspend["state"]) == (True, "deprovisioning")
    flow = plane.run("t-1", "suspended")
    assert plane.memory.made == {}
    assert flow.data["provisioned"] == []
    told = plane.receiver.posts[-1].body
    assert (told["token"], told["status"], told["data"]["state"]) == ("cb-suspend", "done", "suspended")

    again = plane.signal("start", callback=plane.receiver.callback("cb-restart"))
    assert (again["async"], again["state"], again["replayed"]) == (True, "provisioning", False)
    flow = plane.run("t-1", "started")
    assert plane.memory.made == {"t-1/bucket": {"size_gb": 5}}
    assert flow.data["provisioned"] == ["bucket"]
    told = plane.receiver.posts[-1].body
    assert (told["token"], told["data"]["state"]) == ("cb-restart", "started")
    assert plane.events("t-1") == [
        "@create",
        *("provision", "provisioned", "notified_started"),
        *("deprovision", "deprovisioned", "notified_suspended"),
        *("provision", "provisioned", "notified_started"),
    ]


def test_a_terminate_deprovisions_what_the_flow_holds_and_ends_deprovisioned(plane: Plane) -> None:
    plane.signal("start", **new_flow([BUCKET, later()]))
    plane.run("t-1", "started")

    answer = plane.signal("terminate", callback=plane.receiver.callback("cb-end"))
    assert (answer["async"], answer["state"]) == (True, "deprovisioning")
    flow = plane.run("t-1", "deprovisioned")

    assert plane.memory.made == {}
    assert flow.data["provisioned"] == []
    assert set(flow.data["deprovision"]) == {"bucket", "queue"}
    told = plane.receiver.posts[-1].body
    assert (told["token"], told["status"], told["data"]["state"]) == ("cb-end", "done", "deprovisioned")


def test_a_terminate_while_provisioning_removes_everything_it_asked_for(plane: Plane) -> None:
    plane.signal("prepare", **new_flow([BUCKET, {"id": "queue", "type": "async"}]))
    plane.worker.run_until_idle()
    assert plane.store.get("t-1").state == "provision_requested"

    answer = plane.signal("terminate", callback=plane.receiver.callback("cb-end"))

    assert (answer["async"], answer["state"]) == (True, "deprovisioning")
    plane.worker.run_until_idle()
    asked = plane.asynchronous.requests[-1]
    assert (asked.action, asked.definition.id) == ("deprovision", "queue")
    assert plane.store.deliver("t-1", asked.token, "queue", "done").accepted
    plane.run("t-1", "deprovisioned")
    assert plane.memory.made == {}
    assert plane.asynchronous.made == {}
    assert [p.body["data"]["state"] for p in plane.receiver.posts] == ["deprovisioned"]


# --- failures ----------------------------------------------------------------------------------------


def test_a_provisioning_failure_calls_back_failed_with_the_error(plane: Plane) -> None:
    answer = plane.signal("prepare", **new_flow([BUCKET, later(fail="no quota left")]))
    assert answer["async"] is True

    flow = plane.run("t-1", "failed")

    post = only_post(plane.receiver)
    assert post.body["status"] == "failed"
    assert "no quota left" in post.body["error"]
    assert post.body["data"]["state"] == "failed"
    assert "no quota left" in flow.data["failure"]
    assert flow.data["provisioned"] == ["bucket"]  # the synchronous one was made
    # What it holds is released by a terminate.
    ended = plane.signal("terminate", callback=plane.receiver.callback("cb-end"))
    assert (ended["async"], ended["state"]) == (True, "deprovisioning")
    plane.run("t-1", "deprovisioned")
    assert plane.memory.made == {}


def test_a_deprovisioning_failure_is_told_and_asked_again_deprovisions_again(plane: Plane) -> None:
    plane.signal("start", **new_flow([later(failDeprovision="stuck")]))
    plane.run("t-1", "started")

    plane.signal("terminate", callback=plane.receiver.callback("cb-end"))
    flow = plane.run("t-1", "deprovision_failed")

    told = plane.receiver.posts[-1].body
    assert (told["status"], told["data"]["state"]) == ("failed", "deprovision_failed")
    assert "stuck" in told["error"]
    assert flow.data["provisioned"] == ["queue"]
    assert "stuck" in flow.data["failure"]

    # The control plane's declared retry: the terminate again, with a new callback. It deprovisions again.
    again = plane.signal("terminate", callback=plane.receiver.callback("cb-again"))
    assert (again["async"], again["state"], again["replayed"]) == (True, "deprovisioning", False)
    assert plane.events("t-1")[-1] == "deprovision"
    plane.run("t-1", "deprovision_failed")
    told = plane.receiver.posts[-1].body
    assert (told["token"], told["status"], told["data"]["state"]) == ("cb-again", "failed", "deprovision_failed")
    assert "stuck" in told["error"]
    assert plane.events("t-1")[-4:] == [
        *("deprovision", "deprovision_requested", "deprovision_failed", "notified_deprovision_failed")
    ]


def test_a_terminate_during_a_suspension_ends_deprovisioned(plane: Plane) -> None:
    plane.signal("start", **new_flow([{"id": "queue", "type": "async"}]))
    plane.worker.run_until_idle()
    asked = plane.asynchronous.requests[-1]
    assert plane.store.deliver("t-1", asked.token, "queue", "done").accepted
    plane.run("t-1", "started")
    plane.signal("suspend", callback=plane.receiver.callback("cb-suspend"))
    plane.worker.run_until_idle()
    assert plane.store.get("t-1").state == "deprovision_requested"

    answer = plane.signal("terminate", callback=plane.receiver.callback("cb-end"))

    assert (answer["async"], answer["state"], answer["replayed"]) == (True, "deprovisioning", False)
    plane.worker.run_until_idle()
    asked = plane.asynchronous.requests[-1]
    assert plane.store.deliver("t-1", asked.token, "queue", "done").accepted
    plane.run("t-1", "deprovisioned")
    told = plane.receiver.posts[-1].body
    assert (told["token"], told["data"]["state"]) == ("cb-end", "deprovisioned")
    assert [p.body["token"] for p in plane.receiver.posts] == ["cb-token-1", "cb-end"]


def test_the_control_plane_refusing_a_callback_is_final_and_recorded(plane: Plane) -> None:
    plane.receiver.script = [409]
    plane.signal("prepare", **new_flow([BUCKET]))

    flow = plane.run("t-1", "provisioned")

    assert len(plane.receiver.posts) == 1
    assert flow.data["notification"]["outcome"] == "refused"
    assert flow.data["notification"]["status"] == 409
    assert "cb-token-1" not in json.dumps(plane.store.journal("t-1")[-1].detail)


def test_a_callback_is_retried_while_the_control_plane_answers_503(plane: Plane) -> None:
    plane.receiver.script = [503, 503]
    plane.signal("prepare", **new_flow([BUCKET]))

    flow = plane.run("t-1", "provisioned")

    assert len(plane.receiver.posts) == 3
    assert {p.body["token"] for p in plane.receiver.posts} == {"cb-token-1"}
    assert flow.data["notification"]["outcome"] == "delivered"
    retries = [e for e in plane.store.journal("t-1") if e.event == "@retry"]
    assert len(retries) == 2
    assert "503" in retries[0].detail["error"]
    assert all("cb-token-1" not in json.dumps(e.detail) for e in plane.store.journal("t-1"))


def test_a_control_plane_that_never_answers_is_given_up_on_and_the_flow_moves_on(plane: Plane) -> None:
    plane.receiver.script = [503] * BACKOFF.max_attempts
    plane.signal("prepare", **new_flow([BUCKET]))

    flow = plane.run("t-1", "provisioned")

    assert len(plane.receiver.posts) == BACKOFF.max_attempts
    assert flow.data["notification"]["outcome"] == "undeliverable"


# --- addresses, repeats, lost timers -------------------------------------------------------------------


def test_a_changed_destination_is_kept_and_reported(plane: Plane) -> None:
    moved = {"type": "s3", "bucket": "out-provisioned"}
    plane.signal("prepare", **new_flow([later(destination=moved)]))

    flow = plane.run("t-1", "provisioned")

    told = only_post(plane.receiver).body["data"]
    assert told["destination"] == moved
    assert told["source"] == {"type": "s3", "bucket": "in"}
    assert flow.data["addresses"]["destination"] == moved
    start = plane.signal("start", callback=plane.receiver.callback("cb-2"))
    assert start["destination"] == moved


def test_a_repeated_signal_after_the_callback_was_lost_tells_the_new_callback(plane: Plane) -> None:
    plane.receiver.script = [409]  # the control plane had moved on to a new token already
    plane.signal("prepare", **new_flow([BUCKET]))
    plane.run("t-1", "provisioned")

    replay = plane.signal("prepare", **new_flow([BUCKET]), callback=plane.receiver.callback("cb-token-2"))

    assert (replay["async"], replay["state"], replay["replayed"]) == (True, "provisioning", True)
    flow = plane.run("t-1", "provisioned")
    assert [p.body["token"] for p in plane.receiver.posts] == ["cb-token-1", "cb-token-2"]
    assert flow.data["notification"]["outcome"] == "delivered"
    assert plane.events("t-1")[-2:] == ["renotify", "notified_provisioned"]


def test_a_repeated_signal_while_waiting_asks_again_and_tells_the_newest_callback(plane: Plane) -> None:
    plane.signal("prepare", **new_flow([{"id": "queue", "type": "async"}]))
    plane.worker.run_until_idle()
    assert plane.store.get("t-1").state == "provision_requested"
    first = plane.asynchronous.requests[-1]

    replay = plane.signal("prepare", **new_flow(), callback=plane.receiver.callback("cb-token-2"))

    assert (replay["async"], replay["state"], replay["replayed"]) == (True, "provisioning", True)
    plane.worker.run_until_idle()
    again = plane.asynchronous.requests[-1]
    assert (again.attempt, again.idempotency_key) == (2, first.idempotency_key)
    assert again.token != first.token
    late = plane.store.deliver("t-1", first.token, "queue", "done")
    assert late.refusal is not None
    assert late.refusal.value == "superseded"
    assert plane.store.deliver("t-1", again.token, "queue", "done", data={"name": "q"}).accepted
    plane.run("t-1", "provisioned")
    assert [p.body["token"] for p in plane.receiver.posts] == ["cb-token-2"]
    assert plane.events("t-1") == [
        "@create",
        *("provision", "provision_requested", "resignal"),
        *("provision_requested", "provisioned", "notified_provisioned"),
    ]


def test_lost_timers_are_asked_again_at_the_deadline(plane: Plane, timers: Delayed) -> None:
    slow = MemoryAsyncProvisioner(plane.store, timers=timers, default_delay_ms=60_000)
    dying = plane.worker_with({"memory-async": slow})
    plane.signal("prepare", **new_flow([later()]))
    dying.run_until_idle()
    assert plane.store.get("t-1").state == "provision_requested"
    assert timers.drop() == 1  # the process died: its timers are gone

    assert plane.worker.run_until_idle() == 0  # after a restart, nothing is due until the deadline
    plane.clock.advance(DEADLINE)
    flow = plane.run("t-1", "provisioned")

    assert plane.events("t-1") == [
        "@create",
        *("provision", "provision_requested", "provision_timed_out"),
        *("provision_requested", "provisioned", "notified_provisioned"),
    ]
    assert flow.data["provision"]["queue"]["attempts"] == 2
    assert only_post(plane.receiver).body["data"]["state"] == "provisioned"


# --- a signal while the flow is telling how its operation ended ----------------------------------------


@dataclass
class Caught:
    """What a signal sent from the control plane's callback handler got, and the flow's state then."""

    state: str
    answer: Mapping[str, Any] | None = None
    refused: ProblemError | None = None


def signal_on_callback(plane: Plane, name: str, token: str) -> list[Caught]:
    """Have the control plane send ``name`` as soon as a callback reaches it (before it answers the post)."""
    caught: list[Caught] = []

    def send(posted: Posted) -> None:
        state = plane.store.get("t-1").state
        try:
            caught.append(Caught(state, answer=plane.signal(name, callback=plane.receiver.callback(token))))
        except ProblemError as exc:
            caught.append(Caught(state, refused=exc))

    plane.receiver.on_post = send
    return caught


def assert_finishing(refused: ProblemError | None, state: str, signal: str, wait: int = 1) -> None:
    assert refused is not None
    assert refused.problem is FINISHING
    assert refused.problem.status == 503
    assert refused.headers == {"Retry-After": str(wait)}
    assert (refused.facts["state"], refused.facts["signal"], refused.facts["retry_after"]) == (state, signal, wait)
    assert "finishing its last operation" in refused.detail


def test_a_start_while_the_prepare_is_being_reported_is_503_retry_after_1_then_taken_at_rest(plane: Plane) -> None:
    plane.signal("prepare", **new_flow([BUCKET]))
    caught = signal_on_callback(plane, "start", "cb-start")

    plane.run("t-1", "provisioned")

    (during,) = caught
    assert during.state == "provision_notifying"
    assert_finishing(during.refused, "provision_notifying", "start")
    # A second later the flow is at rest: the start is taken.
    plane.receiver.on_post = None
    answer = plane.signal("start", callback=plane.receiver.callback("cb-start"))
    assert (answer["async"], answer["state"], answer["replayed"]) == (False, "started", False)


def test_a_resume_while_the_suspension_is_being_reported_is_503_then_provisions_at_rest(plane: Plane) -> None:
    plane.signal("start", **new_flow([BUCKET]))
    plane.run("t-1", "started")
    plane.signal("suspend", callback=plane.receiver.callback("cb-suspend"))
    caught = signal_on_callback(plane, "start", "cb-resume")

    plane.run("t-1", "suspended")

    (during,) = caught
    assert during.state == "deprovision_notifying"
    assert_finishing(during.refused, "deprovision_notifying", "start")
    plane.receiver.on_post = None
    answer = plane.signal("start", callback=plane.receiver.callback("cb-resume"))
    assert (answer["async"], answer["state"], answer["replayed"]) == (True, "provisioning", False)
    plane.run("t-1", "started")
    assert plane.receiver.posts[-1].body["token"] == "cb-resume"


def test_a_flow_waiting_to_tell_again_asks_the_signal_to_come_back_when_it_will_have(plane: Plane) -> None:
    plane.receiver.script = [503, 503]  # the control plane does not take the callback, twice
    plane.signal("prepare", **new_flow([BUCKET]))
    plane.worker.run_until_idle()
    assert plane.store.get("t-1").state == "provision_notifying"

    with pytest.raises(ProblemError) as first:
        plane.signal("start", callback=plane.receiver.callback("cb-start"))
    assert_finishing(first.value, "provision_notifying", "start", wait=1)  # the next try is a second away
    plane.clock.advance(timedelta(seconds=1))
    plane.worker.run_until_idle()
    with pytest.raises(ProblemError) as second:
        plane.signal("start", callback=plane.receiver.callback("cb-start"))
    assert_finishing(second.value, "provision_notifying", "start", wait=2)  # the backoff doubled
    assert plane.events("t-1")[-1] == "@retry"


def test_a_terminate_while_the_provisioning_is_being_reported_is_taken_as_before(plane: Plane) -> None:
    plane.signal("start", **new_flow([BUCKET]))
    caught = signal_on_callback(plane, "terminate", "cb-end")

    plane.run("t-1", "deprovisioned")

    (during,) = caught[:1]
    assert during.state == "provision_notifying"
    assert during.answer is not None
    assert (during.answer["async"], during.answer["state"]) == (True, "deprovisioning")
    assert plane.receiver.posts[-1].body["token"] == "cb-end"


# --- idempotency keys, per operation --------------------------------------------------------------------


def test_each_provisioning_and_deprovisioning_asks_under_keys_of_its_own(plane: Plane) -> None:
    plane.signal("start", **new_flow([BUCKET]))
    plane.run("t-1", "started")
    for n in range(2):
        plane.signal("suspend", callback=plane.receiver.callback(f"cb-suspend-{n}"))
        plane.run("t-1", "suspended")
        if n == 0:
            plane.signal("start", callback=plane.receiver.callback("cb-resume"))
            plane.run("t-1", "started")

    asked = [(r.action, r.idempotency_key) for r in plane.memory.requests]
    provisions = [key for action, key in asked if action == "provision"]
    deprovisions = [key for action, key in asked if action == "deprovision"]
    # start, suspend, start, suspend: two of each, none the same as another.
    assert (len(provisions), len(deprovisions)) == (2, 2)
    assert len(set(provisions) | set(deprovisions)) == 4
    # Each names the flow's version its signal wrote (the operation's marker).
    started = [e.version for e in plane.store.journal("t-1") if e.event in ("provision", "deprovision")]
    assert [*provisions, *deprovisions] == [
        f"t-1/provision/bucket@{started[0]}",
        f"t-1/provision/bucket@{started[2]}",
        f"t-1/deprovision/bucket@{started[1]}",
        f"t-1/deprovision/bucket@{started[3]}",
    ]


def test_an_operations_key_holds_across_its_retries_deadlines_and_repeated_signals(plane: Plane) -> None:
    plane.signal("prepare", **new_flow([{"id": "queue", "type": "async"}]))
    plane.worker.run_until_idle()
    first = plane.asynchronous.requests[-1]
    plane.clock.advance(DEADLINE)  # no answer: asked again at the deadline
    plane.worker.run_until_idle()
    plane.signal("prepare", callback=plane.receiver.callback("cb-token-2"))  # re-asked with a new callback
    plane.worker.run_until_idle()

    asks = plane.asynchronous.requests
    assert [r.attempt for r in asks] == [1, 2, 3]
    assert {r.idempotency_key for r in asks} == {first.idempotency_key}
    assert first.idempotency_key.startswith("t-1/provision/queue@")


# --- the control plane's retry after a failure callback ---------------------------------------------------


def test_a_repeated_prepare_after_a_failed_provisioning_provisions_again_under_new_keys(plane: Plane) -> None:
    plane.signal("prepare", **new_flow([BUCKET, {"id": "queue", "type": "async"}]))
    plane.worker.run_until_idle()
    first = plane.asynchronous.requests[-1]
    assert plane.store.deliver("t-1", first.token, "queue", "failed", error="no quota left").accepted
    plane.run("t-1", "failed")
    assert only_post(plane.receiver).body["status"] == "failed"

    # The same callback again changes nothing: it answers as before.
    version = plane.store.get("t-1").version
    same = plane.signal("prepare")
    assert (same["async"], same["state"], same["replayed"]) == (True, "provisioning", True)
    assert plane.store.get("t-1").version == version

    # The control plane's declared retry (a new callback): provisioning runs again.
    again = plane.signal("prepare", callback=plane.receiver.callback("cb-token-2"))
    assert (again["async"], again["state"], again["replayed"]) == (True, "provisioning", False)
    plane.worker.run_until_idle()
    second = plane.asynchronous.requests[-1]
    assert second.idempotency_key != first.idempotency_key
    assert second.attempt == 1
    # What the failed run made stays made, and is not asked for again.
    assert [r.definition.id for r in plane.memory.requests] == ["bucket"]
    assert plane.store.deliver("t-1", second.token, "queue", "done").accepted
    flow = plane.run("t-1", "provisioned")

    told = plane.receiver.posts[-1].body
    assert (told["token"], told["status"], told["data"]["state"]) == ("cb-token-2", "done", "provisioned")
    assert flow.data["provisioned"] == ["bucket", "queue"]
    assert flow.data["failure"] is None
    # A repeat of the retry answers as the retry did.
    assert plane.signal("prepare", callback=plane.receiver.callback("cb-token-2")) == {**again, "replayed": True}


def test_a_repeated_start_while_its_failure_is_being_reported_is_503_then_provisions_again(plane: Plane) -> None:
    plane.signal("start", **new_flow([later(fail="disk full")], type="provider"))
    caught = signal_on_callback(plane, "start", "cb-retry")

    plane.run("t-1", "failed")

    (during,) = caught
    assert during.state == "provision_failed"
    assert_finishing(during.refused, "provision_failed", "start")
    plane.receiver.on_post = None
    again = plane.signal("start", callback=plane.receiver.callback("cb-retry"))
    assert (again["async"], again["state"], again["replayed"]) == (True, "provisioning", False)


def test_a_repeated_terminate_after_a_failed_deprovisioning_deprovisions_again(plane: Plane) -> None:
    plane.signal("start", **new_flow([BUCKET, {"id": "queue", "type": "async"}]))
    plane.worker.run_until_idle()
    assert plane.store.deliver("t-1", plane.asynchronous.requests[-1].token, "queue", "done").accepted
    plane.run("t-1", "started")
    plane.signal("terminate", callback=plane.receiver.callback("cb-end"))
    plane.worker.run_until_idle()
    first = plane.asynchronous.requests[-1]
    assert (first.action, first.definition.id) == ("deprovision", "queue")
    assert plane.store.deliver("t-1", first.token, "queue", "failed", error="busy").accepted
    plane.run("t-1", "deprovision_failed")

    again = plane.signal("terminate", callback=plane.receiver.callback("cb-end-2"))

    assert (again["async"], again["state"], again["replayed"]) == (True, "deprovisioning", False)
    plane.worker.run_until_idle()
    second = plane.asynchronous.requests[-1]
    assert (second.action, second.definition.id) == ("deprovision", "queue")
    assert second.idempotency_key != first.idempotency_key
    # The bucket, removed by the failed run, is not removed again.
    assert [r.action for r in plane.memory.requests] == ["provision", "deprovision"]
    assert plane.store.deliver("t-1", second.token, "queue", "done").accepted
    flow = plane.run("t-1", "deprovisioned")
    told = plane.receiver.posts[-1].body
    assert (told["token"], told["status"], told["data"]["state"]) == ("cb-end-2", "done", "deprovisioned")
    assert flow.data["provisioned"] == []


# --- one rule for what a flow holds -------------------------------------------------------------------


def test_the_api_counts_what_a_flow_holds_as_the_kinds_guards_do(plane: Plane) -> None:
    plane.signal("start", **new_flow([BUCKET]))
    flow = plane.run("t-1", "started")
    # ``data.provisioned`` only records what was held when the last operation ended (here: as a flow
    # written before it was kept would have it); the answers of the provisioners say what is held.
    plane.store.fire_settling(flow, "resignal", (), result="", data={"provisioned": []}, actor="test")

    answer = plane.signal("suspend", callback=plane.receiver.callback("cb-suspend"))

    assert (answer["async"], answer["state"]) == (True, "deprovisioning")
    plane.run("t-1", "suspended")
    assert plane.memory.made == {}


# --- what the flow keeps of the control plane's answer ------------------------------------------------


def test_a_refusal_quoting_the_tokens_back_is_kept_without_them(plane: Plane) -> None:
    plane.receiver.script = [409]
    plane.receiver.echo = True  # a careless control plane quotes the callback (token included) back
    plane.signal("prepare", **new_flow([BUCKET]))

    flow = plane.run("t-1", "provisioned")

    notification = flow.data["notification"]
    assert (notification["outcome"], notification["status"]) == ("refused", 409)
    assert "<token>" in notification["error"]
    # (The flow keeps the callback, token included, in data.callback, and nowhere else.)
    kept = json.dumps([notification, *(e.detail for e in plane.store.journal("t-1"))])
    assert "cb-token-1" not in kept
    assert DP_TOKEN not in kept
