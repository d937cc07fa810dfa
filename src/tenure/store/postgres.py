"""The shared database: PostgreSQL through psycopg 3 and a connection pool.

Many workers on many hosts may share one database. A write is a single statement (the
compare-and-swap ``UPDATE``, its journal ``INSERT`` and its side rows joined in one CTE), so it costs
one round trip and commits atomically in autocommit mode.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg.errors
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from tenure.clock import Clock, system_clock
from tenure.errors import AlreadyExists, InvalidArgument, SchemaNotMigrated, StoreUnavailable
from tenure.flow.records import FlowRunRow, FlowTaskRow
from tenure.machine import Kind
from tenure.store.assembly import DatabaseStore
from tenure.store.groupcommit import GroupCommit, Queued
from tenure.store.migrator import latest_version, migrations
from tenure.store.model import CREATE_EVENT, JournalEntry, Resource
from tenure.store.plans import Driver, PageQuery
from tenure.store.postgres_reads import PostgresReads
from tenure.store.rows import journal_from_pg, resource_from_pg, uses_json
from tenure.store.signal import Listener, WorkSignal
from tenure.store.sqlfile import load_queries
from tenure.store.tables import OwnedTables
from tenure.store.uses import UsePolicy
from tenure.store.write import Write

T = TypeVar("T")

_BEGIN, _COMMIT, _ROLLBACK = b"BEGIN", b"COMMIT", b"ROLLBACK"


class _Answer(Generic[T]):
    """A write's answer, read once every statement of its batch was sent (see ``_run_batch``)."""

    __slots__ = ("read",)

    def __init__(self, read: Callable[[], T]) -> None:
        self.read = read


def _settled(answer: object) -> object:
    """What a unit of a batch answered: its :class:`_Answer` read, or the value it gave."""
    return answer.read() if isinstance(answer, _Answer) else answer


__all__ = ["PostgresDatabase", "PostgresStore", "redact", "write_params", "write_statement"]

# psycopg takes bytes for SQL that is not a literal in the code.
Q = {name: text.encode() for name, text in load_queries("postgres.sql").items()}
#: A page's statement for each index it may walk, with the filters it does not serve spliced in.
_PAGES = {
    d: Q[f"page_{d}"].replace(b"/*residual*/", b"\n" + Q["page_residual"]).replace(b"/*columns*/", Q["page_columns"])
    for d in Driver
}


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
    # tenure's statements are short and walk indexes; compiling one with JIT (which an estimate over a
    # large table can trigger) costs more than running it.
    conn.execute("SET TIME ZONE 'UTC'; SET jit = off")


