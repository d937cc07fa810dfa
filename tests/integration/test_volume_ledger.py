"""The volume example's quota ledger: tables a kind owns in the store's database, on both databases.

The ledger's tables are declared by the kind (:data:`tenure.kinds.volume.VOLUME_TABLES`), migrated with
the store's own, and reached through the store's ``TableStore`` seam.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator

import psycopg
import pytest

from tenure import InvalidArgument, QuotaExceeded, SchemaNotMigrated, open_store
from tenure.kinds.image import image
from tenure.kinds.volume import VOLUME_TABLES, StoreQuotaLedger


@pytest.fixture
def ledger(store_url: str) -> Iterator[StoreQuotaLedger]:
    """The ledger of a migrated store of each dialect opened with the volume kind's tables."""
    s = open_store(store_url, [image], check_schema=False, tables=[VOLUME_TABLES])
    try:
        s.migrate()
        yield StoreQuotaLedger(s)
    finally:
        s.close()


def _owned(store_url: str) -> list[tuple[str, int, str]]:
    """The owned-table migrations the database records."""
    query = "SELECT owner, version, name FROM tenure_owned_migrations ORDER BY owner, version"
    if store_url.startswith("sqlite"):
        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as conn:
            return [tuple(r) for r in conn.execute(query).fetchall()]
    with psycopg.connect(store_url) as conn:
        return [tuple(r) for r in conn.execute(query.encode()).fetchall()]  # type: ignore[misc]


def test_migrate_applies_and_records_the_tables_a_kind_owns_once(store_url: str) -> None:
    s = open_store(store_url, [image], check_schema=False, tables=[VOLUME_TABLES])
    try:
        s.migrate()
        s.migrate()  # again: nothing more to apply
        assert _owned(store_url) == [("volume", 1, "quota_ledger")]
        ledger = StoreQuotaLedger(s)
        assert ledger.set_quota("p", "gb", 5).available == 5
    finally:
        s.close()


def test_a_store_whose_owned_tables_are_behind_refuses_to_open_until_migrated(store_url: str) -> None:
    bare = open_store(store_url, [image], check_schema=False)
    try:
        bare.migrate()  # tenure's own schema only: the volume tables' migrations are not recorded
    finally:
        bare.close()
    with pytest.raises(SchemaNotMigrated, match=r"volume tables"):
        open_store(store_url, [image], tables=[VOLUME_TABLES])
    migrator = open_store(store_url, [image], check_schema=False, tables=[VOLUME_TABLES])
    try:
        migrator.migrate()
    finally:
        migrator.close()
    open_store(store_url, [image], tables=[VOLUME_TABLES]).close()


def test_concurrent_reserves_and_commits_with_one_id_are_one(ledger: StoreQuotaLedger) -> None:
    ledger.set_quota("p", "gb", 100)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def race() -> None:
        try:
            barrier.wait(timeout=10)
            ledger.reserve("r-1", "p", "gb", 30)
            barrier.wait(timeout=10)
            ledger.commit_reservation("r-1")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=race) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    quota = ledger.quota("p", "gb")
    assert (quota.in_use, quota.reserved) == (30, 0)


def test_a_reservation_id_reused_for_another_amount_is_refused(ledger: StoreQuotaLedger) -> None:
    ledger.set_quota("p", "gb", 100)
    ledger.reserve("r-1", "p", "gb", 30)
    with pytest.raises(InvalidArgument, match="already used for 30 gb"):
        ledger.reserve("r-1", "p", "gb", 31)
    with pytest.raises(QuotaExceeded) as caught:
        ledger.reserve("r-2", "p", "gb", 71)
    assert caught.value.available == 70
    assert ledger.quota("p", "gb").reserved == 30


def test_giving_back_twice_either_way_is_a_no_op(ledger: StoreQuotaLedger) -> None:
    ledger.set_quota("p", "gb", 100)
    ledger.reserve("r-1", "p", "gb", 30)
    ledger.commit_reservation("r-1")
    ledger.release_reservation("r-1")
    assert ledger.rollback_reservation("r-1").state.value == "released"
    ledger.reserve("r-2", "p", "gb", 10)
    ledger.rollback_reservation("r-2")
    assert ledger.release_reservation("r-2").state.value == "rolled_back"
    with pytest.raises(InvalidArgument, match="must be reserved to become committed"):
        ledger.commit_reservation("r-2")
    quota = ledger.quota("p", "gb")
    assert (quota.in_use, quota.reserved) == (0, 0)
