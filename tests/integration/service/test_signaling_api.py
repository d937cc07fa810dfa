"""``/v1/signaling/{signal}`` through a real data plane server, and its callbacks to a real control plane.

The data plane is the service with a ``[dataplane]`` configuration over a store of each dialect; the
control plane is another real service (over its own SQLite file) where a ``ticket`` resource waits
for the data plane's callback, as a transfer would. The data plane's engine is a worker the tests run.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tenure import Worker, open_store
from tenure.engine.outcome import Retryable
from tenure.engine.planes import ControlPlaneRef, DataPlaneRef, Signaling
from tenure.engine.provision import MemoryProvisioner
from tenure.engine.signaling import HttpDataPlane
from tenure.errors import ConfigError
from tenure.kinds.dataflow import dataflow_kind, dataflow_steps
from tenure.service import ClientToken, ServiceConfig, create_app
from tenure.store.protocol import EngineStore
from tests.support.databases import empty_database
from tests.support.live_server import LiveServer, all_scopes_config
from tests.support.problems import assert_problem
from tests.support.service_support import Asker, ticket, ticket_worker

pytestmark = pytest.mark.timeout(120)

#: What the control plane presents to the data plane, and the data plane to the control plane.
CP_TOKEN = "token-the-cp-presents-to-dp1"
DP_TOKEN = "token-dp1-presents-to-the-cp"
READER = "reader-token-0123456789abcdef"
WRITER = "writer-token-0123456789abcdef"

FLOW = dataflow_kind(request_deadline=timedelta(hours=1), provisioner_types=("memory",))


@dataclass
class ControlPlane:
    server: LiveServer
    store: EngineStore
    database: str

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def callbacks(self) -> str:
        return f"{self.url}/v1/callbacks"


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A control plane stand-in: a real service where the data plane ``dp1`` may post callbacks."""
    url = f"sqlite:///{tmp_path_factory.mktemp('cp')}/cp.db"
    store = open_store(url, [ticket], check_schema=False)
    store.migrate()
    config = ServiceConfig(auth=True, tokens=(ClientToken.make("dp1", DP_TOKEN, ["callback"]),))
    with LiveServer(create_app(store, config)) as server:
        yield ControlPlane(server, store, url)
    store.close()


@pytest.fixture(scope="module")
def dp_store(module_db: str) -> Iterator[EngineStore]:
    s = open_store(module_db, [FLOW], check_schema=False)
    try:
        s.migrate()
        yield s
    finally:
        s.close()


def dataplane_config(controlplane_url: str) -> ServiceConfig:
    tokens = (
        ClientToken.make("controlplane", CP_TOKEN, ["signal"]),
        ClientToken.make("reader", READER, ["read"]),
        ClientToken.make("writer", WRITER, ["write"]),
    )
    signaling = Signaling(dataplane_id="dp1", controlplane=ControlPlaneRef(controlplane_url, DP_TOKEN))
    return ServiceConfig(auth=True, tokens=tokens, signaling=signaling)


@pytest.fixture(scope="module")
def dp_server(dp_store: EngineStore, control_plane: ControlPlane) -> Iterator[LiveServer]:
    with LiveServer(create_app(dp_store, dataplane_config(control_plane.url))) as server:
        yield server


@dataclass
class DataPlane:
    server: LiveServer
    store: EngineStore
    control_plane: ControlPlane

    @property
    def cp(self) -> httpx.Client:
        return self.server.shared(CP_TOKEN)

    def callback(self, token: str = "cb-token-1", resource: str = "t-1", key: str = "dataplane") -> dict[str, str]:
        return {"url": self.control_plane.callbacks, "resourceId": resource, "token": token, "key": key}

    def body(self, transfer: str = "t-1", **more: Any) -> dict[str, Any]:
        return {"transferId": transfer, "callback": self.callback(resource=transfer), **more}

    def new(self, transfer: str = "t-1", resources: int = 0, **more: Any) -> dict[str, Any]:
        defs = [{"id": f"r{i}", "type": "memory", "spec": {}} for i in range(resources)]
        flow = {"type": "consumer", "asset": "asset-7", "source": {"bucket": "in"}, "destination": {"bucket": "out"}}
        return self.body(transfer, **{**flow, "resources": defs, **more})

    def signal(self, name: str, body: dict[str, Any], client: httpx.Client | None = None) -> dict[str, Any]:
        r = (client or self.cp).post(f"/v1/signaling/{name}", json=body)
        assert r.status_code == 200, r.text
        answer: dict[str, Any] = r.json()
        return answer

    def worker(self, client: httpx.Client | None = None) -> Worker:
        """The data plane's engine; its callbacks go through ``client`` if given."""
        steps = dataflow_steps(
            {"memory": MemoryProvisioner()},
            ControlPlaneRef(self.control_plane.url, DP_TOKEN),
            kind=FLOW,
            client=client,
        )
        return Worker(self.store, steps, name="dp-engine", rand=lambda: 1.0)


