"""The volume kind of seed 004 end to end on both stores: api, scheduler and manager flows as steps.

Each test creates volumes and runs ``run_step`` for every work state they pass through, the way an
engine worker would. The quota invariant is checked against the store's own ledger: at rest a
project has nothing reserved, and its usage is the sum of the sizes of its volumes that are not
deleted and whose api flow committed quota (a volume in ``error`` after that still holds it).
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tenure import Conflict, Resource, open_store
from tenure.engine.flows import FlowStep, step_run_id
from tenure.errors import InvalidSpec
from tenure.kinds.volume import (
    Host,
    MemoryNotifier,
    MemoryVolumeDriver,
    ReservationView,
    StoreQuotaLedger,
    VolumeSource,
    volume,
    volume_steps,
)
from tenure.store.protocol import EngineStore
from tests.store_support import FakeClock
from tests.support.flow_steps import run_step

PROJECT = "proj"

SPECS: dict[str, dict[str, Any]] = {
    "raw": {"source": "raw"},
    "image": {"source": "image", "image_id": "img-1"},
    "snapshot": {"source": "snapshot", "snapshot_id": "snap-1"},
    "volume": {"source": "volume", "source_volume_id": "vol-0"},
}


class Busy(Exception):
    """The host is busy: reschedulable."""


class Corrupt(Exception):
    """The source is corrupt: no other host will do better."""


class Crash(BaseException):
    """Stands in for a kill: not an Exception, so it stops the run_step mid-flow."""


class ScriptedDriver(MemoryVolumeDriver):
    """Fails chosen (volume, host) or (any volume, host) creates with chosen exceptions; counts calls."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_on_host: dict[str, BaseException] = {}
        self.fail_volume_on_host: dict[tuple[str, str], BaseException] = {}
        #: Raised once, by the next create, then forgotten.
        self.crash_next: BaseException | None = None
        self.creates: list[tuple[str, str]] = []
        self.deletes: list[tuple[str, str]] = []
        self.fail_delete: BaseException | None = None

    def _create(self, volume: Mapping[str, Any], host: str, source: str) -> Mapping[str, Any]:
        vid = str(volume["volume_id"])
        self.creates.append((vid, host))
        failure = self.fail_volume_on_host.get((vid, host)) or self.fail_on_host.get(host)
        if failure is not None:
            raise failure
        out = super()._create(volume, host, source)
        if self.crash_next is not None:
            crash, self.crash_next = self.crash_next, None
            raise crash
        return out

    def delete(self, volume_id: str, host: str) -> None:
        self.deletes.append((volume_id, host))
        if self.fail_delete is not None:
            raise self.fail_delete
        super().delete(volume_id, host)


class Ledger:
    """The store's quota ledger, with faults a test can switch on (each fires once)."""

    def __init__(self, store: EngineStore) -> None:
        self.store = store
        self.quotas = StoreQuotaLedger(store)  # type: ignore[arg-type]
        self.calls: list[tuple[str, str]] = []
        self.fail_commit_before: BaseException | None = None
        self.fail_commit_after: BaseException | None = None
        self.crash_after_reserve: BaseException | None = None
        #: Resource ids whose commit fails (before committing), every time.
        self.refuse_commit_for: set[str] = set()

    def reserve(self, reservation_id: str, project: str, resource: str, amount: int) -> ReservationView:
        self.calls.append(("reserve", reservation_id))
        made = self.quotas.reserve(reservation_id, project, resource, amount)
        if self.crash_after_reserve is not None:
            crash, self.crash_after_reserve = self.crash_after_reserve, None
            raise crash
        return made

    def reservation(self, reservation_id: str) -> ReservationView:
        return self.quotas.reservation(reservation_id)

    def commit_reservation(self, reservation_id: str) -> ReservationView:
        self.calls.append(("commit", reservation_id))
        if reservation_id.split("@", 1)[0] in self.refuse_commit_for:
            raise RuntimeError("commit refused")
        if self.fail_commit_before is not None:
            failure, self.fail_commit_before = self.fail_commit_before, None
            raise failure
        done = self.quotas.commit_reservation(reservation_id)
        if self.fail_commit_after is not None:
            failure, self.fail_commit_after = self.fail_commit_after, None
            raise failure
        return done

    def rollback_reservation(self, reservation_id: str) -> ReservationView:
        self.calls.append(("rollback", reservation_id))
        return self.quotas.rollback_reservation(reservation_id)

    def release_reservation(self, reservation_id: str) -> ReservationView:
        self.calls.append(("release", reservation_id))
        return self.quotas.release_reservation(reservation_id)


