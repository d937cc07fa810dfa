"""Where the resource commands send their work: a running server (HTTP) or a database (directly).

Each command is written once against :class:`Backend`; :func:`connect` picks the implementation from
``--server`` / ``--database`` (and ``TENURE_SERVER`` / ``TENURE_DATABASE_URL``). Both speak the API's
JSON (camelCase), so ``--json`` prints the same shape whichever way the command went.
"""

from __future__ import annotations

import builtins
import os
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from tenure.cli.common import DEFAULT_TOKEN_FILE, SERVER_ENV, all_kinds, open_existing_store, reported
from tenure.errors import ApiError, InvalidUsage, ServerUnreachable, UnknownKind

# Only what talking to a server needs is imported up front (httpx, through the client): the engine,
# the database drivers and the API's models wait until a command works on a database.
from tenure.service.client import Client, Page

if TYPE_CHECKING:
    from tenure.machine import Kind
    from tenure.store.model import Resource
    from tenure.store.protocol import Store

__all__ = [
    "LOCAL_CLIENT",
    "Backend",
    "DatabaseBackend",
    "Json",
    "ServerBackend",
    "connect",
    "read_token",
]

Json = dict[str, Any]

#: Who a command on a database is, as the journal records it (and the client its idempotency keys
#: and uses belong to, as the service keeps them per client).
LOCAL_CLIENT = "cli"

#: Seconds between looks at the resource while polling.
POLL_INTERVAL = 0.2
#: Seconds ``wait`` keeps trying a server that cannot be reached before it gives up.
UNREACHABLE_PATIENCE = 30.0


class Backend(Protocol):
    """What the resource commands need; the answers are the API's JSON objects."""

    #: What the commands talk to, for messages (a URL without credentials, or a database target).
    target: str

    def kinds(self) -> builtins.list[Json]:
        """Every loaded kind's description."""
        ...

    def kind(self, name: str) -> Json:
        """One kind's description (states with roles, events with sources and targets)."""
        ...

    def diagram(self, name: str, fmt: str) -> str:
        """A kind's state graph: ``mermaid``, ``dot`` or ``svg``."""
        ...

    def list(
        self,
        *,
        kind: str | None,
        states: Sequence[str],
        desired_state: str | None,
        party: str | None,
        after: str | None,
        limit: int,
        data: tuple[str, str] | None = None,
    ) -> Page:
        """One page of resources, oldest first."""
        ...

    def get(self, resource_id: str) -> Json:
        """One resource."""
        ...

    def history(self, resource_id: str) -> builtins.list[Json]:
        """The resource's whole journal, oldest first."""
        ...

    def create(self, kind: str, spec: Mapping[str, Any], *, sharable: bool | None, idempotency_key: str | None) -> Json:
        """A new resource in its kind's initial state."""
        ...

    def fire(self, resource_id: str, event: str, *, data: Mapping[str, Any] | None, if_version: int | None) -> Json:
        """Fire an event (a compare-and-swap when ``if_version`` is given)."""
        ...

    def set_desired_state(self, resource_id: str, state: str | None, *, if_version: int | None) -> Json:
        """Set (or with None, clear) the state the resource should end up in."""
        ...

    def retry_now(self, resource_id: str, *, if_version: int | None) -> Json:
        """Make the next attempt of a step backing off after a failure due now (the admin scope over HTTP)."""
        ...

    def follow(self, resource_id: str, emit: Callable[[Json], None], stop: threading.Event) -> None:
        """Call ``emit`` with the resource now and again whenever it may have changed, until ``stop``.

        Blocks; runs in its own thread. A snapshot may come more than once; callers compare versions.
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...


# --- a running server ------------------------------------------------------------------------------


class ServerBackend:
    """The commands over HTTP, through :class:`~tenure.service.client.Client`."""

    def __init__(self, client: Client, *, token_source: str | None) -> None:
        self.client = client
        self.target = client.url
        #: Where the token came from (for the hint on 401), or None without one.
        self.token_source = token_source

    def kinds(self) -> builtins.list[Json]:
        return self.client.kinds()

    def kind(self, name: str) -> Json:
        return self.client.kind(name)

    def diagram(self, name: str, fmt: str) -> str:
        return self.client.diagram(name, fmt)

    def list(
        self,
        *,
        kind: str | None,
        states: Sequence[str],
        desired_state: str | None,
        party: str | None,
        after: str | None,
        limit: int,
        data: tuple[str, str] | None = None,
    ) -> Page:
        return self.client.list(
            kind=kind,
            state=list(states) or None,
            desired_state=desired_state,
            party=party,
            after=after,
            limit=limit,
            data=data,
        )

    def get(self, resource_id: str) -> Json:
        return self.client.get(resource_id)

    def history(self, resource_id: str) -> builtins.list[Json]:
        return list(self.client.history(resource_id, page_size=1000))

    def create(self, kind: str, spec: Mapping[str, Any], *, sharable: bool | None, idempotency_key: str | None) -> Json:
        return self.client.create(kind, spec, sharable=sharable, idempotency_key=idempotency_key)

    def fire(self, resource_id: str, event: str, *, data: Mapping[str, Any] | None, if_version: int | None) -> Json:
        return self.client.fire(resource_id, event, data=data, if_version=if_version)

    def set_desired_state(self, resource_id: str, state: str | None, *, if_version: int | None) -> Json:
        return self.client.set_desired_state(resource_id, state, if_version=if_version)

    def retry_now(self, resource_id: str, *, if_version: int | None) -> Json:
        return self.client.retry_now(resource_id, if_version=if_version)

    def follow(self, resource_id: str, emit: Callable[[Json], None], stop: threading.Event) -> None:
        """Watch the resource's changes on the event stream; poll if the stream is not available."""
        try:
            # The current state is read after each (re)connection, when the stream's start is fixed,
            # so a change between the read and the stream is seen by one or the other.
            watch = self.client.watch(resource=resource_id, on_connect=lambda: emit(self.client.get(resource_id)))
            with watch:
                for _ in watch:
                    if stop.is_set():
                        return
                    emit(self.client.get(resource_id))
        except (ApiError, ServerUnreachable):
            # The stream is refused or keeps dropping (a proxy that buffers it, say): poll instead;
            # an error that is not the stream's own comes back from the first look.
            pass
        unreachable_since: float | None = None
        while not stop.is_set():
            try:
                emit(self.client.get(resource_id))
                unreachable_since = None
            except ServerUnreachable:
                # A server restarting is no reason to give up waiting; one gone for long is.
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since > UNREACHABLE_PATIENCE:
                    raise
            stop.wait(POLL_INTERVAL * 2.5)

    def close(self) -> None:
        self.client.close()