def _text(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def write_statement(
    *, opens_wait: bool = False, carries_waits: bool = False, settles: bool = False, uses: bool = False
) -> bytes:
    """The ``write`` block with the side rows a write has, and its journal row, as one statement."""
    parts = [Q["write"]]
    for wanted, name in (
        (opens_wait, "write_opens_wait"),
        (carries_waits, "write_carries_waits"),
        (settles, "write_settles"),
        (uses, "write_uses"),
    ):
        if wanted:
            parts.append(Q[name])
    return b"\n".join([*parts, Q["write_journal"]])


#: Every shape a write can take, made once: one statement per combination of side rows. A write
#: without side rows (most of them) pays for none: PostgreSQL plans and runs only what is sent.
_WRITES = {
    (wait, carry, settle, uses): write_statement(opens_wait=wait, carries_waits=carry, settles=settle, uses=uses)
    for wait in (False, True)
    for carry in (False, True)
    for settle in (False, True)
    for uses in (False, True)
}


def write_params(write: Write) -> dict[str, Any]:
    """The parameters of the ``write`` block for a planned write."""
    before, after, wait = write.before, write.after, write.wait
    params: dict[str, Any] = {
        "state": after.state,
        "version": after.version,
        "data": Jsonb(after.data) if write.data_changed else None,
        "error": after.error,
        "attempts": after.attempts,
        "entered_at": after.entered_at,
        "next_attempt_at": after.next_attempt_at,
        "deadline": after.deadline,
        "desired_state": after.desired_state,
        "generation": after.generation,
        "observed_generation": after.observed_generation,
        "now": after.updated_at,
        "keeps_claim": write.keeps_claim,
        "claim_token": after.claim_token,
        "claimed_by": after.claimed_by,
        "claim_expires_at": after.claim_expires_at,
        "id": before.id,
        "expected_version": before.version,
        "created_at": before.created_at,
        "source": before.state,
        "token": write.token,
        "event": write.event,
        "actor": write.actor,
        "detail": Jsonb(write.detail),
        "wait_hash": wait.token_hash if wait else None,
        "wait_keys": Jsonb(list(wait.keys)) if wait else None,
        "wait_rules": Jsonb(dict(wait.rules)) if wait else None,
        "carries_waits": write.carries_waits,
        "settle": list(write.settle),
        "result": write.settle_result,
        "in_use_by": Jsonb(uses_json(after.in_use_by)) if write.uses_changed else None,
        "forced": after.forced_generation if write.forces else None,
    }
    if write.uses_changed:
        kept = write.uses_kept
        params["uses_dropped"] = list(write.uses_dropped)
        params["kept_party"] = [party for party, _ in kept]
        params["kept_client"] = [use.client for _, use in kept]
        params["kept_registered"] = [use.registered_at for _, use in kept]
        params["kept_expires"] = [use.expires_at for _, use in kept]
    return params


class PostgresDatabase:
    """The PostgreSQL dialect: a connection pool, LISTEN/NOTIFY, and the one write function."""

    dialect = "postgres"
    sql: Any = Q
    txid_positions = True

    def __init__(self, conninfo: str, *, pool_size: int = 4, connect_timeout: float = 5.0) -> None:
        self.conninfo = conninfo
        self.target = redact(conninfo)
        self._pool_size = pool_size
        self.operations = 0
        self._listener: Listener | None = None
        self._listener_lock = threading.Lock()
        self._timeout = connect_timeout
        #: The one write and the insert go through here: writes of many threads share a commit.
        self.group: GroupCommit[psycopg.Connection[tuple[object, ...]]] = GroupCommit(self._run_batch)
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

    def _why_unreachable(self) -> str:
        try:
            psycopg.connect(self.conninfo, connect_timeout=max(1, int(self._timeout))).close()
        except psycopg.Error as exc:
            return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"no connection could be opened within {self._timeout:g}s"

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
        self.operations += 1
        with self._translated(), self._pool.connection() as conn:
            yield conn

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
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

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
        with self._connection() as conn, conn.transaction():
            yield conn

    def reading(self) -> contextlib.AbstractContextManager[psycopg.Connection[tuple[object, ...]]]:
        return self._connection()

    # --- values --------------------------------------------------------------------------------

    def json_in(self, value: Any) -> Any:
        return Jsonb(value)

    def json_out(self, value: Any) -> Any:
        return value

    def time_in(self, value: datetime | None) -> Any:
        return value

    def time_out(self, value: Any) -> datetime | None:
        return value  # type: ignore[no-any-return]

    def array_in(self, values: Sequence[str]) -> Any:
        return list(values)

    def resource_out(self, row: Sequence[Any]) -> Resource:
        return resource_from_pg(tuple(row))

    # --- the one write -------------------------------------------------------------------------

    def batched(self, unit: Callable[[psycopg.Connection[tuple[object, ...]]], T], *, key: str = "") -> T:
        with self._translated():
            answer: T = self.group.submit(unit, key=key)
        return answer

    def commit(self, write: Write) -> bool:
        statement = _WRITES[write.wait is not None, write.carries_waits, bool(write.settle), write.uses_changed]
        params = write_params(write)

        def swap(conn: psycopg.Connection[tuple[object, ...]]) -> _Answer[bool]:
            cursor = conn.execute(statement, params)
            return _Answer(lambda: cursor.fetchone() is not None)

        with self._translated():
            return bool(self.group.submit(swap, key=write.before.id))

    def insert(self, resource: Resource, actor: str | None) -> Resource | None:
        r = resource
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
            "kind_version": r.kind_version,
            "event": CREATE_EVENT,
            "actor": actor,
        }

        def insert(conn: psycopg.Connection[tuple[object, ...]]) -> _Answer[bool]:
            cursor = conn.execute(Q["create"], params)

            def inserted() -> bool:
                row = cursor.fetchone()
                return bool(row and row[0])

            return _Answer(inserted)

        with self._translated():
            if self.group.submit(insert, key=r.id):
                return None
        with self._connection() as conn:
            found = conn.execute(Q["get_by_idempotency_key"], (r.idempotency_key,)).fetchone()
        if found is None:
            # The key's owner vanished between the two statements; resources are never deleted,
            # so this means the insert failed for another reason.
            raise StoreUnavailable(self.target, "the resource could not be inserted")
        return resource_from_pg(found)

    def _run_batch(self, batch: Sequence[Queued[psycopg.Connection[tuple[object, ...]]]]) -> None:
        """One transaction for every write queued (see tenure.store.groupcommit).

        Alone, a write is its own statement in autocommit, as ever. Together they run in one
        transaction in the order of their resources (two batches lock rows in the same order, so they
        do not deadlock), sent in a pipeline: BEGIN, every write and COMMIT go out at once and their
        answers come back together, one round trip for the batch instead of one per statement (a
        write answers with an :class:`_Answer`, read once they are all back and committed). Should
        one fail, the rest of the pipeline is skipped, the transaction is rolled back and each write
        is run alone, so that it fails alone.
        """
        self.operations += 1
        with self._pool.connection() as conn:
            if len(batch) == 1:
                batch[0].result = _settled(batch[0].unit(conn))
                return
            ordered = sorted(batch, key=lambda item: item.key)
            try:
                # BEGIN and COMMIT are statements of the pipeline: conn.transaction() would sync on
                # entering and on leaving, a round trip each.
                with conn.pipeline():
                    conn.execute(_BEGIN)
                    answers = [item.unit(conn) for item in ordered]
                    conn.execute(_COMMIT)
            except psycopg.OperationalError:
                raise  # the connection or the server: every write of the batch shares the failure
            except psycopg.Error:
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    conn.execute(_ROLLBACK)  # the failed statement left the transaction aborted
            else:
                for item, answer in zip(ordered, answers, strict=True):
                    item.result = _settled(answer)
                return
            for item in ordered:
                item.result = None
                try:
                    item.result = _settled(item.unit(conn))
                except psycopg.OperationalError:
                    raise
                except psycopg.Error as exc:
                    item.error = exc

    # --- reads and statements of this dialect --------------------------------------------------

    def async_reads(self) -> PostgresReads:
        """Reads for an event loop, through asynchronous connections of their own."""
        return PostgresReads(self.conninfo, target=self.target, pool_size=self._pool_size, timeout=self._timeout)

    def find(self, resource_id: str) -> Resource | None:
        with self._connection() as conn:
            row = conn.execute(Q["get_resource"], (resource_id,)).fetchone()
        return None if row is None else resource_from_pg(row)

    def select_page(self, query: PageQuery) -> list[Resource]:
        params = {
            "kind": query.residual_kind,
            "states": query.residual_states,
            "desired": query.residual_desired,
            "key": query.key,
            "data_key": None if query.data is None else query.data[0],
            "data_value": None if query.data is None else query.data[1],
            "now": query.now,
            "after": query.after,
            "limit": query.limit,
            "lane_kinds": [k for k, _ in query.lanes],
            "lane_states": [s for _, s in query.lanes],
        }
        with self._connection() as conn:
            # Never prepared: a page's best plan depends on its values (a popular party or a rare one, the
            # first page or the tenth), and a prepared statement may settle on one generic plan for all.
            rows = conn.execute(_PAGES[query.driver], params, prepare=False).fetchall()
        return [resource_from_pg(r) for r in rows]

    def journal(self, resource_id: str, after_version: int, limit: int) -> list[JournalEntry]:
        with self._connection() as conn:
            rows = conn.execute(Q["journal"], (resource_id, after_version, limit)).fetchall()
        return [journal_from_pg(r) for r in rows]

    def feed(self, after_seq: int, limit: int) -> list[JournalEntry]:
        with self._connection() as conn:
            rows = conn.execute(Q["feed"], (after_seq, limit)).fetchall()
        return [journal_from_pg(r) for r in rows]

    def claim_due(
        self, worker: str, pairs: Sequence[str], limit: int, now: datetime, expires: datetime
    ) -> list[tuple[Resource, bool]]:
        params = {"now": now, "pairs": list(pairs), "limit": limit, "worker": worker, "expires": expires}
        with self._connection() as conn:
            rows = conn.execute(Q["claim"], params).fetchall()
        return [(resource_from_pg(row[:24]), bool(row[24])) for row in rows]

    def save_flow(self, run_id: str, tasks: Sequence[FlowTaskRow], run: FlowRunRow | None, now: datetime) -> bool:
        # Every checkpoint of one engine step in one statement: one round trip, one commit.
        params = {
            "run_id": run_id,
            "now": now,
            "tasks": [t.task for t in tasks],
            "states": [t.state for t in tasks],
            "attempts": [t.attempt for t in tasks],
            "seqs": [t.seq for t in tasks],
            "results": [_text(t.result) for t in tasks],
            "failures": [_text(t.failure) for t in tasks],
            "revert_failures": [_text(t.revert_failure) for t in tasks],
            "inputs": [_text(t.inputs) for t in tasks],
            "update_run": run is not None,
            "state": run.state if run else None,
            "overrides": Jsonb(run.overrides) if run else None,
            "retries": Jsonb(run.retries) if run else None,
            "failure": Jsonb(run.failure) if run and run.failure is not None else None,
            "pending_retry": Jsonb(run.pending_retry) if run and run.pending_retry is not None else None,
        }
        with self._connection() as conn:
            row = conn.execute(Q["save_flow"], params).fetchone()
        return run is None or bool(row and row[1] == 1)

    # --- schema and lifecycle ------------------------------------------------------------------

    def _schema_version_quietly(self) -> int:
        try:
            return self.schema_version()
        except Exception:
            return 0

    def schema_version(self) -> int:
        try:
            with self._pool.connection() as conn:
                row = conn.execute(Q["migrations_table_exists"]).fetchone()
                if not row or not row[0]:
                    return 0
                row = conn.execute(Q["schema_version"]).fetchone()
                return int(row[0]) if row else 0  # type: ignore[call-overload]
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(self.target, str(exc).strip()) from None

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

    def owned_version(self, owner: str) -> int:
        with self._connection() as conn:
            row = conn.execute(Q["owned_migrations_table_exists"]).fetchone()
            if not row or not row[0]:
                return 0
            row = conn.execute(Q["owned_version"], (owner,)).fetchone()
        return int(row[0]) if row else 0  # type: ignore[call-overload]

    def migrate_owned(self, tables: OwnedTables) -> list[int]:
        applied: list[int] = []
        with self._connection() as conn:
            for migration in tables.migrations(self.dialect):
                with conn.transaction():
                    # Concurrent migrators queue on the lock, then see what the first one applied.
                    conn.execute(Q["lock_migrations"])
                    conn.execute(Q["create_owned_migrations_table"])
                    row = conn.execute(Q["owned_version"], (tables.owner,)).fetchone()
                    if row and int(row[0]) >= migration.version:  # type: ignore[call-overload]
                        continue
                    conn.execute(migration.sql.encode(), prepare=False)
                    conn.execute(
                        Q["record_owned_migration"],
                        (tables.owner, migration.version, migration.name, datetime.now(UTC)),
                    )
                applied.append(migration.version)
        return applied

    def listen(self, signal: WorkSignal, changed: WorkSignal) -> Listener:
        timeout = max(1, int(self._timeout))

        def listen_once(stop: threading.Event, connected: Callable[[], None]) -> None:
            with psycopg.connect(
                self.conninfo, autocommit=True, connect_timeout=timeout, keepalives_idle=10, keepalives_interval=5
            ) as conn:
                conn.execute(Q["listen_work"])
                conn.execute(Q["listen_changes"])
                connected()
                changed.notify()
                while not stop.is_set():
                    for note in conn.notifies(timeout=0.25):
                        (changed if note.channel == "tenure_changes" else signal).notify()
                        if stop.is_set():
                            break

        with self._listener_lock:
            if self._listener is None:
                self._listener = Listener("tenure-listen", listen_once, signal)
            return self._listener

    def close(self) -> None:
        with self._listener_lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
        self._pool.close()


class PostgresStore(DatabaseStore):
    """A store in a PostgreSQL database, safe to share between threads, processes and hosts."""

    def __init__(
        self,
        conninfo: str,
        kinds: Iterable[Kind] = (),
        *,
        clock: Clock = system_clock,
        pool_size: int = 4,
        connect_timeout: float = 5.0,
        default_sharable: bool = True,
        uses: UsePolicy | None = None,
        tables: Iterable[OwnedTables] = (),
        check_schema: bool = True,
    ) -> None:
        db = PostgresDatabase(conninfo, pool_size=pool_size, connect_timeout=connect_timeout)
        self.conninfo = conninfo
        super().__init__(
            db,
            kinds,
            clock=clock,
            default_sharable=default_sharable,
            uses=uses,
            tables=tables,
            check_schema=check_schema,
        )
