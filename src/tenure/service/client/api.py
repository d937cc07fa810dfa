"""The client of tenure's HTTP API: one method per operation, answers as the API's JSON.

:class:`Client` builds each request (ids quoted into one path segment, versions into ``If-Match``)
and reads its answer; :class:`~tenure.service.client.transport.Transport` sends it, and
:class:`~tenure.service.client.watch.Watch` reads the change stream. Listings come a page at a
time (:class:`Page`, :class:`JournalPage`), or as iterators that fetch pages as the loop needs them.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from tenure.service.client.transport import Json, Transport
from tenure.service.client.watch import Watch

__all__ = ["MERGE_PATCH", "Client", "JournalPage", "Page"]

#: The media type of a merge patch (RFC 7396), which PATCH takes.
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True, slots=True)
class Page:
    """One page of resources; pass ``next`` back as ``after`` for the next one (None: the last page)."""

    items: tuple[Json, ...]
    next: str | None


@dataclass(frozen=True, slots=True)
class JournalPage:
    """One page of a resource's journal; ``next_after_version`` continues it (None: nothing more)."""

    items: tuple[Json, ...]
    next_after_version: int | None


class Client:
    """A client for one tenure server; use it as a context manager, or call :meth:`close`.

    ``timeout`` bounds every request (seconds); the watch stream waits longer between bytes, since
    the server only sends keep-alives when nothing happens. ``transport`` replaces the network (an
    ``httpx.MockTransport`` in tests).
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 10,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._transport = Transport(base_url, token, timeout, transport=transport)
        self.base_url = self._transport.base_url
        #: The server's address as messages show it (without credentials).
        self.url = self._transport.url
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections this client keeps open."""
        self._transport.close()

    # --- operations ----------------------------------------------------------------------------

    def health(self) -> Json:
        """``/healthz``: the process is up."""
        return self._transport.json_object("GET", "/healthz")

    def ready(self) -> Json:
        """``/readyz``: the database is reachable and migrated (raises :class:`ApiError` 503 if not)."""
        return self._transport.json_object("GET", "/readyz")

    # --- kinds ---------------------------------------------------------------------------------

    def kinds(self) -> builtins.list[Json]:
        """The kinds the server has loaded: states, events, roles, spec schema."""
        return self._transport.json_array("GET", "/v1/kinds")

    def kind(self, name: str) -> Json:
        """One kind's description."""
        return self._transport.json_object("GET", f"/v1/kinds/{_segment(name)}")

    def diagram(self, name: str, fmt: str = "mermaid") -> str:
        """A kind's state graph as text: ``mermaid``, ``dot`` (Graphviz) or ``svg``."""
        return self._transport.call("GET", f"/v1/kinds/{_segment(name)}/diagram", params={"format": fmt}).text

    # --- resources -----------------------------------------------------------------------------

    def create(
        self,
        kind: str,
        spec: Mapping[str, Any] | None = None,
        *,
        sharable: bool | None = None,
        idempotency_key: str | None = None,
    ) -> Json:
        """Create a resource in its kind's initial state.

        With an ``idempotency_key``, sending the same request again returns the resource the first
        one created instead of a second one.
        """
        body: Json = {"kind": kind, "spec": dict(spec or {})}
        if sharable is not None:
            body["sharable"] = sharable
        headers = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        return self._transport.json_object("POST", "/v1/resources", body=body, headers=headers)

    def get(self, resource_id: str) -> Json:
        """One resource; its ``version`` is the value to pass as ``if_version``."""
        return self._transport.json_object("GET", f"/v1/resources/{_segment(resource_id)}")

    def list(
        self,
        *,
        kind: str | None = None,
        state: str | Sequence[str] | None = None,
        desired_state: str | None = None,
        party: str | None = None,
        after: str | None = None,
        limit: int = 100,
        data: tuple[str, str] | None = None,
    ) -> Page:
        """One page of resources, oldest first; filters combine (several states: any of them).

        ``data`` is a top-level data key and the text it holds: ``("ended", "failed")``.
        """
        params: Json = {
            "kind": kind,
            "state": [state] if isinstance(state, str) else (builtins.list(state) if state else None),
            "desiredState": desired_state,
            "party": party,
            "data": None if data is None else f"{data[0]}:{data[1]}",
            "after": after,
            "limit": limit,
        }
        page = self._transport.json_object("GET", "/v1/resources", params=params)
        return Page(tuple(page.get("items") or ()), page.get("next"))

    def iter(
        self,
        *,
        kind: str | None = None,
        state: str | Sequence[str] | None = None,
        desired_state: str | None = None,
        party: str | None = None,
        page_size: int = 100,
    ) -> Iterator[Json]:
        """Every matching resource, oldest first, fetching a page at a time as the loop needs it."""
        after: str | None = None
        while True:
            page = self.list(
                kind=kind, state=state, desired_state=desired_state, party=party, after=after, limit=page_size
            )
            yield from page.items
            if page.next is None:
                return
            after = page.next

    def fire(
        self,
        resource_id: str,
        event: str,
        data: Mapping[str, Any] | None = None,
        if_version: int | None = None,
    ) -> Json:
        """Fire an event; ``data`` is merged into the resource's data.

        Refused with 409 when the state does not allow the event, and with 412 when ``if_version``
        is given and the resource has moved past it.
        """
        body: Json = {"event": event}
        if data is not None:
            body["data"] = dict(data)
        return self._transport.json_object(
            "POST", f"/v1/resources/{_segment(resource_id)}/events", body=body, headers=_etag(if_version)
        )

    def set_desired_state(self, resource_id: str, state: str | None, if_version: int | None = None) -> Json:
        """Say which state the resource should end up in (None: no wish); the engine gets it there."""
        return self._transport.json_object(
            "PUT",
            f"/v1/resources/{_segment(resource_id)}/desired-state",
            body={"desiredState": state},
            headers=_etag(if_version),
        )

    # --- sharing -------------------------------------------------------------------------------

    def use(self, resource_id: str, party: str, ttl: float | None = None) -> Json:
        """Register ``party`` as using the resource, or renew its use, for ``ttl`` seconds (None: the
        provider's default). Returns the use (``party``, ``client``, ``registeredAt``, ``expiresAt``).

        Refused with 409 when the resource is not sharable and another party uses it, or its teardown
        has started; with 403 when another client registered ``party``.
        """
        body = None if ttl is None else {"ttlSeconds": int(ttl)}
        return self._transport.json_object("PUT", _party_path(resource_id, party), body=body)

    def release(self, resource_id: str, party: str) -> None:
        """Release ``party``'s use (404 if it does not use the resource); the last one may start a teardown."""
        self._transport.call("DELETE", _party_path(resource_id, party))

    def parties(self, resource_id: str) -> builtins.list[Json]:
        """The parties whose use of the resource is live, with their client and expiry."""
        return self._transport.json_array("GET", f"/v1/resources/{_segment(resource_id)}/parties")

    def patch(self, resource_id: str, body: Mapping[str, Any], if_match: int | None = None) -> Json:
        """Merge-patch the resource (RFC 7396): ``{"inUseBy": {party: {"ttlSeconds": n} | None}}`` and/or
        ``{"desiredState": state}``, in one write; returns the resource."""
        return self._transport.json_object(
            "PATCH",
            f"/v1/resources/{_segment(resource_id)}",
            body=dict(body),
            headers={"Content-Type": MERGE_PATCH, **_etag(if_match)},
        )

    def force_teardown(self, resource_id: str, reason: str | None = None) -> Json:
        """Tear the resource down whoever still uses it (admin scope); the journal names the parties."""
        body: Json = {"force": True}
        if reason is not None:
            body["reason"] = reason
        return self._transport.json_object("POST", f"/v1/resources/{_segment(resource_id)}/teardown", body=body)

    def retry_now(self, resource_id: str, if_version: int | None = None) -> Json:
        """Make the next attempt of a step backing off after a failure due now (admin scope).

        Refused with 409 (``retry-not-allowed``, naming the state and its role) unless the resource is
        in a work state, or a rest state on its way to a desired state, whose next attempt is scheduled
        later, and with 412 when ``if_version`` is given and the resource has moved past it.
        """
        return self._transport.json_object(
            "POST", f"/v1/resources/{_segment(resource_id)}/retry", headers=_etag(if_version)
        )

    def journal(self, resource_id: str, after_version: int = 0, limit: int = 100) -> JournalPage:
        """One page of the resource's history, oldest first, after ``after_version``."""
        page = self._transport.json_object(
            "GET",
            f"/v1/resources/{_segment(resource_id)}/journal",
            params={"afterVersion": after_version, "limit": limit},
        )
        return JournalPage(tuple(page.get("items") or ()), page.get("nextAfterVersion"))

    def history(self, resource_id: str, page_size: int = 100) -> Iterator[Json]:
        """The resource's whole journal, oldest first, a page at a time."""
        after = 0
        while True:
            page = self.journal(resource_id, after_version=after, limit=page_size)
            yield from page.items
            if page.next_after_version is None:
                return
            after = page.next_after_version

    def waits(self, resource_id: str) -> builtins.list[Json]:
        """What the resource waits for: awaited keys, deadline, the answers so far."""
        return self._transport.json_array("GET", f"/v1/resources/{_segment(resource_id)}/waits")

    def flows(self, resource_id: str) -> builtins.list[Json]:
        """The resource's flow runs with each task's checkpoint."""
        return self._transport.json_array("GET", f"/v1/resources/{_segment(resource_id)}/flows")

    def callback(
        self,
        resource_id: str,
        token: str,
        key: str,
        status: str,
        data: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> Json:
        """Answer one awaited key with the correlation token of the attempt that asked.

        ``status`` is ``done``, ``failed`` or ``retry``. Returns the receipt (``delivery``:
        ``accepted`` or ``duplicate``); a refused callback raises :class:`ApiError`.
        """
        body: Json = {"resourceId": resource_id, "token": token, "key": key, "status": str(status)}
        if data is not None:
            body["data"] = dict(data)
        if error is not None:
            body["error"] = error
        return self._transport.json_object("POST", "/v1/callbacks", body=body)

    def watch(
        self,
        *,
        kind: str | None = None,
        resource: str | None = None,
        state: str | None = None,
        after: str | None = None,
        reconnects: int = 5,
        on_connect: Callable[[], None] | None = None,
    ) -> Watch:
        """Changes as they are committed, from the ``/v1/watch`` event stream.

        Without ``after`` the stream starts from now; ``after="beginning"`` replays the whole
        journal first; a :attr:`Change.position` continues after that change. A dropped connection
        is resumed with ``Last-Event-ID`` (none missed, none twice), giving up after ``reconnects``
        failures in a row. ``on_connect`` runs after every (re)connection, before any of its
        changes: a caller that reads the current state there misses nothing in between.
        """
        params = {"kind": kind, "resource": resource, "state": state, "after": after}
        return Watch(self._transport, {k: v for k, v in params.items() if v is not None}, reconnects, on_connect)


def _segment(value: str) -> str:
    # An id with a '/' or '?' must not reach another route.
    return quote(value, safe="")


def _party_path(resource_id: str, party: str) -> str:
    # The party URI is one percent-encoded segment: its '/' and ':' never reach another route.
    return f"/v1/resources/{_segment(resource_id)}/parties/{_segment(party)}"


def _etag(version: int | None) -> dict[str, str]:
    return {} if version is None else {"If-Match": f'"{version}"'}
