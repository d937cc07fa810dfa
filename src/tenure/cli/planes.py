"""A control plane and its data planes as local ``tenure serve`` processes, each with its own database.

This is what ``tenure demo signaling`` runs, and what the two-process tests drive: every plane is a
real server on 127.0.0.1 with its own SQLite file and configuration, registered with the others by
URL and token exactly as docs/signaling.md describes, so the planes talk HTTP and nothing else.

    with LocalPlanes(Path("planes"), dataplanes=["dp1"]) as planes:
        made = planes.control.client().post("/v1/resources", json={"kind": "transfer", "spec": {...}})

A control plane may start with no data planes (``dataplanes=()``: ``transfer`` stays on version 1
there) and get some later (:meth:`LocalPlanes.add_dataplane`, then a restart: an upgrade). A plane
can be killed (SIGKILL), stopped (SIGTERM) and started again on the same port and database.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

__all__ = ["CONTROL", "LocalPlanes", "Plane", "PlaneNotReady", "free_port"]

#: The name of the control plane among the planes.
CONTROL = "control-plane"

#: Environment variables a plane must not inherit from the shell that starts it.
_SCRUBBED = (
    "TENURE_DATABASE_URL",
    "TENURE_SERVER",
    "TENURE_TOKEN",
    "TENURE_TOKEN_FILE",
    "TENURE_AUTH",
    "TENURE_CONFIG",
    "TENURE_TOKENS",
    "TENURE_PUBLIC_URL",
)


class PlaneNotReady(RuntimeError):
    """A plane did not answer ``/healthz`` in time (its log says why)."""


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def _table(header: str, values: Mapping[str, Any]) -> list[str]:
    return [header, *(f"{k} = {_toml(v)}" for k, v in values.items()), ""]


@dataclass
class Plane:
    """One ``tenure serve`` process: its name, port, home directory and admin token."""

    name: str
    port: int
    home: Path
    admin_token: str = field(repr=False)
    workers: int = 1
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    #: How the last process ended (its exit status; negative: the signal that ended it), None before.
    returncode: int | None = field(default=None, repr=False)
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config(self) -> Path:
        return self.home / "tenure.toml"

    @property
    def log(self) -> Path:
        return self.home / "serve.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, *, timeout: float = 60.0) -> Plane:
        """Start the process (unless it runs) and wait until it answers ``/healthz``."""
        self.launch()
        self.wait_ready(timeout)
        return self

    def launch(self) -> Plane:
        """Start the process with its configuration as it is now, without waiting (see :meth:`wait_ready`)."""
        if self.running:
            return self
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
        command = [sys.executable, "-m", "tenure", "serve", "--port", str(self.port), "--config", str(self.config)]
        command += ["--workers", str(self.workers), "--log-format", "json"]
        if self.process is not None:  # it exited by itself: keep how
            self.returncode = self.process.returncode
        self._close_log()
        self._log = self.log.open("ab")
        self.process = subprocess.Popen(
            command, cwd=self.home, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    def wait_ready(self, timeout: float) -> None:
        """Wait until the process answers ``/healthz`` (:class:`PlaneNotReady` if it exits or is too slow)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise PlaneNotReady(f"{self.name} exited with {self.process.returncode}; see {self.log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.1)
        raise PlaneNotReady(f"{self.name} did not answer /healthz within {timeout:.0f} s; see {self.log}")

    def kill(self) -> None:
        """SIGKILL: the process dies at once, mid-step if it was in one."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM: the process finishes or hands back what it holds, then exits."""
        self._end(signal.SIGTERM)

    def _end(self, how: signal.Signals) -> None:
        self.send(how)
        self.reap()

    def send(self, how: signal.Signals) -> None:
        """Send ``how`` to the process, if it runs, without waiting for it to exit (see :meth:`reap`)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(how)

    def reap(self, timeout: float = 30.0) -> None:
        """Wait for the process to exit (SIGKILL after ``timeout`` seconds) and keep its exit status."""
        if self.process is not None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
            self.returncode = self.process.returncode
            self.process = None
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def client(self, token: str | None = None, *, timeout: float = 10.0) -> httpx.Client:
        """An HTTP client for this plane, holding its admin token (or ``token``)."""
        headers = {"Authorization": f"Bearer {token or self.admin_token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)


class LocalPlanes:
    """A control plane and ``dataplanes`` as local processes under ``home`` (one directory each).

    ``request_deadline`` is how long every ``*_requested`` state waits, on both sides, before asking
    again. ``signal_urls`` names, per data plane, where the control plane signals it when that is not
    the plane's own URL (a proxy in front of it, say); its callbacks still go straight to the control
    plane. With no data planes the control plane has no signaling configured at all. Use as a context
    manager: every process is stopped on the way out.
    """

    def __init__(
        self,
        home: Path,
        *,
        dataplanes: Sequence[str] = ("dp1",),
        request_deadline: float = 60.0,
        workers: int = 1,
        signal_urls: Mapping[str, str] | None = None,
    ) -> None:
        self.home = home
        self.request_deadline = request_deadline
        self.workers = workers
        self.signal_urls = dict(signal_urls or {})
        #: The token the control plane presents to every data plane, and each data plane's token there.
        self.signal_token = secrets.token_urlsafe(24)
        self.callback_tokens: dict[str, str] = {}
        self.control = self._plane(CONTROL)
        self.dataplanes: dict[str, Plane] = {}
        for name in dataplanes:
            self._add(name)
        self._write_configs()

    def _plane(self, name: str) -> Plane:
        home = self.home / name
        home.mkdir(parents=True, exist_ok=True)
        return Plane(name, free_port(), home, secrets.token_urlsafe(24), self.workers)

    def _add(self, name: str) -> Plane:
        if name == CONTROL or name in self.dataplanes:
            raise ValueError(f"there is a plane named {name!r} already")
        self.callback_tokens[name] = secrets.token_urlsafe(24)
        plane = self.dataplanes[name] = self._plane(name)
        return plane

    def add_dataplane(self, name: str) -> Plane:
        """Add a data plane (not started) and register it with the control plane.

        Every configuration is written again; a plane that runs reads its own when it is started
        again, so the control plane knows the new data plane only after a restart (an upgrade).
        """
        plane = self._add(name)
        self._write_configs()
        return plane

    @property
    def planes(self) -> list[Plane]:
        return [self.control, *self.dataplanes.values()]

    def plane(self, name: str) -> Plane:
        return self.control if name == CONTROL else self.dataplanes[name]

    def _write_configs(self) -> None:
        c = self.control
        lines = _table("[service]", {"database": f"sqlite:///{c.home / 'tenure.db'}", "public_url": c.url})
        if self.dataplanes:
            lines += _table("[signaling]", {"request_deadline": self.request_deadline})
        lines += _table("[[tokens]]", {"client": "admin", "token": c.admin_token, "scopes": ["admin"]})
        for name, plane in self.dataplanes.items():
            url = self.signal_urls.get(name, plane.url)
            lines += _table("[[tokens]]", {"client": name, "token": self.callback_tokens[name], "scopes": ["callback"]})
            lines += _table("[[dataplanes]]", {"id": name, "url": url, "token": self.signal_token})
        c.config.write_text("\n".join(lines))
        for name, plane in self.dataplanes.items():
            lines = _table("[service]", {"database": f"sqlite:///{plane.home / 'tenure.db'}", "public_url": plane.url})
            lines += _table("[[tokens]]", {"client": "admin", "token": plane.admin_token, "scopes": ["admin"]})
            lines += _table("[[tokens]]", {"client": "controlplane", "token": self.signal_token, "scopes": ["signal"]})
            lines += _table(
                "[dataplane]",
                {
                    "id": name,
                    "controlplane_url": c.url,
                    "controlplane_token": self.callback_tokens[name],
                    "request_deadline": self.request_deadline,
                },
            )
            plane.config.write_text("\n".join(lines))

    def start(self, *, timeout: float = 60.0) -> LocalPlanes:
        """Start every plane that does not run, all at once, and wait until each answers ``/healthz``."""
        for plane in self.planes:
            plane.launch()
        for plane in self.planes:
            plane.wait_ready(timeout)
        return self

    def stop(self) -> None:
        """SIGTERM every plane, all at once, and wait until each has exited."""
        for plane in self.planes:
            plane.send(signal.SIGTERM)
        for plane in self.planes:
            plane.reap()

    def __enter__(self) -> LocalPlanes:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def journals(self, resource_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every plane's journal entries for ``resource_id`` (the transfer and its dataflow share it)."""
        for plane in self.planes:
            if not plane.running:
                continue
            with plane.client() as http:
                answer = http.get(f"/v1/resources/{resource_id}/journal", params={"limit": 1000})
            if answer.status_code == 200:
                for entry in answer.json()["items"]:
                    yield plane.name, entry