@dataclass
class Cloud:
    """One store with the volume kind, its collaborators, and the steps built from them."""

    store: EngineStore
    ledger: Ledger
    driver: ScriptedDriver
    notifier: MemoryNotifier
    steps: dict[str, FlowStep]
    created: list[str] = field(default_factory=list)

    def create(self, size: int = 10, source: str = "raw", project: str = PROJECT, **extra: Any) -> Resource:
        r = self.store.create("volume", {"size_gb": size, "project": project, **SPECS[source], **extra})
        self.created.append(r.id)
        return r

    def step(self, resource: Resource) -> Resource:
        """One run_step for the resource's current (work) state."""
        return run_step(self.store, resource, self.steps[resource.state]).resource

    def drive(self, resource: Resource) -> Resource:
        """run_step until the resource rests."""
        for _ in range(10):
            if resource.state not in self.steps:
                return resource
            resource = self.step(resource)
        raise AssertionError(f"volume {resource.id} did not come to rest: {resource.state}")

    def delete(self, resource: Resource) -> Resource:
        return self.drive(self.store.fire(resource, "delete"))

    def events(self, resource: Resource) -> list[str]:
        return [e.event for e in self.store.journal(resource.id)]

    def check_quota(self, project: str = PROJECT) -> None:
        """reserved == 0 and in_use == the sizes of the volumes holding committed quota."""
        quota = self.ledger.quotas.quota(project, "gigabytes")
        holding = 0
        for rid in self.created:
            r = self.store.get(rid)
            if r.spec["project"] == project and r.state != "deleted" and "quota_commit" in r.data:
                holding += int(r.spec["size_gb"])
        assert (quota.reserved, quota.in_use) == (0, holding)
        assert quota.in_use <= quota.hard_limit


HOSTS = (Host("host-a", 100), Host("host-b", 80), Host("host-c", 60))


def make_cloud(store: EngineStore, *, hosts: tuple[Host, ...] = HOSTS, **options: Any) -> Cloud:
    store.register(volume)
    ledger = Ledger(store)
    driver = ScriptedDriver()
    notifier = MemoryNotifier()
    steps = volume_steps(ledger, driver=driver, notifier=notifier, hosts=hosts, **options)
    return Cloud(store, ledger, driver, notifier, steps)


@pytest.fixture
def cloud(store: EngineStore) -> Cloud:
    c = make_cloud(store, reschedule_on=(Busy,))
    StoreQuotaLedger(store).set_quota(PROJECT, "gigabytes", 100)
    return c


# --- the happy path --------------------------------------------------------------------------------

SOURCE_ON_HOST = {"raw": "raw", "image": "image:img-1", "snapshot": "snapshot:snap-1", "volume": "volume:vol-0"}


