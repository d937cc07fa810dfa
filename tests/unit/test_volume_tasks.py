"""The volume kind's tasks one at a time, with mock inputs, as seed 004 asks; and its flows in memory.

No database: quota goes to an in-memory ledger with the store's semantics, hosts and drivers are fakes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from tenure.draw import to_mermaid
from tenure.engine.flows import FlowStep
from tenure.errors import InvalidSpec, QuotaExceeded, QuotaNotFound
from tenure.flow import Failure, FlowEngine, MemoryCheckpoints, RunState, TaskContext
from tenure.kinds import builtin_kinds
from tenure.kinds.volume import (
    CapacityScheduler,
    CastVolume,
    ChooseHost,
    CommitQuota,
    CreateVolumeFromSpec,
    CreateVolumeRecord,
    DeleteVolumeOnHost,
    ExtractSchedulerSpec,
    ExtractVolumeRequest,
    ExtractVolumeSpec,
    Host,
    InvalidVolumeRequest,
    MemoryNotifier,
    MemoryVolumeDriver,
    NotifyFailure,
    NotifyVolumeCreated,
    NoValidHost,
    ReleaseQuota,
    RescheduleableError,
    ReserveQuota,
    ScheduleVolume,
    VolumeSpec,
    api_flow,
    delete_flow,
    manager_flow,
    scheduler_flow,
    volume,
    volume_steps,
)
from tenure.machine import Role

# --- fakes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeReservation:
    id: str
    project: str
    resource: str
    amount: int
    state: str


@dataclass
class FakeLedger:
    """The store's quota semantics in a dict: idempotent reserve by id, moves checked by state."""

    limits: dict[tuple[str, str], int] = field(default_factory=dict)
    in_use: dict[tuple[str, str], int] = field(default_factory=dict)
    reserved: dict[tuple[str, str], int] = field(default_factory=dict)
    reservations: dict[str, FakeReservation] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)

    def set_quota(self, project: str, resource: str, limit: int) -> None:
        self.limits[(project, resource)] = limit
        self.in_use.setdefault((project, resource), 0)
        self.reserved.setdefault((project, resource), 0)

    def reserve(self, reservation_id: str, project: str, resource: str, amount: int) -> FakeReservation:
        self.calls.append(("reserve", reservation_id))
        if reservation_id in self.reservations:
            return self.reservations[reservation_id]
        key = (project, resource)
        if key not in self.limits:
            raise QuotaNotFound(f"{project}/{resource}")
        available = self.limits[key] - self.in_use[key] - self.reserved[key]
        if amount > available:
            raise QuotaExceeded(
                project=project, resource=resource, requested=amount, available=available, hard_limit=self.limits[key]
            )
        self.reserved[key] += amount
        made = FakeReservation(reservation_id, project, resource, amount, "reserved")
        self.reservations[reservation_id] = made
        return made

    def reservation(self, reservation_id: str) -> FakeReservation:
        try:
            return self.reservations[reservation_id]
        except KeyError:
            raise QuotaNotFound(f"reservation {reservation_id}") from None

    def _move(self, reservation_id: str, source: str, target: str, d_reserved: int, d_in_use: int) -> FakeReservation:
        self.calls.append((target, reservation_id))
        found = self.reservation(reservation_id)
        if found.state == target:
            return found
        assert found.state == source, f"{reservation_id} is {found.state}, cannot become {target}"
        key = (found.project, found.resource)
        self.reserved[key] += d_reserved * found.amount
        self.in_use[key] += d_in_use * found.amount
        moved = FakeReservation(found.id, found.project, found.resource, found.amount, target)
        self.reservations[reservation_id] = moved
        return moved

    def commit_reservation(self, reservation_id: str) -> FakeReservation:
        return self._move(reservation_id, "reserved", "committed", -1, +1)

    def rollback_reservation(self, reservation_id: str) -> FakeReservation:
        return self._move(reservation_id, "reserved", "rolled_back", -1, 0)

    def release_reservation(self, reservation_id: str) -> FakeReservation:
        return self._move(reservation_id, "committed", "released", 0, -1)

    def usage(self, project: str = "p", resource: str = "gigabytes") -> tuple[int, int]:
        """(reserved, in_use)."""
        return self.reserved[(project, resource)], self.in_use[(project, resource)]


class Busy(Exception):
    """A host is busy: worth rescheduling."""


class Broken(Exception):
    """The request cannot work anywhere: not worth rescheduling."""