@pytest.fixture
def dp(module_db: str, dp_server: LiveServer, dp_store: EngineStore, control_plane: ControlPlane) -> DataPlane:
    empty_database(module_db)
    empty_database(control_plane.database)
    return DataPlane(dp_server, dp_store, control_plane)


def brief(answer: dict[str, Any]) -> tuple[Any, ...]:
    return answer["async"], answer["state"], answer["replayed"]


# --- answers ---------------------------------------------------------------------------------------


def test_a_prepare_answers_at_once_whether_it_provisions(dp: DataPlane) -> None:
    at_once = dp.signal("prepare", dp.new("t-1"))
    provisioning = dp.signal("prepare", dp.new("t-2", resources=2))

    assert at_once == {
        "transferId": "t-1",
        "dataFlowId": "t-1",
        "signal": "prepare",
        "async": False,
        "state": "received",
        "source": {"bucket": "in"},
        "destination": {"bucket": "out"},
        "replayed": False,
    }
    assert brief(provisioning) == (True, "provisioning", False)
    assert (dp.store.get("t-1").state, dp.store.get("t-2").state) == ("received", "provisioning")
    assert dp.store.get("t-2").kind == "dataflow"


def test_a_start_answers_at_once_whether_it_provisions(dp: DataPlane) -> None:
    assert brief(dp.signal("start", dp.new("t-1", type="provider"))) == (False, "started", False)
    assert brief(dp.signal("start", dp.new("t-2", resources=1, type="provider"))) == (True, "provisioning", False)


def test_suspend_and_terminate_answer_whether_they_deprovision(dp: DataPlane) -> None:
    engine = dp.worker()
    dp.signal("start", dp.new("t-1"))
    dp.signal("start", dp.new("t-2", resources=1))
    engine.run_until_idle()
    assert dp.store.get("t-2").state == "started"

    assert brief(dp.signal("suspend", dp.body("t-1"))) == (False, "suspended", False)
    assert brief(dp.signal("suspend", dp.body("t-2"))) == (True, "deprovisioning", False)
    engine.run_until_idle()
    assert dp.store.get("t-2").state == "suspended"
    assert brief(dp.signal("start", dp.body("t-2"))) == (True, "provisioning", False)
    engine.run_until_idle()
    assert brief(dp.signal("terminate", dp.body("t-1"))) == (False, "terminated", False)
    assert brief(dp.signal("terminate", dp.body("t-2"))) == (True, "deprovisioning", False)
    engine.run_until_idle()
    assert dp.store.get("t-2").state == "deprovisioned"


# --- idempotency -------------------------------------------------------------------------------------


def test_a_repeated_signal_answers_as_the_first_and_keeps_the_newest_callback(
    dp: DataPlane, control_plane: ControlPlane
) -> None:
    first = dp.signal("prepare", dp.new("t-1", resources=1))
    again = dp.signal("prepare", {**dp.new("t-1", resources=1), "callback": dp.callback("cb-token-2")})

    assert again == {**first, "replayed": True}
    assert dp.store.get("t-1").data["callback"]["token"] == "cb-token-2"
    # The same signal with the same callback changes nothing.
    version = dp.store.get("t-1").version
    assert dp.signal("prepare", {**dp.new("t-1", resources=1), "callback": dp.callback("cb-token-2")})["replayed"]
    assert dp.store.get("t-1").version == version
    # A restarted data plane (another app over the same database) answers the same.
    with LiveServer(create_app(dp.store, dataplane_config(control_plane.url))) as restarted:
        replay = dp.signal("prepare", dp.new("t-1", resources=1), restarted.client(CP_TOKEN))
    assert replay == {**first, "replayed": True}


def test_identical_signals_at_once_make_one_flow(dp: DataPlane) -> None:
    body = dp.new("t-race", resources=1)
    answers: list[dict[str, Any]] = []
    ready = threading.Barrier(8)

    def send() -> None:
        with dp.server.client(CP_TOKEN) as http:
            ready.wait()
            answers.append(dp.signal("prepare", body, http))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    assert len(answers) == 8
    assert sum(not a["replayed"] for a in answers) == 1
    assert {brief(a)[:2] for a in answers} == {(True, "provisioning")}
    assert [e.event for e in dp.store.journal("t-race")] == ["@create", "provision"]
    assert [r.id for r in dp.store.list(kind="dataflow").items] == ["t-race"]


# --- refusals ----------------------------------------------------------------------------------------