@pytest.mark.parametrize("source", [s.value for s in VolumeSource])
def test_each_source_goes_through_the_three_flows_to_available(cloud: Cloud, source: str) -> None:
    first = r = cloud.create(size=10, source=source)
    assert (r.state, r.version) == ("requested", 1)
    r = cloud.step(r)
    assert r.state == "scheduling"
    assert r.data["cast_to"] == "scheduler"
    assert r.data["volume_record"]["id"] == r.id
    assert r.data["volume_record"]["source_type"] == source
    assert cloud.ledger.quotas.quota(PROJECT, "gigabytes").in_use == 10
    scheduling_run = step_run_id(cloud.store, r)
    r = cloud.step(r)
    assert r.state == "creating"
    assert (r.data["host"], r.data["alternate_hosts"]) == ("host-a", ["host-b", "host-c"])
    r = cloud.step(r)
    assert r.state == "available"
    assert r.error is None
    made = r.data["volume"]
    assert (made["id"], made["host"], made["type"], made["size_gb"]) == (r.id, "host-a", source, 10)
    assert cloud.driver.volumes[("host-a", r.id)]["source"] == SOURCE_ON_HOST[source]
    assert cloud.events(r) == ["@create", "accepted", "scheduled", "created"]
    assert [n.event_type for n in cloud.notifier.events] == ["volume.create.end"]
    reservation_id = r.data["quota_commit"]["reservation_id"]
    assert reservation_id == f"{r.id}@1/reserve_quota/0"
    assert cloud.ledger.quotas.reservation(reservation_id).state == "committed"
    cloud.check_quota()
    # The scheduler's notify-on-failure task never ran.
    found = cloud.store.load_flow_run(scheduling_run)
    assert found is not None
    assert found[0].state == "success"
    assert {t.task for t in found[1]} == {"extract_scheduler_spec", "schedule_volume"}
    # A step for a version that has moved on is refused by the fenced write, and nothing runs twice.
    with pytest.raises(Conflict):
        cloud.step(first)
    assert cloud.ledger.calls == [("reserve", reservation_id), ("commit", reservation_id)]
    cloud.check_quota()


def test_a_client_event_cannot_rewrite_what_the_flows_produced(cloud: Cloud) -> None:
    """A delete that carried a forged quota commit would release a commitment the volume never made."""
    r = cloud.drive(cloud.create(size=30))
    for key in ("quota_commit", "reservation", "host", "volume"):
        with pytest.raises(InvalidSpec) as refused:
            cloud.store.fire(r, "delete", data={key: {"reservation_id": "someone-else"}})
        assert [field for field, _ in refused.value.problems] == [f"data.{key}"]
    assert cloud.store.get(r.id) == r, "nothing written"
    assert cloud.delete(r).state == "deleted"
    cloud.check_quota()


def test_delete_releases_the_quota_and_a_failed_delete_keeps_it(cloud: Cloud) -> None:
    a = cloud.drive(cloud.create(size=30))
    b = cloud.drive(cloud.create(size=20, source="image"))
    cloud.check_quota()
    assert cloud.ledger.quotas.quota(PROJECT, "gigabytes").in_use == 50
    a = cloud.delete(a)
    assert a.state == "deleted"
    assert cloud.events(a)[-2:] == ["delete", "deleted"]
    assert ("host-a", a.id) not in cloud.driver.volumes
    assert cloud.ledger.quotas.reservation(a.data["quota_commit"]["reservation_id"]).state == "released"
    assert cloud.ledger.quotas.quota(PROJECT, "gigabytes").in_use == 20
    cloud.check_quota()

    cloud.driver.fail_delete = OSError("target busy")
    b = cloud.delete(b)
    assert b.state == "error"
    assert "target busy" in (b.error or "")
    assert cloud.ledger.quotas.quota(PROJECT, "gigabytes").in_use == 20
    cloud.check_quota()
    cloud.driver.fail_delete = None
    assert cloud.delete(b).state == "deleted"
    assert cloud.ledger.quotas.quota(PROJECT, "gigabytes").in_use == 0
    assert [n.event_type for n in cloud.notifier.events].count("volume.delete.end") == 2
    cloud.check_quota()


# --- the api flow: rejection and rollback ----------------------------------------------------------


def test_quota_exceeded_or_an_invalid_request_is_rejected_with_the_quota_untouched(cloud: Cloud) -> None:
    kept = cloud.drive(cloud.create(size=90))
    r = cloud.step(cloud.create(size=20))
    assert r.state == "error"
    assert cloud.events(r) == ["@create", "rejected"]
    assert "QuotaExceeded" in (r.error or "")
    assert "volume_record" not in r.data
    quota = cloud.ledger.quotas.quota(PROJECT, "gigabytes")
    assert (quota.reserved, quota.in_use) == (0, 90)
    assert [c for c in cloud.ledger.calls if r.id in c[1]] == [("reserve", f"{r.id}@1/reserve_quota/0")]
    cloud.check_quota()

    calls = len(cloud.ledger.calls)
    odd = cloud.step(cloud.create(size=5, availability_zone="mars"))
    assert odd.state == "error"
    assert "availability zone 'mars' does not exist" in (odd.error or "")
    assert len(cloud.ledger.calls) == calls  # refused before any quota was asked for

    # Deleting a rejected volume gives back nothing, since it never held anything.
    assert cloud.delete(r).state == "deleted"
    assert cloud.ledger.quotas.quota(PROJECT, "gigabytes").in_use == 90
    assert cloud.delete(kept).state == "deleted"
    cloud.check_quota()


