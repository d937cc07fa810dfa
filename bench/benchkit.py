"""What the benchmark scripts share: peer-safe imports, versions, a scratch PostgreSQL database, process CPU,
a free port and the ``tenure`` command, and the plain SQL of a transition that tenure is measured against."""

from __future__ import annotations

import importlib.metadata
import os
import secrets
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

__all__ = [
    "PG_JOURNAL",
    "PG_UPDATE",
    "SQLITE_JOURNAL",
    "SQLITE_UPDATE",
    "free_port",
    "process_cpu",
    "scratch_database",
    "tenure_command",
    "unshadow",
    "version",
]

#: A transition in plain SQL, what tenure's write amounts to without its planning: the compare-and-swap
#: UPDATE (same columns set, claim let go) and the journal INSERT. bench/transitions.py and the ceiling
#: of bench/scale.py run them in a transaction of their own.
SQLITE_UPDATE = """
UPDATE resources
SET state = ?, version = ?, data = COALESCE(?, data), error = ?, attempts = 0, entered_at = ?,
    next_attempt_at = ?, deadline = ?, claim_token = NULL, claimed_by = NULL, claim_expires_at = NULL,
    updated_at = ?
WHERE id = ? AND version = ? AND state = ?
"""
SQLITE_JOURNAL = """
INSERT INTO journal (resource_id, version, event, from_state, to_state, actor, at, detail)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""
PG_UPDATE = SQLITE_UPDATE.replace("?", "%s").encode()
PG_JOURNAL = SQLITE_JOURNAL.replace("?", "%s").encode()


def unshadow() -> None:
    """Drop the benchmarks' folder from ``sys.path``: ``bench/transitions.py`` lives there and would be
    imported in place of the ``transitions`` library by anything that imports it."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _database_url(admin_url: str, name: str) -> str:
    head, _, query = admin_url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{name}" + (f"?{query}" if query else "")


@contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for the run, dropped (with FORCE) afterwards."""
    name = f"tenure_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as admin:
        admin.execute(f'CREATE DATABASE "{name}"'.encode())
    try:
        yield _database_url(admin_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, from /proc (0.0 where there is none)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def tenure_command() -> list[str]:
    """The installed ``tenure`` script next to this interpreter, else ``python -m tenure``."""
    script = os.path.join(os.path.dirname(sys.executable), "tenure")
    return [script] if os.access(script, os.X_OK) else [sys.executable, "-m", "tenure"]