class ScriptedDriver(MemoryVolumeDriver):
    """A memory driver that fails on chosen hosts with chosen exceptions, and logs every call."""

    def __init__(self, failures: Mapping[str, BaseException] | None = None) -> None:
        super().__init__()
        self.failures = dict(failures or {})
        self.log: list[tuple[str, str, str]] = []

    def _create(self, volume: Mapping[str, Any], host: str, source: str) -> Mapping[str, Any]:
        self.log.append(("create", host, source))
        if host in self.failures:
            raise self.failures[host]
        return super()._create(volume, host, source)

    def delete(self, volume_id: str, host: str) -> None:
        self.log.append(("delete", host, volume_id))
        super().delete(volume_id, host)


def ctx(task: str = "t", key: str | None = None) -> TaskContext:
    return TaskContext(flow_id="run-1", task=task, attempt=1, idempotency_key=key or f"run-1/{task}/0")


REQUESTS: dict[str, dict[str, Any]] = {
    "raw": {"size_gb": 5, "project": "p"},
    "image": {"size_gb": 5, "project": "p", "source": "image", "image_id": "img-1"},
    "snapshot": {"size_gb": 5, "project": "p", "source": "snapshot", "snapshot_id": "snap-1"},
    "volume": {"size_gb": 5, "project": "p", "source": "volume", "source_volume_id": "vol-0"},
}


def standard_request(source: str = "raw", size: int = 5, zone: str | None = None) -> dict[str, Any]:
    return ExtractVolumeRequest().execute({**REQUESTS[source], "size_gb": size, "availability_zone": zone})


def record(source: str = "raw", size: int = 5) -> dict[str, Any]:
    return CreateVolumeRecord().execute("vol-1", standard_request(source, size))


# --- the kind and its spec -------------------------------------------------------------------------


def test_the_kind_has_stable_codes_and_the_roles_of_seed_004() -> None:
    assert {s.name: (s.code, s.role) for s in volume.states} == {
        "requested": (10, Role.WORK),
        "scheduling": (20, Role.WORK),
        "creating": (30, Role.WORK),
        "available": (40, Role.REST),
        "error": (50, Role.REST),
        "deleting": (60, Role.WORK),
        "deleted": (70, Role.FINAL),
    }
    assert volume.initial.name == "requested"
    assert volume.allowed_events("requested") == ("accepted", "rejected")
    assert volume.allowed_events("scheduling") == ("scheduled", "unschedulable")
    assert volume.allowed_events("creating") == ("created", "failed")
    assert volume.target("available", "delete") == volume.target("error", "delete") == "deleting"
    assert volume.allowed_events("deleted") == ()
    assert volume in builtin_kinds()
    assert "s0 --> s1: accepted" in to_mermaid(volume)