def test_a_failure_after_the_reservation_rolls_it_back_and_a_commit_is_released(cloud: Cloud) -> None:
    cloud.ledger.fail_commit_before = RuntimeError("database went away")
    r = cloud.step(cloud.create(size=25))
    assert r.state == "error"
    assert "database went away" in (r.error or "")
    assert cloud.ledger.quotas.reservation(f"{r.id}@1/reserve_quota/0").state == "rolled_back"
    quota = cloud.ledger.quotas.quota(PROJECT, "gigabytes")
    assert (quota.reserved, quota.in_use) == (0, 0)
    cloud.check_quota()

    # The commit took effect, then its caller failed: the commit's revert releases the usage.
    cloud.ledger.fail_commit_after = RuntimeError("lost the answer")
    late = cloud.step(cloud.create(size=25))
    assert late.state == "error"
    key = f"{late.id}@1/reserve_quota/0"
    assert cloud.ledger.quotas.reservation(key).state == "released"
    assert [c[0] for c in cloud.ledger.calls if c[1] == key] == ["reserve", "commit", "release"]
    cloud.check_quota()


# --- the scheduler flow ----------------------------------------------------------------------------


def test_unschedulable_notifies_exactly_once_and_keeps_the_quota_until_deleted(cloud: Cloud) -> None:
    cloud.ledger.quotas.set_quota(PROJECT, "gigabytes", 1000)
    r = cloud.drive(cloud.create(size=500))
    assert r.state == "error"
    assert cloud.events(r) == ["@create", "accepted", "unschedulable"]
    assert "NoValidHost" in (r.error or "")
    sent = cloud.notifier.of_type("volume.schedule.error")
    assert len(sent) == 1
    assert sent[0].payload["volume_id"] == r.id
    assert "no host has 500 GB free" in sent[0].payload["reason"]
    assert cloud.notifier.of_type("volume.create.end") == []
    assert cloud.driver.creates == []
    assert cloud.ledger.quotas.quota(PROJECT, "gigabytes").in_use == 500
    cloud.check_quota()
    assert cloud.delete(r).state == "deleted"
    cloud.check_quota()


def test_a_failing_scheduler_plugin_fails_the_step(store: EngineStore) -> None:
    class Down:
        def candidates(self, request_spec: Mapping[str, Any]) -> list[str]:
            raise ConnectionError("scheduler service down")

    c = make_cloud(store, scheduler=Down())
    StoreQuotaLedger(store).set_quota(PROJECT, "gigabytes", 100)
    r = c.drive(c.create(size=10))
    assert r.state == "error"
    assert "scheduler service down" in (r.error or "")
    assert len(c.notifier.of_type("volume.schedule.error")) == 1


# --- the manager flow: reschedule or fail ----------------------------------------------------------


def test_a_reschedulable_failure_moves_the_volume_to_another_host(cloud: Cloud) -> None:
    cloud.driver.fail_on_host["host-a"] = Busy("host-a is busy")
    r = cloud.drive(cloud.create(size=10, source="snapshot"))
    assert r.state == "available"
    assert r.data["volume"]["host"] == "host-b"
    assert r.data["host"] == "host-a"  # where the scheduler sent it first
    assert cloud.driver.creates == [(r.id, "host-a"), (r.id, "host-b")]
    assert (r.id, "host-a") in cloud.driver.deletes  # the failed try was cleaned up
    assert list(cloud.driver.volumes) == [("host-b", r.id)]
    found = cloud.store.load_flow_run(f"{r.id}@3")
    assert found is not None
    assert dict(found[0].retries) == {"volume-manager.create": 1}
    assert cloud.notifier.of_type("volume.create.error") == []
    cloud.check_quota()


