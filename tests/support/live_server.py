"""The real HTTP service under a real uvicorn server, in a background thread on 127.0.0.1.

Tests talk to it with httpx over the socket, the way any client would: no ASGI transport, no mocks.

    with LiveServer(create_app(store, config)) as server:
        with server.client(ADMIN) as http:
            http.get("/v1/kinds")

The tokens below are the ones :func:`all_scopes_config` configures, one client per scope.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import httpx
import uvicorn

from tenure.service import ClientToken, ServiceConfig

__all__ = [
    "ADMIN",
    "CALLBACK",
    "READER",
    "TOKENS",
    "WRITER",
    "LiveServer",
    "all_scopes_config",
]

#: One bearer token per client; each client is named after the one scope its token grants.
READER = "reader-token-0123456789abcdef"
WRITER = "writer-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"
CALLBACK = "callback-token-0123456789abcdef"
#: client -> (token, scope)
TOKENS = {
    "reader": (READER, "read"),
    "writer": (WRITER, "write"),
    "admin": (ADMIN, "admin"),
    "callback": (CALLBACK, "callback"),
}

#: How long starting or stopping the server may take before the test fails.
PATIENCE = 15.0


def all_scopes_config(**kwargs: Any) -> ServiceConfig:
    """Auth on, with a token for each scope (clients ``reader``, ``writer``, ``admin``, ``callback``)."""
    tokens = tuple(ClientToken.make(client, token, [scope]) for client, (token, scope) in TOKENS.items())
    return ServiceConfig(auth=True, tokens=tokens, **kwargs)


class LiveServer:
    """Runs an ASGI app under uvicorn on a free port of 127.0.0.1 until :meth:`stop`."""

    def __init__(self, app: Any, *, graceful_seconds: float = 2.0) -> None:
        self.app = app
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=0,
                log_config=None,
                access_log=False,
                lifespan="on",
                timeout_graceful_shutdown=graceful_seconds,
                server_header=False,
            )
        )
        self._thread: threading.Thread | None = None
        self._clients: list[httpx.Client] = []
        self._shared: dict[str | None, httpx.Client] = {}
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        self._thread = threading.Thread(target=self.server.run, name="live-server", daemon=True)
        self._thread.start()
        limit = time.monotonic() + PATIENCE
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the server thread ended before the server started (see the log)")
            if time.monotonic() > limit:
                raise RuntimeError(f"the server did not start within {PATIENCE}s")
            time.sleep(0.005)
        sockets = [s for server in self.server.servers for s in server.sockets]
        self.port = int(sockets[0].getsockname()[1])
        return self

    def client(self, token: str | None = None, *, timeout: float = 15.0, **kwargs: Any) -> httpx.Client:
        """An httpx client for this server sending ``token`` as its bearer token (none if None)."""
        headers = dict(kwargs.pop("headers", {}) or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        made = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, **kwargs)
        self._clients.append(made)
        return made

    def shared(self, token: str | None) -> httpx.Client:
        """One client per token, kept for the server's life (making an httpx client takes a while)."""
        if token not in self._shared:
            self._shared[token] = self.client(token)
        return self._shared[token]

    def raw(self, request: bytes, *, timeout: float = 10.0) -> bytes:
        """Send ``request`` as it is over a fresh socket and return every byte of the answer.

        For what httpx will not send: a malformed header, a chunked body without Content-Length, ...
        The request should say ``Connection: close`` so that the server ends the answer by closing.
        """
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(request)
            chunks = []
            while True:
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks)

    def stop(self) -> None:
        for c in self._clients:
            c.close()
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(PATIENCE)
            assert not self._thread.is_alive(), "the server did not stop"

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