@pytest.mark.parametrize("source", sorted(REQUESTS))
def test_the_spec_accepts_each_source_with_its_id(source: str) -> None:
    clean = volume.validate_spec(REQUESTS[source])
    assert clean["source"] == source
    assert (
        VolumeSpec.model_validate(clean).source_id
        == {
            "raw": None,
            "image": "img-1",
            "snapshot": "snap-1",
            "volume": "vol-0",
        }[source]
    )


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"size_gb": 0, "project": "p"}, "size_gb"),
        ({"size_gb": "big", "project": "p"}, "size_gb"),
        ({"size_gb": 1}, "project"),
        ({"size_gb": 1, "project": "p", "colour": "red"}, "colour"),
        ({"size_gb": 1, "project": "p", "source": "tape"}, "source"),
        ({"size_gb": 1, "project": "p", "source": "image"}, "spec"),
        ({"size_gb": 1, "project": "p", "source": "image", "image_id": "i", "snapshot_id": "s"}, "spec"),
        ({"size_gb": 1, "project": "p", "snapshot_id": "s"}, "spec"),
    ],
)
def test_the_spec_refuses_bad_requests(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        volume.validate_spec(spec)
    assert field in str(caught.value)


def test_volume_steps_give_one_step_per_work_state_with_events_the_kind_allows() -> None:
    steps = volume_steps(FakeLedger(), driver=MemoryVolumeDriver(), notifier=MemoryNotifier(), hosts=[Host("a", 10)])
    assert set(steps) == {s.name for s in volume.states_with_role(Role.WORK)}
    for state, step in steps.items():
        assert isinstance(step, FlowStep)
        assert volume.allows(state, step.on_success)
        assert volume.allows(state, step.on_failure)


# --- api flow tasks ------------------------------------------------------------------------------


@pytest.mark.parametrize("source", sorted(REQUESTS))
def test_extract_request_gives_the_standard_shape(source: str) -> None:
    out = ExtractVolumeRequest(default_availability_zone="nova").execute(REQUESTS[source])
    assert out == {
        "size_gb": 5,
        "project": "p",
        "source_type": source,
        "source_id": VolumeSpec.model_validate(REQUESTS[source]).source_id,
        "availability_zone": "nova",
    }


def test_extract_request_checks_types_values_and_zones() -> None:
    with pytest.raises(InvalidVolumeRequest, match="size_gb"):
        ExtractVolumeRequest().execute({"size_gb": -1, "project": "p"})
    with pytest.raises(InvalidVolumeRequest, match="needs image_id"):
        ExtractVolumeRequest().execute({"size_gb": 1, "project": "p", "source": "image"})
    zoned = ExtractVolumeRequest(availability_zones={"az1", "az2"})
    assert zoned.execute({"size_gb": 1, "project": "p", "availability_zone": "az2"})["availability_zone"] == "az2"
    with pytest.raises(InvalidVolumeRequest, match=r"zone 'az9' does not exist \(known: az1, az2\)"):
        zoned.execute({"size_gb": 1, "project": "p", "availability_zone": "az9"})


def test_reserve_quota_is_keyed_by_the_idempotency_key_and_reverted_by_rolling_back() -> None:
    ledger = FakeLedger()
    ledger.set_quota("p", "gigabytes", 10)
    reserve = ReserveQuota(ledger)
    request = standard_request(size=4)
    made = reserve.execute(request, ctx("reserve_quota", "run-1/reserve_quota/0"))
    assert made == {"id": "run-1/reserve_quota/0", "project": "p", "resource": "gigabytes", "amount": 4}
    # Run again after a crash: the same reservation, no second hold.
    assert reserve.execute(request, ctx("reserve_quota", "run-1/reserve_quota/0")) == made
    assert ledger.usage() == (4, 0)
    reserve.revert(volume_request=request, result=made, failure=None)
    assert ledger.usage() == (0, 0)
    assert ledger.reservation(made["id"]).state == "rolled_back"
    # Reverting again (a resumed revert) is harmless.
    reserve.revert(volume_request=request, result=made, failure=None)
    assert ledger.usage() == (0, 0)


def test_reserve_quota_over_the_limit_takes_nothing_and_has_nothing_to_revert() -> None:
    ledger = FakeLedger()
    ledger.set_quota("p", "gigabytes", 3)
    reserve = ReserveQuota(ledger)
    with pytest.raises(QuotaExceeded):
        reserve.execute(standard_request(size=4), ctx())
    reserve.revert(volume_request=standard_request(size=4), result=None, failure=None)
    assert ledger.usage() == (0, 0)
    assert ledger.reservations == {}
    with pytest.raises(QuotaNotFound):
        ReserveQuota(ledger, resource="volumes").execute(standard_request(), ctx())


def test_reserve_quota_gives_back_a_reservation_taken_before_an_error() -> None:
    class LostAnswer(FakeLedger):
        def reserve(self, reservation_id: str, project: str, resource: str, amount: int) -> FakeReservation:
            super().reserve(reservation_id, project, resource, amount)
            raise ConnectionError("connection lost after the commit")

    ledger = LostAnswer()
    ledger.set_quota("p", "gigabytes", 10)
    with pytest.raises(ConnectionError):
        ReserveQuota(ledger).execute(standard_request(size=4), ctx(key="k"))
    assert ledger.usage() == (0, 0)
    assert ledger.reservation("k").state == "rolled_back"


def test_commit_quota_is_reverted_by_releasing() -> None:
    ledger = FakeLedger()
    ledger.set_quota("p", "gigabytes", 10)
    reservation = ReserveQuota(ledger).execute(standard_request(size=4), ctx(key="k"))
    commit = CommitQuota(ledger)
    out = commit.execute(reservation)
    assert out == {"reservation_id": "k", "project": "p", "resource": "gigabytes", "amount": 4}
    assert ledger.usage() == (0, 4)
    commit.revert(reservation=reservation, result=out, failure=None)
    assert ledger.usage() == (0, 0)
    assert ledger.reservation("k").state == "released"
    # The reserve's revert after it finds nothing left to give back.
    ReserveQuota(ledger).revert(volume_request={}, result=reservation, failure=None)
    assert ledger.usage() == (0, 0)


def test_commit_revert_of_a_commit_that_never_happened_leaves_the_reservation() -> None:
    ledger = FakeLedger()
    ledger.set_quota("p", "gigabytes", 10)
    reservation = ReserveQuota(ledger).execute(standard_request(size=4), ctx(key="k"))
    CommitQuota(ledger).revert(
        reservation=reservation, result=None, failure=Failure("builtins.RuntimeError", "commit failed")
    )
    assert ledger.usage() == (4, 0)


def test_create_record_and_cast() -> None:
    rec = record("snapshot", 7)
    assert rec == {
        "id": "vol-1",
        "size_gb": 7,
        "project": "p",
        "source_type": "snapshot",
        "source_id": "snap-1",
        "availability_zone": None,
    }
    assert CastVolume().execute(rec) == "scheduler"


# --- scheduler flow tasks --------------------------------------------------------------------------


def test_extract_scheduler_spec() -> None:
    spec = ExtractSchedulerSpec().execute("vol-1", record("image", 3))
    assert spec == {"volume_id": "vol-1", "size_gb": 3, "availability_zone": None, "source_type": "image"}
    with pytest.raises(InvalidVolumeRequest, match="no volume record"):
        ExtractSchedulerSpec().execute("vol-1", None)


def test_capacity_scheduler_picks_the_emptiest_host_in_the_zone() -> None:
    hosts = [Host("a", 10, "az1"), Host("b", 30, "az1"), Host("c", 50, "az2"), Host("d", 30, "az1")]
    schedule = ScheduleVolume(CapacityScheduler(hosts))
    assert schedule.execute({"size_gb": 10, "availability_zone": None}) == {
        "host": "c",
        "alternate_hosts": ["b", "d", "a"],
        "cast_to": "volume-manager@c",
    }
    assert schedule.execute({"size_gb": 20, "availability_zone": "az1"})["alternate_hosts"] == ["d"]
    with pytest.raises(NoValidHost, match="no host in zone 'az2' has 60 GB free"):
        schedule.execute({"size_gb": 60, "availability_zone": "az2"})


def test_notify_failure_sends_the_reasons_with_a_message_id() -> None:
    notifier = MemoryNotifier()
    NotifyFailure(notifier, "volume.schedule.error", name="n").execute(
        "vol-1", {"schedule_volume": Failure("x.NoValidHost", "nothing fits")}, ctx("n")
    )
    assert notifier.events[0].event_type == "volume.schedule.error"
    assert notifier.events[0].payload == {
        "volume_id": "vol-1",
        "reason": "schedule_volume: NoValidHost: nothing fits",
        "message_id": "run-1/n/0",
    }


# --- manager flow tasks ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "extra"),
    [
        ("raw", {}),
        ("image", {"image_id": "img-1"}),
        ("snapshot", {"snapshot_id": "snap-1"}),
        ("volume", {"source_volume_id": "vol-0"}),
    ],
)
def test_extract_volume_spec_breaks_up_by_source_and_create_calls_the_matching_driver_method(
    source: str, extra: dict[str, str]
) -> None:
    spec = ExtractVolumeSpec().execute("vol-1", record(source, 2))
    assert spec == {"volume_id": "vol-1", "size_gb": 2, "type": source, **extra}
    driver = ScriptedDriver()
    made = CreateVolumeFromSpec(driver).execute(spec, "host-a")
    assert made == {
        "provider_location": "host-a:/volumes/vol-1",
        "id": "vol-1",
        "host": "host-a",
        "size_gb": 2,
        "type": source,
    }
    expected_source = "raw" if source == "raw" else f"{source}:{next(iter(extra.values()))}"
    assert driver.log == [("create", "host-a", expected_source)]
    assert driver.volumes[("host-a", "vol-1")]["source"] == expected_source