def test_a_non_reschedulable_failure_reverts_the_flow_and_keeps_quota_until_deleted(cloud: Cloud) -> None:
    fine = cloud.drive(cloud.create(size=15))
    cloud.driver.fail_on_host["host-a"] = Corrupt("snapshot is corrupt")
    r = cloud.drive(cloud.create(size=10, source="snapshot"))
    assert r.state == "error"
    assert cloud.events(r) == ["@create", "accepted", "scheduled", "failed"]
    assert "Corrupt: snapshot is corrupt" in (r.error or "")
    assert "volume" not in r.data
    assert cloud.driver.creates[-1] == (r.id, "host-a")
    assert not any(vid == r.id for _, vid in cloud.driver.volumes)
    failed = cloud.notifier.of_type("volume.create.error")
    assert len(failed) == 1
    assert failed[0].payload["volume_id"] == r.id
    found = cloud.store.load_flow_run(f"{r.id}@3")
    assert found is not None
    assert found[0].state == "reverted"
    cloud.check_quota()
    assert cloud.ledger.quotas.quota(PROJECT, "gigabytes").in_use == 25
    cloud.delete(r)
    cloud.delete(fine)
    cloud.check_quota()
    assert cloud.ledger.quotas.quota(PROJECT, "gigabytes").in_use == 0


def test_running_out_of_hosts_fails_the_volume(cloud: Cloud) -> None:
    for host in HOSTS:
        cloud.driver.fail_on_host[host.name] = Busy(f"{host.name} is busy")
    r = cloud.drive(cloud.create(size=10))
    assert r.state == "error"
    assert "no host left to reschedule to; tried host-a, host-b, host-c" in (r.error or "")
    assert [h for _, h in cloud.driver.creates] == ["host-a", "host-b", "host-c"]
    assert cloud.driver.volumes == {}
    cloud.check_quota()


# --- resuming after a crash ------------------------------------------------------------------------


def test_a_crash_after_reserving_resumes_without_taking_the_quota_twice(cloud: Cloud) -> None:
    r = cloud.create(size=30)
    cloud.ledger.crash_after_reserve = Crash()
    with pytest.raises(Crash):
        cloud.step(r)
    r = cloud.store.get(r.id)
    assert (r.state, r.version) == ("requested", 1)
    assert cloud.ledger.quotas.quota(PROJECT, "gigabytes").reserved == 30  # held by the interrupted run
    r = cloud.step(r)
    assert r.state == "scheduling"
    key = f"{r.id}@1/reserve_quota/0"
    assert cloud.ledger.calls.count(("reserve", key)) == 2  # the running task ran again ...
    assert cloud.ledger.quotas.reservation(key).state == "committed"  # ... and found its own reservation
    found = cloud.store.load_flow_run(f"{r.id}@1")
    assert found is not None
    attempts = {t.task: (t.state, t.attempt) for t in found[1]}
    assert attempts["extract_volume_request"] == ("success", 1)
    assert attempts["reserve_quota"] == ("success", 2)
    assert attempts["commit_quota"] == ("success", 1)
    cloud.check_quota()
    assert cloud.drive(r).state == "available"
    cloud.check_quota()


def test_a_crash_in_the_driver_resumes_the_manager_flow_where_it_stopped(cloud: Cloud) -> None:
    r = cloud.step(cloud.step(cloud.create(size=10, source="image")))
    assert r.state == "creating"
    cloud.driver.crash_next = Crash()
    with pytest.raises(Crash):
        cloud.step(r)
    r = cloud.store.get(r.id)
    assert (r.state, r.version) == ("creating", 3)
    r = cloud.step(r)
    assert r.state == "available"
    assert r.data["volume"]["host"] == "host-a"
    assert cloud.driver.creates == [(r.id, "host-a"), (r.id, "host-a")]
    assert list(cloud.driver.volumes) == [("host-a", r.id)]
    found = cloud.store.load_flow_run(f"{r.id}@3")
    assert found is not None
    attempts = {t.task: (t.state, t.attempt) for t in found[1]}
    assert attempts["extract_volume_spec"] == ("success", 1)
    assert attempts["choose_host"] == ("success", 1)
    assert attempts["create_volume"] == ("success", 2)
    assert len(cloud.notifier.of_type("volume.create.end")) == 1
    cloud.check_quota()


