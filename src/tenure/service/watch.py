"""``/v1/watch``: resource changes as Server-Sent Events, resumable with ``Last-Event-ID``.

Each event is one journal entry (``event: change``) whose ``id`` is its feed position. A client that
reconnects with the last id it saw (browsers' EventSource does so by itself) gets every change after
it, none twice and none missed: positions come from the store's commit-ordered feed. Without an id
the stream starts from now; ``after=beginning`` replays the whole journal first.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncIterator
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Header, Query, Request
from sse_starlette import EventSourceResponse

from tenure.errors import InvalidArgument
from tenure.service.auth import Caller
from tenure.service.bodies import JSONRoute
from tenure.service.models import ChangeOut
from tenure.service.problems import INVALID_CURSOR, ProblemError, problem_responses
from tenure.service.resources import Store, check_state_known
from tenure.store.protocol import Store as StoreProtocol

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["watch"], route_class=JSONRoute)

#: Entries read per query while catching up.
_BATCH = 200
#: Without a wake-up, how often a watcher looks anyway (another process may have written).
_POLL = 1.0
#: Seconds between keep-alive comments on an idle stream.
_PING = 15


class Wakeups:
    """Turns the store's change signal (a thread-side condition) into wake-ups for async watchers."""

    def __init__(self, store: StoreProtocol) -> None:
        self.store = store
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def _relay(self) -> None:
        signal = self.store.changed
        seen = signal.seq
        while not self._stop.is_set():
            signal.wait(seen, 1.0)
            if signal.seq == seen:
                continue
            seen = signal.seq
            with self._lock:
                waiters = list(self._waiters)
            for loop, event in waiters:
                loop.call_soon_threadsafe(event.set)

    def close(self) -> None:
        self._stop.set()

    async def wait(self, seen: int, timeout: float) -> None:
        """Return when the store's change signal moves past ``seen``, or after ``timeout`` seconds."""
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._relay, name="tenure-watch", daemon=True)
                    self._thread.start()
        event = asyncio.Event()
        entry = (asyncio.get_running_loop(), event)
        with self._lock:
            self._waiters.add(entry)
        try:
            if self.store.changed.seq != seen:
                return
            with anyio.move_on_after(timeout):
                await event.wait()
        finally:
            with self._lock:
                self._waiters.discard(entry)


@router.get(
    "/watch",
    summary="Stream resource changes (Server-Sent Events), resumable with Last-Event-ID",
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}},
        **problem_responses(400, 401, 403, 422, 503),
    },
)
async def watch(
    request: Request,
    store: Store,
    caller: Caller,
    kind: Annotated[str | None, Query(max_length=100)] = None,
    resource: Annotated[str | None, Query(max_length=64, description="Only this resource's changes")] = None,
    state: Annotated[str | None, Query(max_length=100, description="Only changes into this state")] = None,
    after: Annotated[
        str | None, Query(max_length=100, description="Start after this position ('beginning': replay everything)")
    ] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=100)] = None,
) -> EventSourceResponse:
    start = last_event_id or after
    position: str | None = None if start in (None, "beginning") else start
    if kind is None and state is not None:
        # As the list endpoint does: a state no loaded kind has is refused, not watched for ever.
        check_state_known(store, state)
    try:
        # The filters and the position are checked before the answer starts: once it has, a refusal
        # could only break the stream (and a browser would reconnect to it again and again).
        await anyio.to_thread.run_sync(
            functools.partial(store.changes, position, kind=kind, resource_id=resource, state=state, limit=1)
        )
    except InvalidArgument as exc:
        if exc.field == "after":
            given = "Last-Event-ID" if last_event_id else "after"
            raise ProblemError(
                INVALID_CURSOR,
                f"{given} must be the id of an event this service's stream sent (32 lowercase hexadecimal "
                "digits, as its 'id:' lines give them), or 'beginning' to replay everything; "
                f"got {str(start)[:100]!r}",
                {"field": given, "value": str(start)[:100]},
            ) from None
        raise
    if start is None:
        position = await anyio.to_thread.run_sync(store.latest_position)
    wakeups: Wakeups = request.app.state.wakeups

    async def stream() -> AsyncIterator[dict[str, str]]:
        nonlocal position
        if position is not None:
            # Where the stream starts, so that a client dropped before the first change resumes exactly.
            yield {"id": position, "event": "position", "data": position}
        while True:
            seen = store.changed.seq
            batch = await anyio.to_thread.run_sync(
                functools.partial(store.changes, position, kind=kind, resource_id=resource, state=state, limit=_BATCH)
            )
            for change in batch.entries:
                yield {"id": change.position, "event": "change", "data": ChangeOut.of_change(change).model_dump_json()}
            position = batch.position
            if len(batch.entries) >= _BATCH:
                continue
            if await request.is_disconnected():
                return
            await wakeups.wait(seen, _POLL)

    return EventSourceResponse(stream(), ping=_PING, headers={"Cache-Control": "no-store"})