# --- a database ----------------------------------------------------------------------------------


class DatabaseBackend:
    """The commands straight against the store; kinds and diagrams need no database at all."""

    def __init__(self, database: str | None, kinds: list[str] | None) -> None:
        self._database = database
        self._kind_paths = kinds
        self._kinds: tuple[Kind, ...] | None = None
        self._store: Store | None = None
        self.target = database or "the default database"

    @property
    def loaded(self) -> tuple[Kind, ...]:
        if self._kinds is None:
            self._kinds = all_kinds(self._kind_paths)
        return self._kinds

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_existing_store(self._database, self.loaded)
            self.target = self._store.target
        return self._store

    def _find(self, name: str) -> Kind:
        found = {k.name: k for k in self.loaded}
        if name not in found:
            raise UnknownKind(name, sorted(found))
        return found[name]

    def kinds(self) -> builtins.list[Json]:
        return [_described(k) for k in self.loaded]

    def kind(self, name: str) -> Json:
        return _described(self._find(name))

    def diagram(self, name: str, fmt: str) -> str:
        from tenure.draw import to_dot, to_mermaid, to_svg

        kind = self._find(name)
        if fmt == "svg":
            return to_svg(kind)
        return to_dot(kind) if fmt == "dot" else to_mermaid(kind)

    def list(
        self,
        *,
        kind: str | None,
        states: Sequence[str],
        desired_state: str | None,
        party: str | None,
        after: str | None,
        limit: int,
        data: tuple[str, str] | None = None,
    ) -> Page:
        page = self.store.list(
            kind=kind,
            state=list(states) or None,
            desired_state=desired_state,
            party=party,
            after=after,
            limit=limit,
            data=data,
        )
        return Page(tuple(_resource(r, self.store) for r in page.items), page.next_after)

    def get(self, resource_id: str) -> Json:
        return _resource(self.store.get(resource_id), self.store)

    def history(self, resource_id: str) -> builtins.list[Json]:
        from tenure.service.models import JournalOut

        self.store.get(resource_id)  # an unknown id is an error, not an empty history
        entries, after = [], 0
        while True:
            page = self.store.journal(resource_id, after_version=after, limit=1000)
            entries += [JournalOut.of(e).model_dump(mode="json", by_alias=True) for e in page]
            if len(page) < 1000:
                return entries
            after = page[-1].version

    def create(self, kind: str, spec: Mapping[str, Any], *, sharable: bool | None, idempotency_key: str | None) -> Json:
        from tenure.service.idempotency import scoped_key

        # The key in the namespace of the local client, as the service keeps each client's keys.
        key = None if idempotency_key is None else scoped_key(LOCAL_CLIENT, idempotency_key)
        made = self.store.create(kind, spec, sharable=sharable, idempotency_key=key, actor=LOCAL_CLIENT)
        return _resource(made, self.store)

    def fire(self, resource_id: str, event: str, *, data: Mapping[str, Any] | None, if_version: int | None) -> Json:
        fired = self.store.fire(resource_id, event, expected_version=if_version, data=data, actor=LOCAL_CLIENT)
        return _resource(fired, self.store)

    def set_desired_state(self, resource_id: str, state: str | None, *, if_version: int | None) -> Json:
        # As the local client: a teardown wish releases the uses it registered, as over HTTP.
        changed = self.store.set_desired_state(
            resource_id, state, expected_version=if_version, actor=LOCAL_CLIENT, client=LOCAL_CLIENT
        )
        return _resource(changed, self.store)

    def retry_now(self, resource_id: str, *, if_version: int | None) -> Json:
        # The operator who holds the database may do what the admin scope allows over HTTP.
        retried = self.store.retry_now(resource_id, expected_version=if_version, actor=LOCAL_CLIENT)
        return _resource(retried, self.store)

    def follow(self, resource_id: str, emit: Callable[[Json], None], stop: threading.Event) -> None:
        """Poll: other processes' writes reach a database client no other way that works everywhere."""
        while not stop.is_set():
            emit(self.get(resource_id))
            stop.wait(POLL_INTERVAL)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def _resource(r: Resource, store: Store) -> Json:
    from tenure.service.models import ResourceOut

    # With its kind and the store's clock: live uses and the teardown summary, as the API shows them.
    return ResourceOut.seen_in(store, r).model_dump(mode="json", by_alias=True)