# --- random volumes, random failures ---------------------------------------------------------------

FAILURES = st.sampled_from(["none", "none", "busy", "corrupt"])


@st.composite
def volume_plans(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "size": draw(st.integers(1, 40)),
        "source": draw(st.sampled_from(sorted(SPECS))),
        "commit_fails": draw(st.integers(0, 5)) == 0,
        "host_failures": draw(st.lists(FAILURES, min_size=3, max_size=3)),
        "delete": draw(st.booleans()),
    }


FreshStore = Callable[[], AbstractContextManager[EngineStore]]


@pytest.fixture
def fresh_store(store_url: str, tmp_path: Path, clock: FakeClock, request: pytest.FixtureRequest) -> FreshStore:
    """``with fresh_store() as store``: a migrated store on a database of its own, of the test's dialect.

    For property tests: every example starts from an empty database, so no example leans on (or is
    hidden by) what an earlier one left behind.
    """
    numbers = itertools.count()
    make_database: Callable[[], str] | None = None
    if not store_url.startswith("sqlite"):
        make_database = request.getfixturevalue("make_pg_database")

    @contextlib.contextmanager
    def fresh() -> Iterator[EngineStore]:
        url = f"sqlite:///{tmp_path}/example-{next(numbers)}.db" if make_database is None else make_database()
        s = open_store(url, clock=clock, check_schema=False)
        try:
            s.migrate()
            yield s
        finally:
            s.close()

    return fresh


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    limit=st.integers(0, 120),
    capacities=st.lists(st.integers(5, 40), min_size=3, max_size=3),
    plans=st.lists(volume_plans(), min_size=1, max_size=4),
)
def test_random_volumes_with_random_failures_keep_the_quota_invariant(
    fresh_store: FreshStore, limit: int, capacities: list[int], plans: list[dict[str, Any]]
) -> None:
    with fresh_store() as store:
        random_volumes_keep_the_quota_invariant(store, limit, capacities, plans)


def random_volumes_keep_the_quota_invariant(
    store: EngineStore, limit: int, capacities: list[int], plans: list[dict[str, Any]]
) -> None:
    hosts = tuple(Host(f"h{i}", cap) for i, cap in enumerate(capacities))
    c = make_cloud(store, hosts=hosts, reschedule_on=(Busy,))
    project = f"p-{uuid.uuid4().hex[:12]}"
    StoreQuotaLedger(store).set_quota(project, "gigabytes", limit)
    made: list[tuple[Resource, dict[str, Any]]] = []
    for plan in plans:
        r = c.create(size=plan["size"], source=plan["source"], project=project)
        if plan["commit_fails"]:
            c.ledger.refuse_commit_for.add(r.id)
        for host, failure in zip(hosts, plan["host_failures"], strict=True):
            if failure != "none":
                c.driver.fail_volume_on_host[(r.id, host.name)] = (
                    Busy("busy") if failure == "busy" else Corrupt("corrupt")
                )
        while r.state in c.steps:
            r = c.step(r)
            c.check_quota(project)
        assert r.state in ("available", "error")
        event(f"volume ended {r.state} after {c.events(r)[-1]}")
        if r.state == "available":
            host = r.data["volume"]["host"]
            assert c.driver.volumes[(host, r.id)]["size_gb"] == plan["size"]
        made.append((r, plan))
    for r, plan in made:
        if plan["delete"]:
            assert c.delete(r).state == "deleted"
            c.check_quota(project)
            assert not any(vid == r.id for _, vid in c.driver.volumes)
    quota = StoreQuotaLedger(store).quota(project, "gigabytes")
    assert quota.in_use == sum(p["size"] for r, p in made if not p["delete"] and "quota_commit" in store.get(r.id).data)
    # The database holds this example's volumes and nothing else: every one of them is accounted for.
    assert sorted(r.id for r in store.list(kind="volume", limit=1000).items) == sorted(c.created)
