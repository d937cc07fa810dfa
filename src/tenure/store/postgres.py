"""The shared store: PostgreSQL through psycopg 3 and a connection pool.

Many workers on many hosts may share one database. A transition is a single statement (the
compare-and-swap ``UPDATE`` and its journal ``INSERT`` joined in one CTE), so it costs one round trip
and commits atomically in autocommit mode.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg.errors
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from tenure.clock import Clock, system_clock
from tenure.errors import AlreadyExists, InvalidArgument, SchemaNotMigrated, SchemaTooNew, StoreUnavailable
from tenure.machine import Kind
from tenure.store.claims import WaitPlan
from tenure.store.core import CreatePlan, FirePlan, StoreCore
from tenure.store.migrator import latest_version, migrations
from tenure.store.model import CREATE_EVENT, JournalEntry, Resource
from tenure.store.plans import PageQuery
from tenure.store.records import FlowRunRow, FlowTaskRow
from tenure.store.rows import journal_from_pg, resource_from_pg
from tenure.store.signal import Listener
from tenure.store.sqlfile import load_queries

__all__ = ["PostgresStore", "redact"]

# psycopg takes bytes for SQL that is not a literal in the code.
Q = {name: text.encode() for name, text in load_queries("postgres.sql").items()}


def redact(conninfo: str) -> str:
    """The connection URL (or key=value string) with any password replaced by ``***``.

    >>> redact("postgresql://app:s3cret@db/tenure?password=other&sslmode=require")
    'postgresql://app:***@db/tenure?password=***&sslmode=require'
    >>> redact("host=db password='a b' user=app")
    'host=db password=*** user=app'
    """
    if "://" not in conninfo:
        return re.sub(r"(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", conninfo)
    parts = urlsplit(conninfo)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _configure(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    conn.execute("SET TIME ZONE 'UTC'")


class PostgresStore(StoreCore):
    """A store in a PostgreSQL database, safe to share between threads, processes and hosts."""

    dialect = "postgres"
    _txid_positions = True

    def __init__(
        self,
        conninfo: str,
        kinds: Iterable[Kind] = (),
        *,
        clock: Clock = system_clock,
        pool_size: int = 4,
        connect_timeout: float = 5.0,
        default_sharable: bool = True,
        check_schema: bool = True,
    ) -> None:
        super().__init__(kinds, clock=clock, default_sharable=default_sharable)
        self.conninfo = conninfo
        self.target = redact(conninfo)
        self._listener: Listener | None = None
        self._listener_lock = threading.Lock()
        self._timeout = connect_timeout
        self._pool: ConnectionPool[psycopg.Connection[tuple[object, ...]]] = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=max(1, pool_size),
            kwargs={"autocommit": True, "connect_timeout": max(1, int(connect_timeout))},
            configure=_configure,
            timeout=connect_timeout,
            open=False,
            name="tenure",
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
        except PoolTimeout:
            self._pool.close()
            raise StoreUnavailable(self.target, self._why_unreachable()) from None
        if check_schema:
            try:
                self._check_schema()
            except BaseException:
                self._pool.close()
                raise

    def _why_unreachable(self) -> str:
        try:
            psycopg.connect(self.conninfo, connect_timeout=max(1, int(self._timeout))).close()
        except psycopg.Error as exc:
            return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"no connection could be opened within {self._timeout:g}s"

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
        self.operations += 1
        try:
            with self._pool.connection() as conn:
                yield conn
        except psycopg.errors.UndefinedTable:
            raise SchemaNotMigrated(self.target, self._schema_version_quietly(), latest_version(self.dialect)) from None
        except psycopg.errors.UniqueViolation as exc:
            raise AlreadyExists(exc.diag.constraint_name or "row", exc.diag.message_detail or "(taken)") from None
        except psycopg.errors.ForeignKeyViolation as exc:
            raise InvalidArgument("reference", "must name an existing row", exc.diag.message_detail) from None
        except PoolTimeout:
            raise StoreUnavailable(self.target, f"no connection free or reachable within {self._timeout:g}s") from None
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(self.target, str(exc).strip() or type(exc).__name__) from None

    # --- flow checkpoints in one round trip ----------------------------------------------------

    def save_flow(self, run_id: str, tasks: Sequence[FlowTaskRow], run: FlowRunRow | None = None) -> None:
        def text(value: Any) -> str | None:
            return None if value is None else json.dumps(value)

        params = {
            "run_id": run_id,
            "now": self._clock(),
            "tasks": [t.task for t in tasks],
            "states": [t.state for t in tasks],
            "attempts": [t.attempt for t in tasks],
            "seqs": [t.seq for t in tasks],
            "results": [text(t.result) for t in tasks],
            "failures": [text(t.failure) for t in tasks],
            "revert_failures": [text(t.revert_failure) for t in tasks],
            "inputs": [text(t.inputs) for t in tasks],
            "update_run": run is not None,
            "state": run.state if run else None,
            "overrides": Jsonb(run.overrides) if run else None,
            "retries": Jsonb(run.retries) if run else None,
            "failure": Jsonb(run.failure) if run and run.failure is not None else None,
            "pending_retry": Jsonb(run.pending_retry) if run and run.pending_retry is not None else None,
        }
        with self._connection() as conn:
            row = conn.execute(Q["save_flow"], params).fetchone()
        if run is not None and (row is None or row[1] != 1):
            raise InvalidArgument("run_id", "must name an existing flow run", run_id)

    # --- what the shared operations need -------------------------------------------------------

    _sql = Q

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
        with self._connection() as conn, conn.transaction():
            yield conn

    def _reading(self) -> contextlib.AbstractContextManager[psycopg.Connection[tuple[object, ...]]]:
        return self._connection()

    def _json_in(self, value: Any) -> Any:
        return Jsonb(value)

    def _json_out(self, value: Any) -> Any:
        return value

    def _time_in(self, value: datetime | None) -> Any:
        return value

    def _time_out(self, value: Any) -> datetime | None:
        return value  # type: ignore[no-any-return]

    def listen(self) -> Listener:
        with self._listener_lock:
            if self._listener is None:
                self._listener = Listener("tenure-listen", self._listen_once, self.signal)
            return self._listener

    def _listen_once(self, stop: threading.Event, connected: Callable[[], None]) -> None:
        timeout = max(1, int(self._timeout))
        with psycopg.connect(
            self.conninfo, autocommit=True, connect_timeout=timeout, keepalives_idle=10, keepalives_interval=5
        ) as conn:
            conn.execute(Q["listen_work"])
            conn.execute(Q["listen_changes"])
            connected()
            self.changed.notify()
            while not stop.is_set():
                for note in conn.notifies(timeout=0.25):
                    (self.changed if note.channel == "tenure_changes" else self.signal).notify()
                    if stop.is_set():
                        break

    def close(self) -> None:
        with self._listener_lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
        self._pool.close()

    # --- schema --------------------------------------------------------------------------------

    def _schema_version_quietly(self) -> int:
        try:
            return self.schema_version()
        except Exception:
            return 0

    def schema_version(self) -> int:
        with self._pool.connection() as conn:
            row = conn.execute(Q["migrations_table_exists"]).fetchone()
            if not row or not row[0]:
                return 0
            row = conn.execute(Q["schema_version"]).fetchone()
            return int(row[0]) if row else 0  # type: ignore[call-overload]

    def _check_schema(self) -> None:
        try:
            current = self.schema_version()
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(self.target, str(exc).strip()) from None
        latest = latest_version(self.dialect)
        if current < latest:
            raise SchemaNotMigrated(self.target, current, latest)
        if current > latest:
            raise SchemaTooNew(self.target, current, latest)

    def migrate(self) -> list[int]:
        applied: list[int] = []
        with self._connection() as conn:
            for migration in migrations(self.dialect):
                with conn.transaction():
                    # Concurrent migrators queue on the lock, then see what the first one applied.
                    conn.execute(Q["lock_migrations"])
                    conn.execute(Q["create_migrations_table"])
                    row = conn.execute(Q["schema_version"]).fetchone()
                    if row and int(row[0]) >= migration.version:  # type: ignore[call-overload]
                        continue
                    conn.execute(migration.sql.encode(), prepare=False)
                    conn.execute(Q["record_migration"], (migration.version, migration.name, datetime.now(UTC)))
                applied.append(migration.version)
        return applied

    # --- primitives ----------------------------------------------------------------------------

    def _insert(self, plan: CreatePlan) -> Resource | None:
        r = plan.resource
        params = {
            "id": r.id,
            "kind": r.kind,
            "state": r.state,
            "spec": Jsonb(r.spec),
            "data": Jsonb(r.data),
            "sharable": r.sharable,
            "now": r.created_at,
            "next_attempt_at": r.next_attempt_at,
            "deadline": r.deadline,
            "idempotency_key": r.idempotency_key,
            "event": CREATE_EVENT,
            "actor": plan.actor,
        }
        with self._connection() as conn:
            row = conn.execute(Q["create"], params).fetchone()
            if row and row[0]:
                return None
            found = conn.execute(Q["get_by_idempotency_key"], (r.idempotency_key,)).fetchone()
        if found is None:
            # The key's owner vanished between the two statements; resources are never deleted,
            # so this means the insert failed for another reason.
            raise StoreUnavailable(self.target, "the resource could not be inserted")
        return resource_from_pg(found)

    def _apply(self, plan: FirePlan) -> bool:
        before, after = plan.before, plan.after
        params = {
            "state": after.state,
            "version": after.version,
            "data": Jsonb(after.data) if plan.data_changed else None,
            "error": after.error,
            "now": after.updated_at,
            "next_attempt_at": after.next_attempt_at,
            "deadline": after.deadline,
            "observed_generation": after.observed_generation,
            "id": before.id,
            "expected_version": before.version,
            "source": before.state,
            "event": plan.event,
            "actor": plan.actor,
            "detail": Jsonb(plan.detail),
        }
        with self._connection() as conn:
            return conn.execute(Q["fire"], params).fetchone() is not None

    def _apply_desired(self, plan: FirePlan) -> bool:
        before, after = plan.before, plan.after
        params = {
            "version": after.version,
            "desired": after.desired_state,
            "generation": after.generation,
            "observed_generation": after.observed_generation,
            "next_attempt_at": after.next_attempt_at,
            "now": after.updated_at,
            "id": before.id,
            "expected_version": before.version,
            "source": before.state,
            "event": plan.event,
            "actor": plan.actor,
            "detail": Jsonb(plan.detail),
        }
        with self._connection() as conn:
            return conn.execute(Q["set_desired"], params).fetchone() is not None

    def _resource_out(self, row: Sequence[Any]) -> Resource:
        return resource_from_pg(tuple(row))

    def _array_in(self, values: Sequence[str]) -> Any:
        return list(values)

    def _claim_due(
        self, worker: str, pairs: Sequence[str], limit: int, now: datetime, expires: datetime
    ) -> list[tuple[Resource, bool]]:
        params = {"now": now, "pairs": list(pairs), "limit": limit, "worker": worker, "expires": expires}
        with self._connection() as conn:
            rows = conn.execute(Q["claim"], params).fetchall()
        return [(resource_from_pg(row[:21]), bool(row[21])) for row in rows]

    def _write_fenced(
        self, plan: FirePlan, token: str | None, wait: WaitPlan | None, settle: Sequence[int], result: str
    ) -> bool:
        before, after = plan.before, plan.after
        params = {
            "state": after.state,
            "version": after.version,
            "data": Jsonb(after.data) if plan.data_changed else None,
            "error": after.error,
            "now": after.updated_at,
            "next_attempt_at": after.next_attempt_at,
            "deadline": after.deadline,
            "observed_generation": after.observed_generation,
            "id": before.id,
            "expected_version": before.version,
            "source": before.state,
            "token": token,
            "event": plan.event,
            "actor": plan.actor,
            "detail": Jsonb(plan.detail),
            "wait_hash": wait.token_hash if wait else None,
            "wait_keys": Jsonb(list(wait.keys)) if wait else None,
            "wait_rules": Jsonb(dict(wait.rules)) if wait else None,
            "settle": list(settle),
            "result": result,
        }
        with self._connection() as conn:
            row = conn.execute(Q["fire_fenced_once"], params).fetchone()
        return bool(row and row[0] == 1)

    def _get_or_none(self, resource_id: str) -> Resource | None:
        with self._connection() as conn:
            row = conn.execute(Q["get_resource"], (resource_id,)).fetchone()
        return None if row is None else resource_from_pg(row)

    def _select_page(self, query: PageQuery) -> list[Resource]:
        params = {
            "kind": query.kind,
            "states": query.states,
            "desired": query.desired_state,
            "party": query.party,
            "now": query.now,
            "after": query.after,
            "limit": query.limit,
        }
        with self._connection() as conn:
            rows = conn.execute(Q["list_resources"], params).fetchall()
        return [resource_from_pg(r) for r in rows]

    def journal(self, resource_id: str, *, after_version: int = 0, limit: int = 1000) -> list[JournalEntry]:
        with self._connection() as conn:
            rows = conn.execute(Q["journal"], (resource_id, after_version, limit)).fetchall()
        return [journal_from_pg(r) for r in rows]

    def feed(self, *, after_seq: int = 0, limit: int = 1000) -> list[JournalEntry]:
        with self._connection() as conn:
            rows = conn.execute(Q["feed"], (after_seq, limit)).fetchall()
        return [journal_from_pg(r) for r in rows]
