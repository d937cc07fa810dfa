"""The embedded database: one SQLite file in WAL mode, shared by threads and processes on one machine.

Every write runs in ``BEGIN IMMEDIATE`` so that writers queue on SQLite's single write lock instead
of failing half-way; the compare-and-swap on ``version`` decides which of two racing writers wins.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import json
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from tenure.clock import Clock, system_clock
from tenure.errors import (
    AlreadyExists,
    InvalidArgument,
    SchemaNotMigrated,
    StoreUnavailable,
    TenureError,
)
from tenure.flow.records import FlowRunRow, FlowTaskRow
from tenure.machine import Kind
from tenure.store.assembly import DatabaseStore
from tenure.store.asyncreads import InlineReads
from tenure.store.groupcommit import GroupCommit, Queued
from tenure.store.migrator import latest_version, migrations
from tenure.store.model import CREATE_EVENT, JournalEntry, Resource
from tenure.store.plans import Driver, PageQuery
from tenure.store.rows import from_iso, journal_from_sqlite, resource_from_sqlite, to_iso, uses_json
from tenure.store.signal import Listener, WorkSignal
from tenure.store.sqlfile import load_queries
from tenure.store.tables import OwnedTables
from tenure.store.uses import UsePolicy
from tenure.store.write import Write

T = TypeVar("T")

__all__ = ["SQLiteDatabase", "SQLiteStore", "Synchronous"]


class _Held:
    """One thread's connection, held by that thread's local storage only."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn


Q = load_queries("sqlite.sql")


def _page(block: str) -> str:
    """A page's block with the columns and the filters it does not serve spliced in."""
    return Q[block].replace("/*residual*/", "\n" + Q["page_residual"]).replace("/*columns*/", Q["page_columns"])


#: A page's statement for each index it may walk (lanes: see _lanes_page).
_PAGES = {d: _page(f"page_{d}") for d in Driver if d is not Driver.LANES}


@functools.lru_cache(maxsize=64)
def _lanes_page(lanes: int) -> str:
    """The page over ``lanes`` (kind, state) ranges: one ``page_lane`` each, merged by id."""
    lane = _page("page_lane")
    arms = [
        lane.replace(":lane_kind_N", f":lane_kind_{i}").replace(":lane_state_N", f":lane_state_{i}")
        for i in range(lanes)
    ]
    return "\nUNION ALL\n".join(arms) + "\nORDER BY id\nLIMIT :limit"


_dumps = json.dumps


class Synchronous(enum.Enum):
    """SQLite's ``synchronous`` setting. FULL survives power loss; NORMAL survives process crashes."""

    FULL = "FULL"
    NORMAL = "NORMAL"