def test_create_volume_is_reverted_by_deleting_also_when_it_failed() -> None:
    driver = ScriptedDriver({"bad": Busy("busy")})
    create = CreateVolumeFromSpec(driver)
    spec = ExtractVolumeSpec().execute("vol-1", record())
    with pytest.raises(Busy):
        create.execute(spec, "bad")
    create.revert(volume_spec=spec, volume_host="bad", result=None, failure=Failure.capture(Busy("busy")))
    made = create.execute(spec, "good")
    create.revert(volume_spec=spec, volume_host="good", result=made, failure=None)
    assert driver.volumes == {}
    assert [e[:2] for e in driver.log] == [("create", "bad"), ("delete", "bad"), ("create", "good"), ("delete", "good")]


def test_create_volume_refuses_a_model_update_that_is_not_json() -> None:
    class OddDriver(MemoryVolumeDriver):
        def create_raw(self, volume: Mapping[str, Any], host: str) -> Mapping[str, Any]:
            return {"when": object()}

    with pytest.raises(TypeError, match="model update must be JSON"):
        CreateVolumeFromSpec(OddDriver()).execute(ExtractVolumeSpec().execute("v", record()), "h")


def test_extract_volume_spec_refuses_a_missing_record_or_source_id() -> None:
    with pytest.raises(InvalidVolumeRequest):
        ExtractVolumeSpec().execute("v", None)
    with pytest.raises(InvalidVolumeRequest, match="names no image_id"):
        ExtractVolumeSpec().execute("v", {**record("image"), "source_id": None})


