"""Running the service: uvicorn for the API next to the engine's workers, in one process."""

from __future__ import annotations

import contextlib
import errno
import logging
import signal
import socket
import threading
from collections.abc import Iterator, Sequence
from datetime import timedelta

import uvicorn

from tenure.engine import Steps, Worker
from tenure.errors import ServerFailed
from tenure.service.app import create_app
from tenure.service.config import ServiceConfig
from tenure.store.protocol import EngineStore

__all__ = ["ServerFailed", "listen", "run_server"]

log = logging.getLogger("tenure.service")


class _Server(uvicorn.Server):
    """uvicorn's server, except that a SIGTERM or SIGINT only stops it.

    uvicorn raises the signal again once it has shut down, which would kill the process before the
    workers finish their steps and the store is closed.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` for :func:`run_server`; :class:`ServerFailed` if it cannot be had.

    Binding first lets ``tenure serve`` say that the port is in use before it announces anything.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServerFailed(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # As uvicorn does: a port left in TIME_WAIT by a server that just stopped is free to take.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ServerFailed(
                f"port in use: another process is listening on {host}:{port}; stop it or choose another --port"
            ) from None
        raise ServerFailed(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def run_server(
    store: EngineStore,
    steps: Steps,
    config: ServiceConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    concurrency: int = 4,
    lease: timedelta = timedelta(seconds=30),
    sock: socket.socket | None = None,
) -> Sequence[Worker]:
    """Serve the API on ``host:port`` and run ``workers`` until SIGINT or SIGTERM; returns the workers.

    ``sock``, from :func:`listen`, is the bound socket to serve on (then ``host`` and ``port`` only
    name it); without one the address is bound here, and one in use raises :class:`ServerFailed`
    before any worker starts. On a signal the server stops taking requests, then the workers finish
    their running steps (or release them for another worker) before this returns.
    """
    if sock is None:
        sock = listen(host, port)
    retention = config.retention_policy()
    pool = [Worker(store, steps, concurrency=concurrency, lease=lease, retention=retention) for _ in range(workers)]
    app = create_app(store, config, workers=pool)
    server = _Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
            server_header=False,
            # The peer is the client: X-Forwarded-For is nobody's to set (the token limiter keys on it).
            proxy_headers=False,
        )
    )
    for w in pool:
        w.start()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        for w in pool:
            w.request_stop()
        for w in pool:
            w.stop(timeout=30)
    if not server.started:
        raise ServerFailed(f"could not serve on {host}:{port} (see the log above)")
    return pool
