"""What the benchmark scripts share: peer-safe imports, versions, a scratch PostgreSQL database, process CPU."""

from __future__ import annotations

import importlib.metadata
import os
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

__all__ = ["scratch_database", "unshadow", "version"]


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