def test_choose_host_walks_the_alternates_one_reschedule_at_a_time() -> None:
    choose = ChooseHost()
    assert choose.execute("a", ["b", "c"], 0) == "a"
    assert choose.execute("a", ["b", "c"], 1) == "b"
    assert choose.execute("a", ["b", "c"], 2) == "c"
    with pytest.raises(NoValidHost, match="tried a, b, c"):
        choose.execute("a", ["b", "c"], 3)
    with pytest.raises(NoValidHost, match="never scheduled"):
        choose.execute(None, [], 0)


def test_notify_created() -> None:
    notifier = MemoryNotifier()
    NotifyVolumeCreated(notifier).execute("vol-1", {"host": "a", "size_gb": 3}, ctx("notify_volume_created"))
    assert notifier.of_type("volume.create.end")[0].payload == {
        "volume_id": "vol-1",
        "host": "a",
        "size_gb": 3,
        "message_id": "run-1/notify_volume_created/0",
    }


# --- delete flow tasks ---------------------------------------------------------------------------


def test_delete_tasks_do_only_what_there_is_to_do() -> None:
    driver = ScriptedDriver()
    driver.create_raw({"volume_id": "v", "size_gb": 1}, "a")
    DeleteVolumeOnHost(driver).execute("v", None)
    assert driver.volumes
    DeleteVolumeOnHost(driver).execute("v", {"id": "v", "host": "a"})
    assert driver.volumes == {}
    ledger = FakeLedger()
    ledger.set_quota("p", "gigabytes", 10)
    ledger.reserve("k", "p", "gigabytes", 3)
    ledger.commit_reservation("k")
    ReleaseQuota(ledger).execute(None)
    assert ledger.usage() == (0, 3)
    ReleaseQuota(ledger).execute({"reservation_id": "k"})
    ReleaseQuota(ledger).execute({"reservation_id": "k"})
    assert ledger.usage() == (0, 0)


# --- the flows, in memory ------------------------------------------------------------------------


def test_api_flow_in_memory_happy_and_over_quota() -> None:
    ledger = FakeLedger()
    ledger.set_quota("p", "gigabytes", 6)
    engine = FlowEngine(api_flow(ledger), checkpoints=MemoryCheckpoints())
    ok = engine.run({"request": REQUESTS["image"], "resource_id": "vol-1"})
    assert ok.ok
    assert ok.values["cast_to"] == "scheduler"
    assert ok.values["volume_record"]["source_id"] == "img-1"
    assert ledger.usage() == (0, 5)
    over = engine.run({"request": REQUESTS["raw"], "resource_id": "vol-2"})
    assert over.state is RunState.REVERTED
    assert set(over.failures) == {"reserve_quota"}
    assert ledger.usage() == (0, 5)


def test_api_flow_failing_after_the_reservation_rolls_it_back() -> None:
    class CommitFails(FakeLedger):
        def commit_reservation(self, reservation_id: str) -> FakeReservation:
            raise RuntimeError("database went away")

    ledger = CommitFails()
    ledger.set_quota("p", "gigabytes", 10)
    outcome = FlowEngine(api_flow(ledger)).run({"request": REQUESTS["raw"], "resource_id": "vol-1"})
    assert outcome.state is RunState.REVERTED
    assert ledger.usage() == (0, 0)
    (only,) = ledger.reservations.values()
    assert only.state == "rolled_back"


