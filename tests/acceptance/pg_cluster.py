"""A private, throw-away PostgreSQL cluster for tests that must stop and restart the server.

:meth:`PrivateCluster.create` runs ``initdb`` into a fresh directory under the system temp dir and
starts ``postgres`` on a free TCP port of 127.0.0.1 (its socket in the same directory), so stopping it
disturbs nobody else. When the tests run as root the server runs as the ``postgres`` user (``runuser``),
which then owns the directory. :meth:`PrivateCluster.destroy` stops it (immediately) and removes the
directory; it is safe to call more than once and after a failure.

:class:`ClusterUnavailable` says why a cluster cannot be made here (no binaries, no ``postgres``
user, ``initdb`` failing...), so a test can fall back to something else.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

__all__ = ["ClusterUnavailable", "PrivateCluster", "find_bindir"]

#: Settings for speed: nothing here has to survive a crash of the *machine*. A crash of the server
#: (``stop -m immediate``) must lose nothing that was acknowledged, though: the WAL still reaches the
#: OS at every commit (no ``synchronous_commit=off``, which would lose acknowledged commits).
_SETTINGS = (
    "fsync=off",
    "full_page_writes=off",
    "max_connections=200",
    "listen_addresses=127.0.0.1",
    "log_min_messages=warning",
)


class ClusterUnavailable(Exception):
    """A private cluster cannot be started in this environment (the message says why)."""


def find_bindir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are: ``TENURE_PG_BINDIR`` if set, else Debian's layout or ``PATH``."""
    explicit = os.environ.get("TENURE_PG_BINDIR")
    if explicit:  # authoritative when set (point it at nothing to test without a private cluster)
        candidates = [explicit]
    else:
        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
        initdb = shutil.which("initdb")
        if initdb:
            candidates.append(str(Path(initdb).parent))
    for c in candidates:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "pg_ctl").is_file():
            return Path(c)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PrivateCluster:
    def __init__(self, bindir: Path, root: Path, port: int, run_as: str | None) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.port = port
        self.run_as = run_as
        self.log = root / "server.log"

    # --- making one ----------------------------------------------------------------------------

    @classmethod
    def create(cls) -> PrivateCluster:
        bindir = find_bindir()
        if bindir is None:
            raise ClusterUnavailable("no initdb/pg_ctl found (set TENURE_PG_BINDIR)")
        run_as: str | None = None
        root = Path(tempfile.mkdtemp(prefix="tenure-pg-"))
        try:
            if os.geteuid() == 0:
                # The server refuses to run as root: hand the directory to the postgres user.
                try:
                    user = pwd.getpwnam("postgres")
                except KeyError:
                    raise ClusterUnavailable("running as root and there is no postgres user") from None
                if shutil.which("runuser") is None:
                    raise ClusterUnavailable("running as root and there is no runuser to drop to postgres")
                os.chown(root, user.pw_uid, user.pw_gid)
                run_as = "postgres"
            cluster = cls(bindir, root, _free_port(), run_as)
            init = cluster._run(
                "initdb", "-D", str(cluster.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"
            )
            if init.returncode != 0:
                raise ClusterUnavailable(f"initdb failed: {init.stderr.strip()[-500:]}")
            cluster.start()
        except BaseException:
            with contextlib.suppress(Exception):
                PrivateCluster(bindir, root, 0, run_as).destroy()
            raise
        return cluster

    def _run(self, tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / tool), *args]
        if self.run_as is not None:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, cwd=self.root)

    # --- driving it ----------------------------------------------------------------------------

    @property
    def admin_url(self) -> str:
        return self.url("postgres")

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _options(self) -> str:
        return " ".join([f"-p {self.port}", f"-k {self.root}", *(f"-c {s}" for s in _SETTINGS)])

    def start(self) -> None:
        done = self._run("pg_ctl", "-D", str(self.data), "-o", self._options(), "-l", str(self.log), "-w", "start")
        if done.returncode != 0:
            raise ClusterUnavailable(f"pg_ctl start failed: {done.stdout.strip()} {done.stderr.strip()}\n{self.tail()}")
        self.wait_ready()

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (disconnect everyone, clean shutdown) or ``immediate`` (a crash)."""
        done = self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed: {done.stdout.strip()} {done.stderr.strip()}\n{self.tail()}")

    def restart(self, mode: str = "fast") -> None:
        done = self._run(
            "pg_ctl", "-D", str(self.data), "-m", mode, "-o", self._options(), "-l", str(self.log), "-w", "restart"
        )
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl restart failed: {done.stdout.strip()} {done.stderr.strip()}\n{self.tail()}")
        self.wait_ready()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.admin_url, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    def destroy(self) -> None:
        """Stop the server if it runs (a crash stop: nothing here is worth a checkpoint) and remove it all."""
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)