def test_an_unknown_signal_or_flow_is_404_naming_what_is_accepted(dp: DataPlane) -> None:
    problem = assert_problem(dp.cp.post("/v1/signaling/pause", json=dp.body()), 404, "not-found")
    assert problem["accepted"] == ["prepare", "start", "suspend", "terminate"]
    assert "pause" in problem["detail"]

    problem = assert_problem(dp.cp.post("/v1/signaling/suspend", json=dp.body("t-9")), 404, "resource-not-found")
    assert "t-9" in problem["detail"]
    assert "prepare or start" in problem["detail"]
    assert dp.store.find("t-9") is None


def test_a_signal_the_state_does_not_take_is_409_naming_the_state_and_what_it_takes(dp: DataPlane) -> None:
    dp.signal("prepare", dp.new())

    problem = assert_problem(dp.cp.post("/v1/signaling/suspend", json=dp.body()), 409, "transition-not-allowed")

    assert (problem["state"], problem["signal"]) == ("received", "suspend")
    assert (problem["allowed"], problem["answered"]) == (["start", "terminate"], ["prepare"])
    assert "'received'" in problem["detail"]
    assert "accepted there: start, terminate; repeats of prepare answer as before" in problem["detail"]
    assert [e.event for e in dp.store.journal("t-1")] == ["@create", "prepare"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"callback": None}, "callback"),
        ({"transferId": "no spaces allowed"}, "transferId"),
        ({"colour": "blue"}, "colour"),
        ({"type": "both"}, "type"),
        ({"resources": [{"id": "r", "type": "memory", "size": 1}]}, "resources.0.size"),
    ],
)
def test_a_malformed_signal_is_422_naming_the_field(dp: DataPlane, change: dict[str, Any], field: str) -> None:
    body = {k: v for k, v in {**dp.new(), **change}.items() if v is not None}

    problem = assert_problem(dp.cp.post("/v1/signaling/prepare", json=body), 422, "invalid-request")

    assert field in [e["field"] for e in problem["errors"]], problem
    assert dp.store.find("t-1") is None


def test_a_new_flow_needs_type_and_asset(dp: DataPlane) -> None:
    problem = assert_problem(dp.cp.post("/v1/signaling/start", json=dp.body()), 422, "invalid-request")

    assert [e["field"] for e in problem["errors"]] == ["type", "asset"]
    assert "consumer or provider" in problem["detail"]


def test_a_callback_elsewhere_than_the_control_plane_is_422(dp: DataPlane) -> None:
    body = {**dp.new(), "callback": {**dp.callback(), "url": "http://collector.example/v1/callbacks"}}

    problem = assert_problem(dp.cp.post("/v1/signaling/prepare", json=body), 422, "invalid-request")

    assert problem["errors"][0]["field"] == "callback.url"
    assert dp.control_plane.url in problem["detail"]
    assert dp.store.find("t-1") is None


def test_a_callback_token_longer_than_the_control_plane_takes_is_422(dp: DataPlane) -> None:
    # The control plane's /v1/callbacks takes tokens of 500 characters at most: a longer one could
    # never be posted back.
    body = {**dp.new(), "callback": dp.callback("t" * 501)}

    problem = assert_problem(dp.cp.post("/v1/signaling/prepare", json=body), 422, "invalid-request")

    assert [e["field"] for e in problem["errors"]] == ["callback.token"]
    assert dp.store.find("t-1") is None
    assert dp.signal("prepare", {**dp.new(), "callback": dp.callback("t" * 500)})["replayed"] is False


def test_a_resource_type_without_a_provisioner_is_422_naming_the_known_types(dp: DataPlane) -> None:
    body = {**dp.new(), "resources": [{"id": "r", "type": "tape"}]}

    problem = assert_problem(dp.cp.post("/v1/signaling/prepare", json=body), 422, "invalid-spec")

    assert "known types: memory" in problem["detail"]


def test_signals_need_a_token_with_the_signal_scope(dp: DataPlane) -> None:
    assert_problem(dp.server.shared(None).post("/v1/signaling/prepare", json=dp.new()), 401, "unauthorized")
    assert_problem(
        dp.server.shared("not-a-token-at-all").post("/v1/signaling/prepare", json=dp.new()), 401, "unauthorized"
    )
    problem = assert_problem(dp.server.shared(WRITER).post("/v1/signaling/prepare", json=dp.new()), 403, "forbidden")
    assert problem["requiredScope"] == "signal"
    assert dp.store.find("t-1") is None


def test_no_client_can_fire_a_signal_event_or_overwrite_the_callback(dp: DataPlane) -> None:
    dp.signal("prepare", dp.new())
    writer = dp.server.shared(WRITER)

    fired = writer.post("/v1/resources/t-1/events", json={"event": "start"})
    assert_problem(fired, 409, "transition-not-allowed")
    forged = {"event": "complete", "data": {"callback": {"url": "http://collector.example/"}}}
    assert_problem(writer.post("/v1/resources/t-1/events", json=forged), 422, "invalid-spec")
    assert dp.store.get("t-1").data["callback"] == dp.callback()


