"""The deliverer: sends the changes each webhook subscription asks for, at least once, in order.

A :class:`Deliverer` claims subscriptions that are behind the change feed (a lease: one deliverer
at a time per subscription, whatever the number of processes), reads the feed after each one's
cursor, and POSTs every matching change as JSON, one at a time, in feed order. The cursor moves past
a change only once the subscriber answered 2xx (see :mod:`tenure.store.subscriptions`, and why the
journal is the outbox). A connection error, a timeout, a redirect or any other status is a failed
attempt: the subscription backs off exponentially with jitter (1 s doubling to 5 minutes) and is
tried again for ever, from the same change, with the same delivery id. Nothing is dropped, and no
write ever waits for a subscriber.

Each request carries::

    Content-Type: application/json
    Tenure-Delivery: <subscription id>:<resource id>:<version>   the same for every attempt: de-duplicate by it
    Tenure-Subscription: <subscription id>
    Tenure-Timestamp: <unix seconds>
    Tenure-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>

and a body ``{"deliveryId", "subscriptionId", "position", "resourceId", "kind", "version", "event",
"fromState", "toState", "actor", "at", "detail"}``. Receivers check the signature with
:func:`verify_signature`. Redirects are not followed (a subscriber gives its final URL).

The deliverer wakes when the journal grows (the store's change signal) and on its own schedule
(backoffs coming due, leases lapsing, and a poll as a fallback).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import httpx

from tenure.clock import Clock
from tenure.engine.guard import RoundGuard
from tenure.engine.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, verify_signature
from tenure.engine.worker import default_worker_name
from tenure.errors import InvalidArgument, TenureError
from tenure.machine import Backoff, Kind
from tenure.store.database import Database
from tenure.store.feed import Change, Changes
from tenure.store.signal import Listener, WorkSignal
from tenure.store.subscriptions import Subscription, Subscriptions

__all__ = [
    "DELIVERY_BACKOFF",
    "Deliverer",
    "DeliveryStats",
    "DeliveryStore",
    "delivery_body",
    "delivery_id",
    "verify_signature",
]

log = logging.getLogger("tenure.engine.deliveries")

#: How failed deliveries are spaced: 1 s doubling to 5 minutes, each drawn from [delay/2, delay].
#: Only the delay is used: deliveries are retried for ever (``max_attempts`` does not apply).
DELIVERY_BACKOFF = Backoff(base=timedelta(seconds=1), factor=2.0, cap=timedelta(minutes=5), jitter=0.5)
#: How much of a refusing subscriber's answer the recorded error quotes.
_SNIPPET = 200
#: While deliveries are in flight, how often the loop looks for free slots.
_BUSY_POLL = 0.05


class DeliveryStore(Protocol):
    """What the deliverer needs from a store: its database and clock, the change feed and its signal."""

    changed: WorkSignal

    @property
    def database(self) -> Database: ...

    @property
    def kinds(self) -> Mapping[str, Kind]: ...

    def now(self) -> datetime: ...

    def changes(
        self,
        after: str | None = None,
        *,
        kind: str | None = None,
        resource_id: str | None = None,
        state: str | None = None,
        limit: int = 100,
    ) -> Changes: ...

    def latest_position(self) -> str: ...

    def listen(self) -> Listener | None: ...


@dataclass
class DeliveryStats:
    """Counters of what a deliverer did (they only grow)."""

    rounds: int = 0
    claimed: int = 0
    delivered: int = 0
    failed: int = 0
    claims_lost: int = 0
    store_errors: int = 0
    engine_errors: int = 0


def delivery_id(sub: Subscription, change: Change) -> str:
    """The id of the delivery of ``change`` to ``sub``: the same for every attempt."""
    return f"{sub.id}:{change.resource_id}:{change.version}"


def delivery_body(sub: Subscription, change: Change) -> bytes:
    """The JSON document POSTed for ``change`` (compact, UTF-8)."""
    doc: dict[str, Any] = {
        "deliveryId": delivery_id(sub, change),
        "subscriptionId": sub.id,
        "position": change.position,
        "resourceId": change.resource_id,
        "kind": change.kind,
        "version": change.version,
        "event": change.event,
        "fromState": change.from_state,
        "toState": change.to_state,
        "actor": change.actor,
        "at": change.at.isoformat(),
        "detail": dict(change.detail),
    }
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


class Deliverer:
    """Delivers the store's changes to its webhook subscriptions, ``concurrency`` subscriptions at once.

    ``clock`` (default: the store's) dates leases, retries and signatures; ``transport`` replaces
    httpx's network transport (tests); ``timeout`` bounds each request in seconds; a claim lasts
    ``lease`` and is renewed by every delivery; ``batch`` changes are read per query, and at most
    ``per_claim`` delivered before a subscription is handed back for others to have their turn.
    """

    def __init__(
        self,
        store: DeliveryStore,
        *,
        name: str | None = None,
        clock: Clock | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 5.0,
        lease: timedelta = timedelta(seconds=60),
        concurrency: int = 4,
        batch: int = 100,
        per_claim: int = 1000,
        backoff: Backoff = DELIVERY_BACKOFF,
        poll_interval: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if concurrency < 1:
            raise InvalidArgument("concurrency", "must be at least 1", concurrency)
        if lease <= timedelta(0):
            raise InvalidArgument("lease", "must be a positive duration", lease)
        if timeout <= 0:
            raise InvalidArgument("timeout", "must be a positive number of seconds", timeout)
        self.store = store
        self.name = name or f"deliverer:{default_worker_name()}"
        self._clock: Clock = clock or store.now
        self.subscriptions = Subscriptions(store.database, self._clock, kinds=self._kind)
        self.timeout = timeout
        self.lease = lease
        self.concurrency = concurrency
        self.batch = batch
        self.per_claim = per_claim
        self.backoff = backoff
        self._poll_interval = poll_interval
        self._rand = rand
        self.stats = DeliveryStats()
        # Redirects are not followed: a signed delivery goes only where the subscriber said.
        self._http = httpx.Client(transport=transport, timeout=timeout, follow_redirects=False)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._inflight: dict[str, Future[int]] = {}

    def _kind(self, name: str) -> Kind | None:
        # Looked up each time: the store's kinds are a copy, and kinds may be registered later.
        return self.store.kinds.get(name)

    # --- running -------------------------------------------------------------------------------

    def start(self) -> Deliverer:
        """Run the loop in a background thread (stop it with :meth:`stop`)."""
        self._thread = threading.Thread(target=self.run, name=f"tenure-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, *, timeout: float = 10.0) -> None:
        """Stop claiming, let deliveries in flight finish (each within its request timeout), close."""
        self._stopping.set()
        self.store.changed.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout + self.timeout)
        self._http.close()

    def run(self) -> None:
        """The loop: claim subscriptions behind the feed and deliver, until :meth:`stop`."""
        listener = self.store.listen()
        # PostgreSQL's feed may hold a notified change back behind an older transaction still running:
        # look again soon. Elsewhere the notification is enough, and the poll only a fallback.
        slow = listener is not None and self.store.database.dialect != "postgres"
        poll = self._poll_interval if self._poll_interval is not None else (5.0 if slow else 1.0)
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"tenure-{self.name}")
        log.info("deliverer %s started, %d subscriptions at once", self.name, self.concurrency)
        guard = RoundGuard(f"deliverer {self.name}", self.stats, self._stopping, log)
        try:
            while not self._stopping.is_set():
                seen = self.store.changed.seq
                full = guard.run(lambda: self._round(pool))
                if full is False:
                    self.store.changed.wait(seen, _BUSY_POLL if self._inflight else self._sleep(poll))
        finally:
            pool.shutdown(wait=True)
            log.info("deliverer %s stopped: %d delivered", self.name, self.stats.delivered)

    def _round(self, pool: ThreadPoolExecutor) -> bool:
        """Claim what the free slots can take; True when every slot was filled (more may be due)."""
        self.stats.rounds += 1
        for sub_id in [s for s, f in self._inflight.items() if f.done()]:
            del self._inflight[sub_id]
        free = self.concurrency - len(self._inflight)
        if free <= 0:
            return False
        claimed = self.subscriptions.claim_due(
            self.name, limit=free, lease=self.lease, head=self.store.latest_position()
        )
        for sub in claimed:
            self.stats.claimed += 1
            self._inflight[sub.id] = pool.submit(self.deliver, sub)
        return len(claimed) == free

    def _sleep(self, poll: float) -> float:
        due = self.subscriptions.next_due()
        if due is None:
            return poll
        return max(0.05, min(poll, (due - self._clock()).total_seconds()))

    def tick(self) -> int:
        """Claim and deliver synchronously, once; returns how many requests were sent (for tests)."""
        head = self.store.latest_position()
        sent = 0
        for sub in self.subscriptions.claim_due(self.name, limit=self.batch, lease=self.lease, head=head):
            self.stats.claimed += 1
            sent += self.deliver(sub)
        return sent

    def run_until_idle(self, *, max_rounds: int = 1000) -> int:
        """Tick until nothing is due now; returns the requests sent."""
        total = 0
        for _ in range(max_rounds):
            sent = self.tick()
            total += sent
            if not sent:
                return total
        raise InvalidArgument("max_rounds", f"was too few: still busy after {max_rounds} rounds", max_rounds)

    # --- one subscription ----------------------------------------------------------------------

    def deliver(self, sub: Subscription) -> int:
        """Send ``sub``'s pending changes in order until one fails or none is left; returns requests sent.

        ``sub`` must be claimed by this deliverer. The claim is handed back at the end.
        """
        subs, sent = self.subscriptions, 0
        position, failures = sub.position, sub.attempts
        try:
            while sent < self.per_claim and not self._stopping.is_set():
                page = self._page(sub, position)
                for change in page.entries:
                    if not sub.matches(change):
                        continue
                    error = self._post(sub, change)
                    sent += 1
                    if error is not None:
                        self._failed(sub, failures + 1, error)
                        return sent
                    failures = 0
                    self.stats.delivered += 1
                    if not subs.record_success(sub.id, change.position, worker=self.name, lease=self.lease):
                        self._lost(sub)
                        return sent
                    position = change.position
                if page.position > position:
                    # What the filter left out is passed over, so that it is not read again.
                    if not subs.record_success(sub.id, page.position, worker=self.name, lease=self.lease, delivered=0):
                        self._lost(sub)
                        return sent
                    position = page.position
                if len(page.entries) < self.batch:
                    break
        except TenureError as exc:
            self.stats.store_errors += 1
            log.warning("deliverer %s: subscription %s: %s", self.name, sub.id, exc)
        finally:
            # Fenced: a no-op when the claim is already gone (a failure handed it back).
            try:
                subs.release(sub.id, worker=self.name)
            except TenureError as exc:
                log.warning("deliverer %s: could not release subscription %s: %s", self.name, sub.id, exc)
        return sent

    def _page(self, sub: Subscription, after: str) -> Changes:
        # The feed filters what it can (a kind this store knows, one state); the rest is sub.matches.
        kind = sub.kind if sub.kind is not None and sub.kind in self.store.kinds else None
        state = sub.states[0] if kind is not None and sub.states is not None and len(sub.states) == 1 else None
        return self.store.changes(after, kind=kind, resource_id=sub.resource_id, state=state, limit=self.batch)

    def _post(self, sub: Subscription, change: Change) -> str | None:
        """POST one change; None when the subscriber answered 2xx, else what went wrong."""
        body = delivery_body(sub, change)
        stamp = int(self._clock().timestamp())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "tenure-webhooks",
            "Tenure-Delivery": delivery_id(sub, change),
            "Tenure-Subscription": sub.id,
            TIMESTAMP_HEADER: str(stamp),
            SIGNATURE_HEADER: sign(sub.secret, body, timestamp=stamp),
        }
        try:
            with self._http.stream("POST", sub.url, content=body, headers=headers) as answer:
                status = answer.status_code
                if 200 <= status < 300:
                    return None
                if 300 <= status < 400:
                    return f"answered {status} (a redirect, which is not followed: subscribe the final URL)"
                snippet = _snippet(answer)
        except httpx.TimeoutException:
            return f"no answer within {self.timeout:g}s"
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {str(exc).strip() or 'the request failed'}"
        return f"answered {status}" + (f": {snippet}" if snippet else "")

    def _failed(self, sub: Subscription, attempts: int, error: str) -> None:
        self.stats.failed += 1
        at = self._clock() + self.backoff.delay(attempts, self._rand())
        log.info(
            "deliverer %s: subscription %s, attempt %d failed (%s); next at %s", self.name, sub.id, attempts, error, at
        )
        if not self.subscriptions.record_failure(sub.id, error, at, worker=self.name):
            self._lost(sub)

    def _lost(self, sub: Subscription) -> None:
        self.stats.claims_lost += 1
        log.info("deliverer %s: subscription %s was deleted or taken over; stopped delivering it", self.name, sub.id)


def _snippet(answer: httpx.Response) -> str:
    """The start of a refusing answer's body, without reading all of a big one."""
    data = b""
    started = time.monotonic()
    for chunk in answer.iter_bytes():
        data += chunk
        if len(data) >= _SNIPPET or time.monotonic() - started > 1.0:
            break
    return data[:_SNIPPET].decode("utf-8", "replace").strip()