def _statements(script: str) -> Iterator[str]:
    """Split a migration script into statements (so they can run inside one explicit transaction)."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer
            buffer = ""
    if buffer.strip() and not all(ln.strip().startswith("--") or not ln.strip() for ln in buffer.splitlines()):
        raise ValueError(f"incomplete SQL statement at the end of a migration: {buffer.strip()[:80]!r}")


def _integrity_error(exc: sqlite3.IntegrityError) -> TenureError:
    """A constraint the database enforced, as the tenure error that names it."""
    text = str(exc)
    if "UNIQUE" in text or "PRIMARY KEY" in text:
        return AlreadyExists(text.rsplit(":", 1)[-1].strip() or "row", "(taken)")
    if "FOREIGN KEY" in text:
        return InvalidArgument("reference", "must name an existing row", text)
    return InvalidArgument("row", "breaks a constraint of the schema", text)


class SQLiteDatabase:
    """The SQLite dialect: connections per thread, one write lock, and the one write function."""

    dialect = "sqlite"
    sql = Q
    txid_positions = False

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Synchronous = Synchronous.FULL,
        busy_timeout: float = 30.0,
    ) -> None:
        self.path = str(path)
        self.target = f"sqlite:///{self.path}"
        self.operations = 0
        self._synchronous = Synchronous(synchronous)
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._all: weakref.WeakSet[_Held] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._writer = threading.Lock()
        #: The one write and the insert go through here: writes of many threads share a commit.
        self.group: GroupCommit[sqlite3.Connection] = GroupCommit(self._run_batch)
        self._listener: Listener | None = None
        self._closed = False

    # --- connections ---------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        self.operations += 1
        held: _Held | None = getattr(self._local, "held", None)
        if held is not None:
            return held.conn
        if self._closed:
            raise StoreUnavailable(self.target, "the store has been closed")
        try:
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False)
            self._enable_wal(conn)
            conn.execute(f"PRAGMA synchronous={self._synchronous.value}")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise StoreUnavailable(self.target, f"cannot open the database file ({exc})") from None
        # The connection lives as long as its thread: when the thread ends, its thread-local holder
        # goes, and the connection is closed with it (a server's pool retires threads all the time).
        held = _Held(conn)
        weakref.finalize(held, conn.close)
        self._local.held = held
        with self._lock:
            self._all.add(held)
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        """Put the file in WAL mode (which persists, so this is usually a no-op).

        When several connections switch a new file to WAL at once, SQLite answers "database is locked"
        at once instead of calling its busy handler; wait for the other switch like for any other lock.
        """
        deadline = time.monotonic() + self._busy_timeout
        pause = 0.001
        while True:
            try:
                if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if not ("locked" in str(exc) or "busy" in str(exc)) or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            self._raise_translated(exc)
        except sqlite3.IntegrityError as exc:
            raise _integrity_error(exc) from None

    def _raise_translated(self, exc: sqlite3.OperationalError) -> NoReturn:
        text = str(exc)
        if "no such table" in text:
            raise SchemaNotMigrated(self.target, self._schema_version_or_zero(), latest_version("sqlite")) from None
        if "locked" in text or "busy" in text:
            raise StoreUnavailable(
                self.target, f"the database stayed locked for more than {self._busy_timeout:g}s"
            ) from None
        raise StoreUnavailable(self.target, text) from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        # Threads of this process queue here, handing the write lock over at once, instead of in
        # SQLite's busy handler, which sleeps in steps of up to 100 ms (other processes still do).
        with self._writer, self._translated():
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        with self._translated():
            yield self._conn()

    # --- values --------------------------------------------------------------------------------

    def json_in(self, value: Any) -> Any:
        return _dumps(value)

    def json_out(self, value: Any) -> Any:
        return json.loads(value)

    def time_in(self, value: datetime | None) -> Any:
        return to_iso(value)

    def time_out(self, value: Any) -> datetime | None:
        return from_iso(value)

    def array_in(self, values: Sequence[str]) -> Any:
        return _dumps(list(values))

    def resource_out(self, row: Sequence[Any]) -> Resource:
        return resource_from_sqlite(tuple(row))

    # --- the one write -------------------------------------------------------------------------

    def batched(self, unit: Callable[[sqlite3.Connection], T], *, key: str = "") -> T:
        with self._translated():
            answer: T = self.group.submit(unit, key=key)
        return answer

    def commit(self, write: Write) -> bool:
        with self._translated():
            return bool(self.group.submit(lambda conn: _commit_write(conn, write)))

    def insert(self, resource: Resource, actor: str | None) -> Resource | None:
        with self._translated():
            found: Resource | None = self.group.submit(lambda conn: _insert_resource(conn, resource, actor))
        return found

    def _run_batch(self, batch: Sequence[Queued[sqlite3.Connection]]) -> None:
        """One transaction for every write queued (see tenure.store.groupcommit), each in a savepoint."""
        conn = self._conn()
        with self._writer:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if len(batch) == 1:
                    batch[0].result = batch[0].unit(conn)  # alone: its error rolls back the transaction
                else:
                    for item in batch:
                        conn.execute("SAVEPOINT unit")
                        try:
                            item.result = item.unit(conn)
                        except Exception as exc:
                            conn.execute("ROLLBACK TO unit")
                            item.error = exc
                        conn.execute("RELEASE unit")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    # --- reads and statements of this dialect --------------------------------------------------

    def async_reads(self) -> InlineReads:
        """Reads for an event loop: made right there, a local file answers in microseconds."""
        return InlineReads(self.find)

    def find(self, resource_id: str) -> Resource | None:
        with self._translated():
            row = self._conn().execute(Q["get_resource"], (resource_id,)).fetchone()
        return None if row is None else resource_from_sqlite(row)

    def select_page(self, query: PageQuery) -> list[Resource]:
        params: dict[str, Any] = {
            "kind": query.residual_kind,
            "states": None if query.residual_states is None else _dumps(query.residual_states),
            "desired": query.residual_desired,
            "key": query.key,
            # The key is a plain name (checked), quoted into a JSON path handed over as a parameter.
            "data_path": None if query.data is None else f'$."{query.data[0]}"',
            "data_value": None if query.data is None else query.data[1],
            "now": to_iso(query.now),
            "after": query.after,
            "limit": query.limit,
        }
        if query.driver is Driver.LANES:
            if not query.lanes:
                return []
            for i, (kind, state) in enumerate(query.lanes):
                params[f"lane_kind_{i}"], params[f"lane_state_{i}"] = kind, state
            sql = _lanes_page(len(query.lanes))
        else:
            sql = _PAGES[query.driver]
        with self._translated():
            rows = self._conn().execute(sql, params).fetchall()
        return [resource_from_sqlite(r) for r in rows]

    def journal(self, resource_id: str, after_version: int, limit: int) -> list[JournalEntry]:
        with self._translated():
            rows = self._conn().execute(Q["journal"], (resource_id, after_version, limit)).fetchall()
        return [journal_from_sqlite(r) for r in rows]

    def feed(self, after_seq: int, limit: int) -> list[JournalEntry]:
        with self._translated():
            rows = self._conn().execute(Q["feed"], (after_seq, limit)).fetchall()
        return [journal_from_sqlite(r) for r in rows]

    def claim_due(
        self, worker: str, pairs: Sequence[str], limit: int, now: datetime, expires: datetime
    ) -> list[tuple[Resource, bool]]:
        params = {"now": to_iso(now), "pairs": _dumps(list(pairs)), "limit": limit}
        claimed: list[tuple[Resource, bool]] = []
        # Under SQLite's single writer the candidates cannot be claimed by anyone else before the
        # updates below: the whole claim is one write transaction.
        with self.transaction() as tx:
            for resource_id, takeover in tx.execute(Q["claim_candidates"], params).fetchall():
                row = tx.execute(Q["claim_one"], (worker, to_iso(expires), int(takeover), resource_id)).fetchone()
                claimed.append((resource_from_sqlite(row), bool(takeover)))
        return claimed

    def save_flow(self, run_id: str, tasks: Sequence[FlowTaskRow], run: FlowRunRow | None, now: datetime) -> bool:
        stamp = to_iso(now)

        def text(value: Any) -> str | None:
            return None if value is None else _dumps(value)

        with self.transaction() as tx:
            for t in tasks:
                tx.execute(
                    Q["upsert_flow_task"],
                    (
                        run_id, t.task, t.state, t.attempt, t.seq, text(t.result), text(t.failure),
                        text(t.revert_failure), text(t.inputs), stamp,
                    ),
                )  # fmt: skip
            if run is not None:
                changed = tx.execute(
                    Q["update_flow_run"],
                    (
                        run.state, _dumps(run.overrides), _dumps(run.retries), text(run.failure),
                        text(run.pending_retry), stamp, run_id,
                    ),
                )  # fmt: skip
                return bool(changed.rowcount == 1)
        return True

    # --- schema and lifecycle ------------------------------------------------------------------

    def _schema_version_or_zero(self) -> int:
        conn = self._conn()
        if not conn.execute(Q["migrations_table_exists"]).fetchone()[0]:
            return 0
        return int(conn.execute(Q["schema_version"]).fetchone()[0])

    def schema_version(self) -> int:
        with self._translated():
            return self._schema_version_or_zero()

    def migrate(self) -> list[int]:
        applied: list[int] = []
        conn = self._conn()
        with self._translated():
            conn.execute(Q["create_migrations_table"])
        for migration in migrations(self.dialect):
            with self.transaction() as tx:
                # Checked inside the write lock: a concurrent migrator may have just applied it.
                if int(tx.execute(Q["schema_version"]).fetchone()[0]) >= migration.version:
                    continue
                for statement in _statements(migration.sql):
                    tx.execute(statement)
                tx.execute(Q["record_migration"], (migration.version, migration.name, to_iso(datetime.now(UTC))))
            applied.append(migration.version)
        return applied

    def owned_version(self, owner: str) -> int:
        with self._translated():
            conn = self._conn()
            if not conn.execute(Q["owned_migrations_table_exists"]).fetchone()[0]:
                return 0
            return int(conn.execute(Q["owned_version"], (owner,)).fetchone()[0])

    def migrate_owned(self, tables: OwnedTables) -> list[int]:
        applied: list[int] = []
        with self._translated():
            self._conn().execute(Q["create_owned_migrations_table"])
        for migration in tables.migrations(self.dialect):
            with self.transaction() as tx:
                # Checked inside the write lock: a concurrent migrator may have just applied it.
                if int(tx.execute(Q["owned_version"], (tables.owner,)).fetchone()[0]) >= migration.version:
                    continue
                for statement in _statements(migration.sql):
                    tx.execute(statement)
                stamp = to_iso(datetime.now(UTC))
                tx.execute(Q["record_owned_migration"], (tables.owner, migration.version, migration.name, stamp))
            applied.append(migration.version)
        return applied

    def listen(self, signal: WorkSignal, changed: WorkSignal) -> Listener:
        """Relay commits of other processes to the signals by watching SQLite's ``data_version``.

        SQLite has no notifications; the watcher reads a counter from the WAL index in shared memory
        ten times a second, which costs no disk I/O, so work written by another process (the CLI, a
        second worker) is seen within about 0.1 s instead of at the next poll.
        """

        def watch_once(stop: threading.Event, connected: Callable[[], None]) -> None:
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout, check_same_thread=False)
            try:
                seen = conn.execute("PRAGMA data_version").fetchone()[0]
                connected()
                changed.notify()
                while not stop.wait(0.1):
                    version = conn.execute("PRAGMA data_version").fetchone()[0]
                    if version != seen:
                        seen = version
                        signal.notify()
                        changed.notify()
            finally:
                conn.close()

        with self._lock:
            if self._listener is None:
                self._listener = Listener("tenure-sqlite-watch", watch_once, signal)
            return self._listener

    def close(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            self._closed = True
            for held in list(self._all):
                held.conn.close()
            self._all.clear()
        self._local = threading.local()


class SQLiteStore(DatabaseStore):
    """A store in one SQLite file.

    >>> import tempfile, os
    >>> from tenure.kinds import image
    >>> path = os.path.join(tempfile.mkdtemp(), "doc.db")
    >>> store = SQLiteStore(path, [image], check_schema=False)
    >>> store.migrate()
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    >>> r = store.create("image", {"name": "debian-12"})
    >>> r.state, r.version
    ('queued', 1)
    >>> r = store.fire(r, "upload")
    >>> r.state, r.version
    ('saving', 2)
    >>> [e.event for e in store.journal(r.id)]
    ['@create', 'upload']
    >>> store.close()
    """

    def __init__(
        self,
        path: str | Path,
        kinds: Iterable[Kind] = (),
        *,
        clock: Clock = system_clock,
        synchronous: Synchronous = Synchronous.FULL,
        busy_timeout: float = 30.0,
        default_sharable: bool = True,
        uses: UsePolicy | None = None,
        tables: Iterable[OwnedTables] = (),
        check_schema: bool = True,
    ) -> None:
        db = SQLiteDatabase(path, synchronous=synchronous, busy_timeout=busy_timeout)
        self.path = db.path
        super().__init__(
            db,
            kinds,
            clock=clock,
            default_sharable=default_sharable,
            uses=uses,
            tables=tables,
            check_schema=check_schema,
        )


# --- the one write, and the insert: units of a group commit --------------------------------------


def _commit_write(conn: sqlite3.Connection, write: Write) -> bool:
    """The compare-and-swap of ``write`` and its side rows, inside the caller's transaction."""
    before, after = write.before, write.after
    now = to_iso(after.updated_at)
    # A transition enters its state now: the same time, formatted once.
    entered = now if after.entered_at is after.updated_at else to_iso(after.entered_at)
    swapped = (
        conn.execute(
            Q["write"],
            (
                after.state, after.version, _dumps(after.data) if write.data_changed else None,
                after.error, after.attempts, entered, to_iso(after.next_attempt_at),
                to_iso(after.deadline), after.desired_state, after.generation,
                after.observed_generation, now, write.keeps_claim, before.id, before.version,
                before.state, write.token,
                _dumps(uses_json(after.in_use_by)) if write.uses_changed else None,
                after.forced_generation if write.forces else None,
                after.claim_token, after.claimed_by, to_iso(after.claim_expires_at), to_iso(before.created_at),
            ),
        ).rowcount
        == 1
    )  # fmt: skip
    if not swapped:
        return False
    conn.execute(
        Q["insert_journal"],
        (
            before.id, after.version, write.event, before.state, after.state, write.actor, now,
            _dumps(write.detail) if write.detail else "{}",
        ),
    )  # fmt: skip
    wait = write.wait
    if wait is not None:
        conn.execute(
            Q["insert_wait"],
            (
                wait.token_hash, before.id, after.version, after.state, _dumps(list(wait.keys)),
                _dumps(dict(wait.rules)), now, to_iso(after.deadline),
            ),
        )  # fmt: skip
    if write.carries_waits:
        conn.execute(Q["carry_waits"], (after.version, before.id, before.version))
    for seq in write.settle:
        conn.execute(Q["settle_callback"], (now, write.settle_result, seq))
    if write.uses_changed:
        for party in write.uses_dropped:
            conn.execute(Q["drop_use"], (before.id, party))
        for party, use in write.uses_kept:
            conn.execute(
                Q["keep_use"],
                (before.id, party, use.client, to_iso(use.registered_at), to_iso(use.expires_at)),
            )
    return True


def _insert_resource(conn: sqlite3.Connection, r: Resource, actor: str | None) -> Resource | None:
    """Insert ``r`` with its creation journal row; the resource holding its idempotency key if taken."""
    created = to_iso(r.created_at)
    cur = conn.execute(
        Q["insert_resource"],
        (
            r.id, r.kind, r.state, r.version, _dumps(r.spec), _dumps(r.data), r.desired_state,
            r.generation, r.observed_generation, int(r.sharable), r.error, r.attempts, created,
            to_iso(r.next_attempt_at), to_iso(r.deadline), None, None, None, r.idempotency_key,
            created, created, r.kind_version,
        ),
    )  # fmt: skip
    if cur.rowcount == 0:
        row = conn.execute(Q["get_by_idempotency_key"], (r.idempotency_key,)).fetchone()
        return resource_from_sqlite(row)
    conn.execute(Q["insert_journal"], (r.id, 1, CREATE_EVENT, None, r.state, actor, created, "{}"))
    return None
