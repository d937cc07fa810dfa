"""Fill a store with a realistic history of ``transfer`` resources, fast, with exactly the rows tenure writes.

How: tenure's own engine first takes one *template* transfer (version 1) per kind of resource through a
real lifecycle, in a scratch store of its own next to the one being loaded: finished ones (synchronous and
asynchronous provisioning, completed, terminated, failed), due ones (in a work state with
``next_attempt_at`` passed), waiting ones (an open wait with a deadline), resting ones (``started``, some
used by a party, ``suspended``). Every row those lifecycles left (the resource, its journal, its waits,
its callbacks in the inbox, its interests) is read back, and the load copies it in bulk SQL
(``INSERT ... SELECT`` over a table of copies, a chunk of copies per transaction) with only what must
differ between copies substituted: the resource id (wherever it appears, data included), the wait
tokens' hashes, the callbacks' sequence numbers (and the journal entries naming them), the asset, the
party, and every time, shifted so that each copy lived at its own moment (ids are time-ordered, as
``new_id`` makes them, and the journal is written in time order, as a store that grew over months has
it). Journal versions, events and states are those of real transitions, and JSON is stored as tenure
stores it, because it is what tenure stored. A table that tenure started writing for these resources and
the load does not know about stops the load. Last, the counts per state are recounted from the resources
and their position set to the end of the journal, as migration 9 starts them, so that the first read of
the counts does not fold the whole loaded journal.

Afterwards :func:`check` reads the load back through tenure's own store (``get``, ``journal``, ``list``,
``backlog``, ``claim``, ``pending_waits``, ``callbacks``) and raises :class:`LoadMismatch` if anything
disagrees.

The mix (fractions of N): 89% finished, 1% due, 1% waiting, 9% resting; 2% of all resources are used by a
party. Times: finished resources were created over the last 180 days, resting ones over the last 30 (used
ones in the last 12 hours, so that their uses, one day long, are live), due ones in the last hour, waiting
ones in the last 30 minutes (their deadline is two hours, so none passes during a run).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import secrets
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import psycopg

from tenure.engine import Worker
from tenure.engine.provision import MemoryProvisioner
from tenure.errors import Conflict
from tenure.kinds.transfer import transfer_kind, transfer_steps
from tenure.machine import Role
from tenure.store import open_store
from tenure.store.model import JournalEntry, Resource
from tenure.store.protocol import EngineStore

__all__ = [
    "FEW_STATE",
    "KIND",
    "MANY_STATE",
    "POPULAR_PARTY",
    "RARE_PARTY",
    "Driven",
    "LifecycleFailed",
    "Load",
    "LoadMismatch",
    "analyze",
    "check",
    "check_backlog",
    "drive_lifecycles",
    "load",
    "shifted_clock",
]

KIND = "transfer"
#: How long the templates' wait states wait (the stored deadline; the engine reads it from the row).
REQUEST_DEADLINE = timedelta(hours=2)
#: The states and parties the scale benchmark lists: a state with many resources and one with few.
MANY_STATE = "started"
FEW_STATE = "deprovisioning_failed"
#: How many resources end in FEW_STATE, at any size (fewer than a page).
FEW_COUNT = 25
_PARTY_PREFIX = "tag:bench.example,2024:"
POPULAR_PARTY = _PARTY_PREFIX + "popular"
RARE_PARTY = _PARTY_PREFIX + "rare"
#: How many resources the rare party uses, at any size.
RARE_COUNT = 5
#: The worker name the template lifecycles are journaled under (copied into every copy's history).
WORKER_NAME = "worker-a:4242:5f1e"
DAY = 86_400.0
#: The smallest load: enough resting resources for a full first page of MANY_STATE.
MIN_SIZE = 1000

SYNC_SPEC: dict[str, Any] = {"resources": [{"id": "destination", "type": "memory"}], "dataplane": "memory"}
ASYNC_SPEC: dict[str, Any] = {"resources": [{"id": "bucket", "type": "http"}], "dataplane": "http"}


class LoadMismatch(AssertionError):
    """The store does not hold what the load meant to write (or tenure reads it back differently)."""


class LifecycleFailed(RuntimeError):
    """A driven lifecycle ended other than in ``deprovisioned``, or stopped moving."""


def shifted_clock(seconds: float) -> Callable[[], datetime]:
    """A clock ``seconds`` behind the machine's.

    The benchmarks run the engine on it against a loaded store, so that the loaded backlog (due
    resources, deadlines, expiring uses, all stamped on the machine's clock) is not due yet for it:
    what they time is new lifecycles next to a big history, not the draining of 1% of it.
    """
    offset = timedelta(seconds=seconds)

    def clock() -> datetime:
        return datetime.now(UTC) - offset

    return clock


# --- the templates: real lifecycles, in a store of their own -------------------------------------


class _Builder:
    """Takes transfers through their lifecycles with tenure's engine, one at a time."""

    def __init__(self, url: str, asset: str) -> None:
        self.kind = transfer_kind(request_deadline=REQUEST_DEADLINE)
        self.store = open_store(url, [self.kind], check_schema=False)
        self.store.migrate()
        self.http = MemoryProvisioner(asynchronous=True)
        steps = transfer_steps({"memory": MemoryProvisioner(), "http": self.http}, kind=self.kind)
        self.worker = Worker(self.store, steps, name=WORKER_NAME)
        self.asset = asset
        #: The tokens of the requests answered (or passed over) already.
        self.answered: set[str] = set()

    def create(self, spec: dict[str, Any]) -> str:
        return self.store.create(KIND, {"asset": self.asset, **spec}).id

    def run(self) -> None:
        self.worker.run_until_idle()

    def state(self, rid: str) -> str:
        return self.store.get(rid).state

    def answer(self, rid: str, status: str, *, apply_only: bool = False) -> None:
        """The async provisioner's callback to the resource's pending request, then the engine's pass."""
        mine = [r for r in self.http.requests if r.resource_id == rid and r.token not in self.answered]
        if not mine:
            raise LoadMismatch(f"template {rid} in {self.state(rid)} has no pending request to answer")
        request = mine[-1]
        self.answered.update(r.token for r in mine)
        data = {"url": "https://objects.example/transfers/bucket"} if status == "done" else None
        error = "quota exceeded at the provider" if status == "failed" else None
        receipt = self.store.deliver(rid, request.token, request.key, status, data=data, error=error)
        if not receipt.accepted:
            raise LoadMismatch(f"template {rid}: callback refused: {receipt}")
        if apply_only:
            self.worker.apply_callbacks()
        else:
            self.run()

    def to(self, rid: str, state: str) -> None:
        """Run (answering asynchronous requests 'done') until the resource is in ``state``."""
        for _ in range(20):
            now = self.state(rid)
            if now == state:
                return
            if self.kind.state(now).role is Role.WAIT:
                self.answer(rid, "done")
            else:
                self.run()
        raise LoadMismatch(f"template {rid} did not reach {state} (it is in {self.state(rid)})")

    def fire(self, rid: str, event: str) -> None:
        self.store.fire(rid, event)

    def close(self) -> None:
        self.store.close()


@dataclass(frozen=True)
class Profile:
    """One kind of resource in the mix: how its template is made, how many, and when copies were made."""

    key: str
    share: float
    #: Ages of the copies, in seconds before the load: (youngest, oldest).
    ages: tuple[float, float]
    build: Callable[[_Builder], str]
    #: A count that does not grow with N (instead of ``share``).
    fixed: int | None = None
    party: bool = False


def _finished_sync(b: _Builder) -> str:
    rid = b.create(SYNC_SPEC)
    b.to(rid, "started")
    b.fire(rid, "complete")
    b.to(rid, "deprovisioned")
    return rid


def _finished_async(b: _Builder) -> str:
    rid = b.create(ASYNC_SPEC)
    b.to(rid, "started")
    b.fire(rid, "complete")
    b.to(rid, "deprovisioned")
    return rid


def _terminated(b: _Builder) -> str:
    rid = b.create(SYNC_SPEC)
    b.to(rid, "started")
    b.fire(rid, "terminate")
    b.to(rid, "deprovisioned")
    return rid


def _provision_failed(b: _Builder) -> str:
    rid = b.create(ASYNC_SPEC)
    b.to(rid, "provisioning_requested")
    b.answer(rid, "failed")
    b.to(rid, "deprovisioned")
    return rid


def _deprovision_failed(b: _Builder) -> str:
    rid = b.create(ASYNC_SPEC)
    b.to(rid, "started")
    b.fire(rid, "complete")
    b.to(rid, "deprovisioning_requested")
    b.answer(rid, "failed")
    if b.state(rid) != FEW_STATE:
        raise LoadMismatch(f"template {rid} ended in {b.state(rid)}, not {FEW_STATE}")
    return rid


def _waiting(state: str, *, complete: bool = False) -> Callable[[_Builder], str]:
    def build(b: _Builder) -> str:
        rid = b.create(ASYNC_SPEC)
        if complete:
            b.to(rid, "started")
            b.fire(rid, "complete")
        b.to(rid, state)
        return rid

    return build


def _started(b: _Builder) -> str:
    rid = b.create(SYNC_SPEC)
    b.to(rid, "started")
    return rid


def _suspended(b: _Builder) -> str:
    rid = _started(b)
    b.fire(rid, "suspend")
    b.to(rid, "suspended")
    return rid


# The three due templates are made last (see _build_templates): no engine pass may run after them.
def _due_initial(b: _Builder) -> str:
    return b.create(SYNC_SPEC)


def _due_completing(b: _Builder) -> str:
    rid = b.create(SYNC_SPEC)
    b.to(rid, "started")
    return rid  # completed in _build_templates, once every engine pass is done


def _due_retry(b: _Builder) -> str:
    rid = b.create(ASYNC_SPEC)
    b.to(rid, "provisioning_requested")
    return rid  # answered 'retry' in _build_templates, once every engine pass is done


_MONTH, _HALF_YEAR = 30 * DAY, 180 * DAY
PROFILES: tuple[Profile, ...] = (
    # finished: 89%
    Profile("finished_sync", 0.545, (3600, _HALF_YEAR), _finished_sync),
    Profile("finished_async", 0.25, (3600, _HALF_YEAR), _finished_async),
    Profile("terminated", 0.08, (3600, _HALF_YEAR), _terminated),
    Profile("provision_failed", 0.015, (3600, _HALF_YEAR), _provision_failed),
    Profile("deprovision_failed", 0.0, (3600, _HALF_YEAR), _deprovision_failed, fixed=FEW_COUNT),
    # waiting: 1%
    Profile("wait_provisioning", 0.005, (0, 1800), _waiting("provisioning_requested")),
    Profile("wait_startup", 0.003, (0, 1800), _waiting("startup_requested")),
    Profile("wait_deprovisioning", 0.002, (0, 1800), _waiting("deprovisioning_requested", complete=True)),
    # resting: 9%
    Profile("started", 0.06, (3600, _MONTH), _started),
    Profile("started_used", 0.02, (300, 12 * 3600), _started, party=True),
    Profile("suspended", 0.01, (3600, _MONTH), _suspended),
    # due: 1%
    Profile("due_completing", 0.003, (0, 3600), _due_completing),
    Profile("due_retry", 0.003, (0, 3600), _due_retry),
    Profile("due_initial", 0.004, (0, 3600), _due_initial),
)


@dataclass(frozen=True)
class TemplateView:
    """A template lifecycle's end as tenure reads it: what every copy must read back as (ids and times aside)."""

    resource: Resource
    journal: list[JournalEntry]


def _build_templates(url: str, asset: str, party: str) -> dict[str, TemplateView]:
    builder = _Builder(url, asset)
    try:
        made = {p.key: p.build(builder) for p in PROFILES}
        for p in PROFILES:
            if p.party:
                builder.store.use(made[p.key], party, ttl=timedelta(days=1))
        # Now that no engine pass runs any more: the client completes one, a callback asks another to retry.
        builder.fire(made["due_completing"], "complete")
        builder.answer(made["due_retry"], "retry", apply_only=True)
        expected = {
            "due_completing": "completing",
            "due_retry": "provisioning",
            "due_initial": "initial",
        }
        for key, state in expected.items():
            if builder.state(made[key]) != state:
                raise LoadMismatch(f"template {key} is in {builder.state(made[key])}, not {state}")
        return {key: TemplateView(builder.store.get(rid), builder.store.journal(rid)) for key, rid in made.items()}
    finally:
        builder.close()


@contextmanager
def _template_store(url: str) -> Iterator[str]:
    """An empty store of the same kind next to ``url`` for the template lifecycles, removed afterwards.

    The templates live apart so that the loaded store's journal is in time order from its first entry,
    as a store that grew over months has it (readers that walk the journal in order rely on that).
    """
    if url.startswith("sqlite:"):
        path = url.split("sqlite:///", 1)[1].split("?", 1)[0]
        folder = tempfile.mkdtemp(prefix="tenure-load-templates-", dir=os.path.dirname(os.path.abspath(path)))
        try:
            yield f"sqlite:///{os.path.join(folder, 'templates.db')}"
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT current_database()").fetchone()
        assert row is not None
        name = f"{str(row[0])[:40]}_tmpl_{secrets.token_hex(3)}"
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    head, _, query = url.partition("?")
    try:
        yield f"{head.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


# --- the dialects ------------------------------------------------------------------------------

_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?\+00:00")
_CALLBACKS = re.compile(r'"callbacks": \[([0-9, ]*)\]')
_NUMBER = re.compile(r"\d+")


@dataclass(frozen=True)
class Column:
    name: str
    #: time, json, text or other (PostgreSQL: its declared type says; SQLite: the value does)
    role: str
    #: The declared type (PostgreSQL: for casts).
    type: str


class Dialect(Protocol):
    name: str

    def columns(self, table: str) -> list[Column]: ...

    def resource_tables(self) -> list[str]: ...

    def rows(self, table: str, column: str, ids: Sequence[str]) -> list[dict[str, Any]]: ...

    def execute(self, sql: str) -> None: ...

    def scalar(self, sql: str) -> Any: ...

    def put_copies(self, rows: Sequence[tuple[Any, ...]]) -> None: ...

    def transaction(self) -> AbstractContextManager[None]: ...

    def literal(self, value: Any, column: Column, subst: _Subst) -> str: ...

    def insert_head(self, table: str, names: Sequence[str], explicit_identity: bool) -> str: ...

    def finish(self, tables: Sequence[str]) -> None: ...

    def close(self) -> None: ...


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class _Subst:
    """What differs between a template's rows and a copy's: needles in text, and the SQL that replaces them."""

    def __init__(
        self,
        dialect: str,
        template_id: str,
        *,
        asset: str,
        party: str,
        hashes: Sequence[str],
        inbox_seqs: Sequence[int],
    ) -> None:
        self.dialect = dialect
        self.needles: dict[str, str] = {template_id: "c.id", asset: "c.asset", party: "c.party"}
        for h in hashes:
            self.needles[h] = self.hash_expr(h)
        self.seq_index = {seq: j for j, seq in enumerate(inbox_seqs)}
        self.pattern = re.compile("|".join(re.escape(n) for n in sorted(self.needles, key=len, reverse=True)))

    def hash_expr(self, token_hash: str) -> str:
        """A copy's token hash: the template's first 48 hex digits, then the copy's number in 16."""
        head = _quote(token_hash[:48])
        if self.dialect == "postgres":
            return f"({head} || lpad(to_hex(c.n), 16, '0'))"
        return f"({head} || printf('%016x', c.n))"

    def shifted(self, iso: str) -> str:
        """An ISO time (tenure's fixed-width text) moved by the copy's shift, as the same text."""
        whole, tail = iso[:19], iso[19:]
        if self.dialect == "postgres":
            moved = f"(({_quote(whole + '+00:00')}::timestamptz + c.shift_s * interval '1 second') AT TIME ZONE 'UTC')"
            return f"(to_char({moved}, 'YYYY-MM-DD\"T\"HH24:MI:SS') || {_quote(tail)})"
        epoch = int(datetime.fromisoformat(whole + "+00:00").timestamp())
        return f"(strftime('%Y-%m-%dT%H:%M:%S', {epoch} + c.shift_s, 'unixepoch') || {_quote(tail)})"

    def text(self, value: str, *, callbacks: bool) -> str:
        """SQL for ``value`` with every needle replaced (a plain literal when there is none)."""
        spans: list[tuple[int, int, str]] = []
        for m in self.pattern.finditer(value):
            spans.append((m.start(), m.end(), self.needles[m.group(0)]))
        for m in _ISO.finditer(value):
            spans.append((m.start(), m.end(), self.shifted(m.group(0))))
        if callbacks:
            for m in _CALLBACKS.finditer(value):
                for num in _NUMBER.finditer(m.group(1)):
                    seq = int(num.group(0))
                    if seq not in self.seq_index:
                        raise LoadMismatch(f"a journal entry names callback {seq}, not one of its resource's")
                    start = m.start(1) + num.start()
                    spans.append((start, start + len(num.group(0)), self.seq_expr(self.seq_index[seq])))
        if not spans:
            return _quote(value)
        spans.sort()
        parts: list[str] = []
        at = 0
        for start, end, expr in spans:
            if start < at:
                raise LoadMismatch(f"overlapping substitutions in a template value: {value[:200]!r}")
            if start > at:
                parts.append(_quote(value[at:start]))
            parts.append(expr)
            at = end
        if at < len(value):
            parts.append(_quote(value[at:]))
        return "(" + " || ".join(parts) + ")"

    def seq_expr(self, j: int) -> str:
        if self.dialect == "postgres":
            return f"(c.ib + {j})::text"
        return f"CAST(c.ib + {j} AS TEXT)"


class _Postgres:
    name = "postgres"

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute("SET TIME ZONE 'UTC'")

    def columns(self, table: str) -> list[Column]:
        rows = self.conn.execute(
            """SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attidentity <> '' OR a.attgenerated <> ''
               FROM pg_attribute a WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
               ORDER BY a.attnum""",
            (table,),
        ).fetchall()
        out = []
        for name, typ, identity in rows:
            if typ == "xid8":
                role = "skip"  # the writing transaction (its default)
            elif identity:
                role = "identity"
            elif typ.startswith("timestamp"):
                role = "time"
            elif typ in ("jsonb", "json"):
                role = "json"
            elif typ == "text" or typ.startswith("character"):
                role = "text"
            else:
                role = "other"
            out.append(Column(str(name), role, str(typ)))
        return out

    def resource_tables(self) -> list[str]:
        rows = self.conn.execute(
            """SELECT table_name FROM information_schema.columns
               WHERE table_schema = current_schema() AND column_name = 'resource_id' ORDER BY table_name"""
        ).fetchall()
        return [str(r[0]) for r in rows]

    def rows(self, table: str, column: str, ids: Sequence[str]) -> list[dict[str, Any]]:
        cols = self.columns(table)
        order = "seq" if any(c.name == "seq" for c in cols) else column
        select = ", ".join(f'"{c.name}"::text' for c in cols)
        cur = self.conn.execute(
            f'SELECT {select} FROM "{table}" AS t WHERE t."{column}" = ANY(%s) ORDER BY t."{order}"'.encode(),
            (list(ids),),
        )
        return [dict(zip([c.name for c in cols], row, strict=True)) for row in cur.fetchall()]

    def execute(self, sql: str) -> None:
        self.conn.execute(sql.encode())

    def scalar(self, sql: str) -> Any:
        row = self.conn.execute(sql.encode()).fetchone()
        return None if row is None else row[0]

    def put_copies(self, rows: Sequence[tuple[Any, ...]]) -> None:
        self.conn.execute(
            "CREATE TEMP TABLE bench_copies (n bigint PRIMARY KEY, tmpl text NOT NULL, id text NOT NULL, "
            "shift_s bigint NOT NULL, party text NOT NULL, ib bigint NOT NULL, asset text NOT NULL)"
        )
        with self.conn.cursor() as cur, cur.copy("COPY bench_copies FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        self.conn.execute("CREATE INDEX ON bench_copies (tmpl, n)")
        self.conn.execute("ANALYZE bench_copies")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.conn.transaction():
            yield

    def literal(self, value: Any, column: Column, subst: _Subst) -> str:
        if value is None:
            return f"NULL::{column.type}"
        if column.role == "time":
            return f"({_quote(value)}::timestamptz + c.shift_s * interval '1 second')"
        if column.role == "json":
            return f"{subst.text(value, callbacks=True)}::{column.type}"
        if column.role in ("text", "identity"):
            return f"{subst.text(value, callbacks=False)}::{column.type}"
        return f"{_quote(value)}::{column.type}"

    def insert_head(self, table: str, names: Sequence[str], explicit_identity: bool) -> str:
        cols = ", ".join(f'"{n}"' for n in names)
        return f'INSERT INTO "{table}" ({cols})' + (" OVERRIDING SYSTEM VALUE" if explicit_identity else "")

    def finish(self, tables: Sequence[str]) -> None:
        for table in tables:
            for c in self.columns(table):
                if c.role == "identity":
                    self.conn.execute(
                        f"SELECT setval(pg_get_serial_sequence('\"{table}\"', '{c.name}'), "
                        f'(SELECT max("{c.name}") FROM "{table}"))'.encode()
                    )
        self.conn.execute("DROP TABLE IF EXISTS bench_copies")
        # The counts per state as migration 9 makes them, so that the first read folds nothing.
        with self.conn.transaction():
            self.conn.execute("LOCK TABLE resources IN SHARE MODE")
            self.conn.execute("DELETE FROM state_counts")
            self.conn.execute(
                "INSERT INTO state_counts (kind, state, n) SELECT kind, state, count(*) FROM resources GROUP BY 1, 2"
            )
            self.conn.execute(
                "UPDATE state_counts_position SET (txid, seq) = (SELECT txid, seq FROM journal ORDER BY txid DESC, "
                "seq DESC LIMIT 1) WHERE EXISTS (SELECT FROM journal)"
            )

    def close(self) -> None:
        self.conn.close()


class _SQLite:
    name = "sqlite"

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, timeout=60.0, isolation_level=None)
        # This connection's own settings (none of them is stored in the file, and no statistics are made).
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.execute("PRAGMA synchronous=OFF")
        self.conn.execute("PRAGMA cache_size=-262144")
        self.conn.execute("PRAGMA temp_store=MEMORY")

    def columns(self, table: str) -> list[Column]:
        rows = self.conn.execute(f'PRAGMA table_info("{table}")').fetchall()
        sql = str(self.conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0])
        out = []
        for _cid, name, typ, _notnull, _default, pk in rows:
            autoinc = pk and str(typ).upper() == "INTEGER" and "AUTOINCREMENT" in sql.upper()
            out.append(Column(str(name), "identity" if autoinc else "value", str(typ)))
        return out

    def resource_tables(self) -> list[str]:
        names = [
            str(r[0])
            for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall()
        ]
        return [t for t in names if any(c.name == "resource_id" for c in self.columns(t))]

    def rows(self, table: str, column: str, ids: Sequence[str]) -> list[dict[str, Any]]:
        cols = self.columns(table)
        order = "seq" if any(c.name == "seq" for c in cols) else column
        marks = ", ".join("?" for _ in ids)
        cur = self.conn.execute(f'SELECT * FROM "{table}" WHERE "{column}" IN ({marks}) ORDER BY "{order}"', ids)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def execute(self, sql: str) -> None:
        self.conn.execute(sql)

    def scalar(self, sql: str) -> Any:
        row = self.conn.execute(sql).fetchone()
        return None if row is None else row[0]

    def put_copies(self, rows: Sequence[tuple[Any, ...]]) -> None:
        self.conn.execute(
            "CREATE TEMP TABLE bench_copies (n INTEGER PRIMARY KEY, tmpl TEXT NOT NULL, id TEXT NOT NULL, "
            "shift_s INTEGER NOT NULL, party TEXT NOT NULL, ib INTEGER NOT NULL, asset TEXT NOT NULL)"
        )
        self.conn.execute("BEGIN")
        self.conn.executemany("INSERT INTO bench_copies VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        self.conn.execute("CREATE INDEX temp.bench_copies_tmpl ON bench_copies (tmpl, n)")
        self.conn.execute("COMMIT")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def literal(self, value: Any, column: Column, subst: _Subst) -> str:
        if value is None:
            return "NULL"
        if isinstance(value, int | float):
            return repr(value)
        if isinstance(value, bytes):
            return "X'" + value.hex() + "'"
        text = str(value)
        if _ISO.fullmatch(text):
            return subst.shifted(text)
        return subst.text(text, callbacks=True)

    def insert_head(self, table: str, names: Sequence[str], explicit_identity: bool) -> str:
        cols = ", ".join(f'"{n}"' for n in names)
        return f'INSERT INTO "{table}" ({cols})'

    def finish(self, tables: Sequence[str]) -> None:
        self.conn.execute("DROP TABLE IF EXISTS temp.bench_copies")
        # The counts per state as migration 9 makes them, so that the first read folds nothing.
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute("DELETE FROM state_counts")
        self.conn.execute(
            "INSERT INTO state_counts (kind, state, n) SELECT kind, state, count(*) FROM resources GROUP BY 1, 2"
        )
        self.conn.execute("UPDATE state_counts_position SET seq = (SELECT coalesce(max(seq), 0) FROM journal)")
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


def _dialect(url: str) -> Dialect:
    if url.startswith("sqlite:"):
        path = url.split("sqlite:///", 1)[1].split("?", 1)[0]
        return _SQLite(path)
    return _Postgres(url)


# --- the plan: which copies, when ---------------------------------------------------------------

#: The tables whose rows the load copies, in the order their foreign keys need.
COPIED = ("resources", "waits", "inbox", "journal", "interests")
#: The identity columns the load sets itself (callbacks are named by their sequence number).
EXPLICIT_IDENTITY = {"inbox": "seq"}


@dataclass
class Template:
    profile: Profile
    view: TemplateView
    rows: dict[str, list[dict[str, Any]]]
    subst: _Subst
    count: int = 0

    @property
    def created(self) -> datetime:
        return self.view.resource.created_at

    @property
    def inbox_rows(self) -> int:
        return len(self.rows.get("inbox", ()))


@dataclass
class Copy:
    n: int
    template: str
    id: str
    shift_s: int
    party: str
    ib: int
    asset: str


@dataclass
class Load:
    """What a load wrote: counts, time taken, and what the benchmark needs to probe it."""

    size: int
    seconds: float
    rows: dict[str, int]
    templates: dict[str, Template]
    #: profile -> every copy's id, in time order
    ids: dict[str, list[str]]
    states: dict[str, int]
    #: profile -> a few copies (for checks)
    samples: dict[str, list[Copy]] = field(default_factory=dict)

    def random_ids(self, count: int, *, seed: int = 7) -> list[str]:
        rng = random.Random(seed)
        every = [i for ids in self.ids.values() for i in ids]
        return [every[rng.randrange(len(every))] for _ in range(count)]

    @property
    def popular_count(self) -> int:
        """How many resources the popular party uses."""
        return sum(1 for p in _parties(len(self.ids["started_used"])) if p == POPULAR_PARTY)


def _counts(size: int) -> dict[str, int]:
    if size < MIN_SIZE:
        raise ValueError(f"a load needs at least {MIN_SIZE:,} resources (a page of each list), not {size:,}")
    counts = {p.key: p.fixed if p.fixed is not None else max(1, round(p.share * size)) for p in PROFILES}
    # Whatever rounding and the fixed counts took or left goes to the biggest share.
    counts["finished_sync"] += size - sum(counts.values())
    return counts


def _new_id(ms: int, rng: random.Random) -> str:
    """An id shaped like tenure's new_id (UUIDv7 layout) for a resource created at ``ms``."""
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rng.getrandbits(12) << 64 | 0b10 << 62 | rng.getrandbits(62)
    return f"{value:032x}"


def _parties(count: int) -> list[str]:
    """The party of each used copy: a few use the rare party, half the popular one, the rest their own few."""
    groups = max(1, count // 8)
    out = []
    for i in range(count):
        if i < RARE_COUNT:
            out.append(RARE_PARTY)
        elif i % 2 == 0:
            out.append(POPULAR_PARTY)
        else:
            out.append(f"{_PARTY_PREFIX}client-{i % groups}")
    return out


def _plan(templates: dict[str, Template], now: float, first_seq: int, seed: int) -> list[Copy]:
    rng = random.Random(seed)
    drafts: list[tuple[float, str]] = []
    for key, t in templates.items():
        youngest, oldest = t.profile.ages
        drafts += [(now - rng.uniform(youngest, oldest), key) for _ in range(t.count)]
    drafts.sort()
    copies: list[Copy] = []
    used = [i for i, (_, key) in enumerate(drafts) if templates[key].profile.party]
    parties = dict(zip(used, _parties(len(used)), strict=True))
    ib = first_seq
    for n, (when, key) in enumerate(drafts):
        t = templates[key]
        shift = round(when - t.created.timestamp())
        ms = int((t.created.timestamp() + shift) * 1000)
        copies.append(Copy(n, key, _new_id(ms, rng), shift, parties.get(n, ""), ib, f"dataset-{n:07d}"))
        ib += t.inbox_rows
    return copies


# --- the load ----------------------------------------------------------------------------------


def _capture(db: Dialect, views: dict[str, TemplateView], asset: str, party: str) -> dict[str, Template]:
    ids = [v.resource.id for v in views.values()]
    for table in db.resource_tables():
        if table not in COPIED and db.rows(table, "resource_id", ids):
            raise LoadMismatch(
                f"tenure wrote rows to {table!r} for the template lifecycles, and the load does not copy that "
                "table: teach bench/load.py about it"
            )
    templates: dict[str, Template] = {}
    for p in PROFILES:
        view = views[p.key]
        rid = view.resource.id
        rows = {table: db.rows(table, "id" if table == "resources" else "resource_id", [rid]) for table in COPIED}
        if len(rows["resources"]) != 1:
            raise LoadMismatch(f"template {p.key} ({rid}) not found")
        hashes = [str(w["token_hash"]) for w in rows["waits"]]
        seqs = [int(i["seq"]) for i in rows["inbox"]]
        subst = _Subst(db.name, rid, asset=asset, party=party, hashes=hashes, inbox_seqs=seqs)
        templates[p.key] = Template(p, view, rows, subst)
    return templates


def _iso(value: str) -> str:
    """A time as either dialect prints it, as ISO-8601 text."""
    text = value.replace(" ", "T")
    return text + ":00" if re.search(r"[+-]\d\d$", text) else text


def _insert_chunk(
    db: Dialect, templates: dict[str, Template], columns: dict[str, list[Column]], lo: int, hi: int
) -> None:
    for table in COPIED:
        selects = []
        names: list[str] = []
        explicit = EXPLICIT_IDENTITY.get(table)
        for key, t in templates.items():
            for ordinal, row in enumerate(t.rows[table]):
                exprs = []
                names = []
                for col in columns[table]:
                    if col.role == "skip" or (col.role == "identity" and col.name != explicit):
                        continue
                    if col.role == "identity":
                        j = t.subst.seq_index[int(row[col.name])]
                        exprs.append(f"c.ib + {j}")
                    else:
                        exprs.append(db.literal(row[col.name], col, t.subst))
                    names.append(col.name)
                cols = ", ".join(f'{e} AS "{n}"' for e, n in zip(exprs, names, strict=True))
                selects.append(
                    f"SELECT c.n AS bench_n, {ordinal} AS bench_ord, {cols} FROM bench_copies c "
                    f"WHERE c.tmpl = {_quote(key)} AND c.n >= {lo} AND c.n < {hi}"
                )
        if not selects:
            continue
        outer = ", ".join(f'"{n}"' for n in names)
        union = "\nUNION ALL\n".join(selects)
        head = db.insert_head(table, names, explicit is not None)
        db.execute(f"{head}\nSELECT {outer} FROM (\n{union}\n) AS s ORDER BY bench_n, bench_ord")


def load(
    url: str,
    size: int,
    *,
    seed: int = 1,
    chunk: int = 25_000,
    progress: Callable[[str], None] | None = None,
) -> Load:
    """Load ``size`` transfers into the store at ``url`` (migrated, and holding no transfers yet)."""
    say = progress or (lambda _m: None)
    counts = _counts(size)
    started = time.perf_counter()
    tag = secrets.token_hex(4)
    asset = f"dataset-template-{tag}"
    party = f"{_PARTY_PREFIX}template-{tag}"
    with _template_store(url) as templates_url:
        views = _build_templates(templates_url, asset, party)
        tdb = _dialect(templates_url)
        try:
            templates = _capture(tdb, views, asset, party)
        finally:
            tdb.close()
    for key, t in templates.items():
        t.count = counts[key]
    db = _dialect(url)
    try:
        before = {table: int(db.scalar(f'SELECT count(*) FROM "{table}"')) for table in COPIED}
        first_seq = int(db.scalar("SELECT coalesce(max(seq), 0) FROM inbox")) + 1
        copies = _plan(templates, time.time(), first_seq, seed)
        db.put_copies([dataclasses.astuple(c) for c in copies])
        columns = {table: db.columns(table) for table in COPIED}
        total = len(copies)
        last_said = time.perf_counter()
        for lo in range(0, total, chunk):
            hi = min(total, lo + chunk)
            with db.transaction():
                _insert_chunk(db, templates, columns, lo, hi)
            if time.perf_counter() - last_said > 10:
                last_said = time.perf_counter()
                say(f"{hi:,} of {total:,} copies ({time.perf_counter() - started:.0f} s)")
        db.finish(COPIED)
        rows = {table: int(db.scalar(f'SELECT count(*) FROM "{table}"')) - before[table] for table in COPIED}
    finally:
        db.close()
    expected = {table: sum(t.count * len(t.rows[table]) for t in templates.values()) for table in COPIED}
    if rows != expected:
        raise LoadMismatch(f"rows the load added {rows}, expected {expected}")
    ids: dict[str, list[str]] = {key: [] for key in templates}
    by_template: dict[str, list[Copy]] = {key: [] for key in templates}
    for c in copies:
        ids[c.template].append(c.id)
        by_template[c.template].append(c)
    states: dict[str, int] = {}
    for t in templates.values():
        state = t.view.resource.state
        states[state] = states.get(state, 0) + t.count
    rng = random.Random(seed + 1)
    samples = {key: rng.sample(cs, min(5, len(cs))) for key, cs in by_template.items()}
    return Load(size, time.perf_counter() - started, rows, templates, ids, states, samples)


# --- the check, through tenure's own reads -------------------------------------------------------


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise LoadMismatch(what)


def check_backlog(store: EngineStore, loaded: Load, extra: Mapping[str, int] | None = None) -> None:
    """Raise LoadMismatch unless tenure counts the loaded transfers per state (plus ``extra``, by state)."""
    expected = dict(loaded.states)
    for state, n in (extra or {}).items():
        expected[state] = expected.get(state, 0) + n
    backlog = {r.state: r.count for r in store.backlog([KIND]) if r.count}
    _require(backlog == expected, f"the backlog says {backlog}, the load made {expected}")


def check(store: EngineStore, loaded: Load, due: Sequence[Any], *, extra: Mapping[str, int] | None = None) -> None:
    """Read the load back through tenure and raise LoadMismatch where it disagrees with what was loaded.

    ``due`` is what a worker claims (its (kind, state[, version]) list). ``extra``: transfers made since
    the load, by state (the backlog must count them too).
    """
    check_backlog(store, loaded, extra)
    now = store.now()
    for key, copies in loaded.samples.items():
        t = loaded.templates[key]
        t_res, t_journal = t.view.resource, t.view.journal
        for c in copies:
            r = store.get(c.id)
            what = f"copy {c.id} of {key}"
            _require((r.kind, r.state, r.version) == (t_res.kind, t_res.state, t_res.version), f"{what}: {r}")
            _require(r.created_at == t_res.created_at + timedelta(seconds=c.shift_s), f"{what}: created_at")
            _require(r.spec.get("asset") == c.asset, f"{what}: spec {r.spec}")
            expected_data = json.loads(json.dumps(t_res.data).replace(t_res.id, c.id))
            _require(r.data == expected_data, f"{what}: data {r.data} vs {expected_data}")
            journal = store.journal(c.id)
            _require([e.version for e in journal] == list(range(1, r.version + 1)), f"{what}: journal versions")
            seqs = [e.seq for e in journal]
            _require(seqs == sorted(set(seqs)), f"{what}: journal seqs {seqs} not in version order")
            _require(
                [(e.event, e.from_state, e.to_state, e.actor) for e in journal]
                == [(e.event, e.from_state, e.to_state, e.actor) for e in t_journal],
                f"{what}: journal differs from its template's",
            )
            _require(
                all(e.at == te.at + timedelta(seconds=c.shift_s) for e, te in zip(journal, t_journal, strict=True)),
                f"{what}: journal times",
            )
            if c.party:
                _require(set(r.in_use_by) == {c.party}, f"{what}: in_use_by {r.in_use_by}")
                _require(r.in_use_by[c.party].expires_at > now, f"{what}: its use has expired")
            for w in t.rows["waits"]:
                hashed = str(w["token_hash"])[:48] + f"{c.n:016x}"
                got = store.callbacks(hashed)
                _require(
                    len(got) == len([i for i in t.rows["inbox"] if i["token_hash"] == w["token_hash"]]),
                    f"{what}: callbacks of wait {hashed}",
                )
                for cb in got:
                    _require(cb.resource_id == c.id, f"{what}: callback {cb.seq} names {cb.resource_id}")
                    named = [e for e in journal if cb.seq in (e.detail.get("callbacks") or [])]
                    if cb.applied_at is not None:
                        _require(len(named) == 1, f"{what}: callback {cb.seq} is named by {len(named)} entries")
            role = store.kind_of(r).state(r.state).role
            if role is Role.WAIT:
                pending = store.pending_waits(c.id)
                _require(bool(pending), f"{what}: waits in {r.state} for nothing")
                _require(all(p.deadline is not None and p.deadline > now for p in pending), f"{what}: deadline")
            if role is Role.WORK:
                _require(r.next_attempt_at is not None and r.next_attempt_at <= now, f"{what}: not due")
    page = store.list(kind=KIND, state=MANY_STATE, limit=50)
    _require(len(page.items) == 50 and all(r.state == MANY_STATE for r in page.items), "list by state (many)")
    few = store.list(kind=KIND, state=FEW_STATE, limit=50)
    _require(len(few.items) == FEW_COUNT, f"list by state (few): {len(few.items)}, expected {FEW_COUNT}")
    rare = store.list(party=RARE_PARTY, limit=50)
    _require(len(rare.items) == RARE_COUNT, f"list by the rare party: {len(rare.items)}, expected {RARE_COUNT}")
    popular = store.list(party=POPULAR_PARTY, limit=50)
    _require(len(popular.items) == min(50, loaded.popular_count), "list by the popular party")
    claims = store.claim("bench-check", due, limit=1, lease=timedelta(seconds=30))
    _require(len(claims) == 1, "no due resource could be claimed")
    due_ids = {i for k in _DUE for i in loaded.ids[k]}
    try:
        _require(claims[0].resource.id in due_ids, f"claimed {claims[0].resource.id}, which the load did not make due")
    finally:
        for claim in claims:
            store.release(claim)


_DUE = ("due_completing", "due_retry", "due_initial")


# --- what the benchmarks do on a loaded store ---------------------------------------------------


def analyze(url: str, *, vacuum: bool = False) -> str:
    """PostgreSQL: refresh the planner's statistics after the load (ANALYZE, or VACUUM (ANALYZE)); says which.

    Only on the loaded database, and nothing on SQLite: whether tenure keeps SQLite's statistics is
    for tenure to do.
    """
    if url.startswith("sqlite:"):
        return "nothing"
    statement = "VACUUM (ANALYZE)" if vacuum else "ANALYZE"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement.encode())
    return statement


@dataclass
class Driven:
    """What :func:`drive_lifecycles` made, and how often the change feed left it asking each resource instead."""

    ids: list[str]
    #: Times the feed had nothing new for FEED_PATIENCE while lifecycles were in flight.
    feed_stalls: int = 0
    #: Seconds spent asking resources one by one after such a stall.
    stalled_seconds: float = 0.0


#: How long the driver trusts a quiet change feed before asking its resources one by one (PostgreSQL's
#: feed holds back everything committed after the oldest transaction open anywhere on the server).
FEED_PATIENCE = 0.25


def drive_lifecycles(
    store: EngineStore,
    count: int,
    *,
    window: int,
    spec: Mapping[str, Any] | None = None,
    on_done: Callable[[int], None] | None = None,
    stall: float = 120.0,
) -> Driven:
    """Create ``count`` transfers, ``window`` in flight at a time; fire ``complete`` on each once it is
    started; return once every one is deprovisioned (a worker elsewhere runs their steps).

    Only the transfers made here are followed (a loaded store holds many others in every state), through
    the change feed, as a client would follow them: polling costs what is new, not what the store holds.
    When the feed stays quiet for FEED_PATIENCE with lifecycles in flight, each of them is read instead
    (and the stall is counted): a transaction left open elsewhere must not stop the run.
    """
    position = store.latest_position()
    inflight: set[str] = set()
    completed: set[str] = set()
    out = Driven([])
    final = {s.name for s in store.kind(KIND).states if s.is_final}
    done = 0
    progress_at = heard_at = time.monotonic()

    def moved(resource_id: str, state: str) -> None:
        nonlocal done, progress_at
        if resource_id not in inflight:
            return
        if state == "started" and resource_id not in completed:
            for _ in range(20):
                try:
                    store.fire(resource_id, "complete")
                    break
                except Conflict:
                    time.sleep(0.01)  # the engine's own write (its claim's release) came first
            completed.add(resource_id)
            progress_at = time.monotonic()
        elif state in final:
            if state != "deprovisioned":
                raise LifecycleFailed(f"lifecycle {resource_id} ended in {state}")
            inflight.discard(resource_id)
            done += 1
            progress_at = time.monotonic()
            if on_done is not None:
                on_done(done)

    while done < count:
        while len(out.ids) < count and len(inflight) < window:
            r = store.create(KIND, {**(spec or {}), "asset": f"lifecycle-{len(out.ids)}"})
            inflight.add(r.id)
            out.ids.append(r.id)
        page = store.changes(position, kind=KIND, limit=1000)
        position = page.position
        for e in page.entries:
            moved(e.resource_id, e.to_state)
        now = time.monotonic()
        if page.entries:
            heard_at = now
        elif now - progress_at > stall:
            raise LifecycleFailed(f"no progress for {stall:g} s with {len(inflight)} lifecycles in flight")
        elif now - heard_at > FEED_PATIENCE:
            out.feed_stalls += 1
            for resource_id in list(inflight):
                moved(resource_id, store.get(resource_id).state)
            out.stalled_seconds += time.monotonic() - now
            heard_at = time.monotonic()
        else:
            time.sleep(0.02)  # nothing new: leave the cores to the engine
    return out