def test_scheduler_flow_notifies_only_on_failure() -> None:
    notifier = MemoryNotifier()
    flow = scheduler_flow(CapacityScheduler([Host("a", 10)]), notifier)
    checkpoints = MemoryCheckpoints()
    ok = FlowEngine(flow, checkpoints=checkpoints).run(
        {"resource_id": "v", "volume_record": record(size=5)}, run_id="1"
    )
    assert ok.ok
    assert (ok.values["host"], ok.values["alternate_hosts"]) == ("a", [])
    assert not notifier.events
    run = checkpoints.load_run("1")
    assert run is not None
    assert "notify_scheduling_failed" not in run.tasks
    bad = FlowEngine(flow).run({"resource_id": "v", "volume_record": record(size=50)})
    assert bad.state is RunState.REVERTED
    assert [n.event_type for n in notifier.events] == ["volume.schedule.error"]
    assert "NoValidHost" in notifier.events[0].payload["reason"]


MANAGER_INPUTS = {"resource_id": "vol-1", "host": "a", "alternate_hosts": ["b", "c"], "reschedules": 0}


def test_manager_flow_reschedules_on_chosen_types_only() -> None:
    notifier = MemoryNotifier()
    driver = ScriptedDriver({"a": Busy("a is busy")})
    flow = manager_flow(driver, notifier, reschedule_on=(Busy,))
    checkpoints = MemoryCheckpoints()
    ok = FlowEngine(flow, checkpoints=checkpoints).run({**MANAGER_INPUTS, "volume_record": record("image")}, run_id="r")
    assert ok.ok
    assert ok.values["volume"]["host"] == "b"
    assert [e[:2] for e in driver.log] == [("create", "a"), ("delete", "a"), ("create", "b")]
    assert list(driver.volumes) == [("b", "vol-1")]
    assert [n.event_type for n in notifier.events] == ["volume.create.end"]
    run = checkpoints.load_run("r")
    assert run is not None
    assert run.retries == {"volume-manager.create": 1}
    assert run.overrides == {"reschedules": 1}
    assert run.tasks["extract_volume_spec"].attempt == 1

    fatal = ScriptedDriver({"a": Broken("bad image")})
    failed = FlowEngine(manager_flow(fatal, notifier, reschedule_on=(Busy,))).run(
        {**MANAGER_INPUTS, "volume_record": record("image")}
    )
    assert failed.state is RunState.REVERTED
    assert [e[:2] for e in fatal.log] == [("create", "a"), ("delete", "a")]
    assert notifier.events[-1].event_type == "volume.create.error"
    assert "Broken: bad image" in notifier.events[-1].payload["reason"]


def test_manager_flow_gives_up_when_the_alternates_or_reschedules_run_out() -> None:
    notifier = MemoryNotifier()
    everywhere = ScriptedDriver({h: RescheduleableError(f"{h} is full") for h in "abc"})
    out = FlowEngine(manager_flow(everywhere, notifier)).run({**MANAGER_INPUTS, "volume_record": record()})
    assert out.state is RunState.REVERTED
    assert [e[1] for e in everywhere.log if e[0] == "create"] == ["a", "b", "c"]
    assert "tried a, b, c" in str(out.failures["choose_host"])
    assert everywhere.volumes == {}

    limited = ScriptedDriver({h: RescheduleableError(f"{h} is full") for h in "abc"})
    out = FlowEngine(manager_flow(limited, notifier, max_reschedules=1)).run(
        {**MANAGER_INPUTS, "volume_record": record()}
    )
    assert out.state is RunState.REVERTED
    assert [e[1] for e in limited.log if e[0] == "create"] == ["a", "b"]
    assert "b is full" in str(out.failures["create_volume"])


def test_delete_flow_in_memory() -> None:
    ledger = FakeLedger()
    ledger.set_quota("p", "gigabytes", 10)
    ledger.reserve("k", "p", "gigabytes", 3)
    ledger.commit_reservation("k")
    driver = ScriptedDriver()
    driver.create_raw({"volume_id": "v", "size_gb": 3}, "a")
    notifier = MemoryNotifier()
    out = FlowEngine(delete_flow(ledger, driver, notifier)).run(
        {"resource_id": "v", "volume": {"id": "v", "host": "a"}, "quota_commit": {"reservation_id": "k"}}
    )
    assert out.ok
    assert ledger.usage() == (0, 0)
    assert driver.volumes == {}
    assert [n.event_type for n in notifier.events] == ["volume.delete.end"]