# --- choosing one --------------------------------------------------------------------------------


def read_token(token_file: Path) -> tuple[str | None, str | None]:
    """The bearer token and where it came from: ``TENURE_TOKEN``, else ``token_file`` if it exists."""
    token = os.environ.get("TENURE_TOKEN", "").strip()
    if token:
        return token, "TENURE_TOKEN"
    try:
        text = token_file.read_text().strip()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        raise InvalidUsage(f"cannot read the token file {token_file}: {exc.strerror}") from None
    return (text, str(token_file)) if text else (None, None)


def _choose(server: str | None, database: str | None) -> tuple[str | None, str | None]:
    """The server to talk to, or else the database (None: the default): options first, then the environment.

    Only the server is decided here; a database left as None is resolved by
    :func:`tenure.store.url.database_url` when the store opens (TENURE_DATABASE_URL, else the default).
    """
    if server and database:
        raise InvalidUsage("give --server or --database, not both")
    if server or database:
        return server or None, database or None
    from_env = os.environ.get(SERVER_ENV, "").strip()
    return (from_env, None) if from_env else (None, None)


@contextmanager
def connect(
    server: str | None,
    database: str | None,
    kinds: list[str] | None = None,
    token_file: Path = DEFAULT_TOKEN_FILE,
) -> Iterator[Backend]:
    """The backend the options name; errors inside the block become one red line and exit status 1."""
    with reported():
        backend: Backend
        server, database = _choose(server, database)
        if server is not None:
            if kinds:
                raise InvalidUsage("--kinds applies to --database; a server serves the kinds it loaded")
            token, source = read_token(token_file)
            backend = ServerBackend(Client(server, token=token, transport=_plain_http(server)), token_source=source)
        else:
            backend = DatabaseBackend(database, kinds)
        try:
            yield backend
        except ApiError as exc:
            raise _explained(exc, backend) from None
        finally:
            backend.close()


def _plain_http(server: str) -> httpx.BaseTransport | None:
    """For an ``http://`` server, a transport without TLS settings; None (httpx's default) otherwise.

    httpx's default transport loads the system's certificate authorities into a TLS context up front,
    which takes longer than the whole request of a command; plain HTTP never uses it. With a proxy
    configured in the environment the default stays, since only it routes through the proxy.
    """
    if not server.startswith("http://") or urllib.request.getproxies():
        return None
    return httpx.HTTPTransport(verify=False)


def _explained(exc: ApiError, backend: Backend) -> ApiError:
    """The server's refusal, with a hint about the token when it is a 401."""
    if exc.status != 401 or not isinstance(backend, ServerBackend):
        return exc
    if backend.token_source is None:
        hint = "no token was sent: set TENURE_TOKEN, or point --token-file at the file tenure serve wrote"
    else:
        hint = f"the token from {backend.token_source} was refused"
    # Still the server's ApiError (status, type, members), only its detail carries the hint.
    return ApiError(exc.status, exc.type, exc.title, f"{exc.detail} ({hint})", exc.extensions, instance=exc.instance)


def _described(kind: Kind) -> Json:
    """A kind as the API describes it (the same JSON from either backend)."""
    from tenure.service.models import KindOut

    return KindOut.of(kind).model_dump(mode="json")