def test_a_service_that_is_not_a_data_plane_has_no_signaling(dp: DataPlane) -> None:
    with LiveServer(create_app(dp.store, all_scopes_config())) as plain:
        answer = plain.client("admin-token-0123456789abcdef").post("/v1/signaling/prepare", json=dp.new())
    assert_problem(answer, 404, "not-found")


def test_a_data_plane_needs_the_dataflow_kind(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/t.db", [ticket], check_schema=False)
    try:
        with pytest.raises(ConfigError, match="'dataflow'"):
            create_app(store, dataplane_config("http://127.0.0.1:8800"))
    finally:
        store.close()


# --- the callback, through a real control plane ----------------------------------------------------------


def test_the_callback_reaches_the_control_plane_and_answers_its_wait(
    dp: DataPlane, control_plane: ControlPlane
) -> None:
    asker = Asker(["dataplane"])
    cp_engine = ticket_worker(control_plane.store, asker)
    transfer = control_plane.store.create("ticket")
    cp_engine.tick()
    assert control_plane.store.get(transfer.id).state == "awaiting"
    callback = dp.callback(asker.tokens[-1], transfer.id)
    moved = {"bucket": "out", "region": "eu"}

    answer = dp.signal("prepare", {**dp.new(transfer.id, resources=1), "callback": callback, "destination": moved})
    assert brief(answer) == (True, "provisioning", False)
    dp.worker().run_until_idle()
    assert cp_engine.apply_callbacks() == 1

    done = control_plane.store.get(transfer.id)
    assert done.state == "done"
    told = done.data["answers"]["dataplane"]
    assert told["status"] == "done"
    assert told["data"] == {
        "dataFlowId": transfer.id,
        "state": "provisioned",
        "source": {"bucket": "in"},
        "destination": moved,
    }
    flow = dp.store.get(transfer.id)
    assert (flow.state, flow.data["notification"]["outcome"], flow.data["notification"]["status"]) == (
        "provisioned",
        "delivered",
        202,
    )


def test_a_callback_the_control_plane_refuses_is_final(dp: DataPlane) -> None:
    dp.signal("prepare", dp.new(resources=1))  # its token is one the control plane never handed out

    dp.worker().run_until_idle()

    flow = dp.store.get("t-1")
    assert flow.state == "provisioned"
    assert (flow.data["notification"]["outcome"], flow.data["notification"]["status"]) == ("refused", 403)


# --- a signal while the flow tells how its operation ended ----------------------------------------------


def test_a_signal_while_the_flow_reports_is_503_retry_after_1_which_the_control_plane_retries_in_a_second(
    dp: DataPlane,
) -> None:
    """The control plane acts on a callback at once: its next signal may reach the flow before it is at rest."""
    seen: list[Any] = []
    with HttpDataPlane(DataPlaneRef("dp1", dp.server.url, CP_TOKEN), timeout=10) as controlplane:

        def signal_on_callback(request: httpx.Request) -> None:
            # The callback is on its way to the control plane: the flow is still telling it.
            seen.append(dp.store.get("t-1").state)
            seen.append(dp.cp.post("/v1/signaling/start", json=dp.body()))
            try:
                controlplane.signal("start", dp.body())
            except Retryable as exc:
                seen.append(exc)

        with httpx.Client(event_hooks={"request": [signal_on_callback]}) as http:
            dp.signal("prepare", dp.new(resources=1))
            dp.worker(http).run_until_idle()

        state, raw, retry = seen
        assert state == "provision_notifying"
        assert raw.headers["Retry-After"] == "1"
        problem = assert_problem(raw, 503, "flow-finishing")
        assert (problem["state"], problem["signal"], problem["retryAfter"]) == ("provision_notifying", "start", 1)
        assert "finishing its last operation" in problem["detail"]
        # The control plane's client reads it as worth another try, a second later (not after its backoff).
        assert isinstance(retry, Retryable)
        assert retry.delay == timedelta(seconds=1)
        assert "503" in str(retry)
        # At rest, the start is taken.
        assert dp.store.get("t-1").state == "provisioned"
        answer = controlplane.signal("start", dp.body())
        assert (answer.async_, answer.state, answer.replayed) == (False, "started", False)


def test_no_api_answer_shows_the_callback_token_the_data_plane_holds(dp: DataPlane) -> None:
    dp.signal("prepare", dp.new("t-1", resources=1))
    shown = dp.server.shared(READER).get("/v1/resources/t-1")
    assert shown.status_code == 200, shown.text
    assert shown.json()["data"]["callback"] == "<redacted>"
    assert "cb-token-1" not in shown.text
    assert dp.store.get("t-1").data["callback"]["token"] == "cb-token-1", "the engine still has it"
