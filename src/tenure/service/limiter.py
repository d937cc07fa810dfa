"""Slowing down token guessing: failed token checks per client address, and across all addresses.

Every way a client token is checked goes through one :class:`SignInLimiter` per app
(:func:`limiter_of`): the dashboard's sign-in form, a bearer token on a dashboard page, and a bearer
token on the API (:func:`authenticate`). A token that names no client is a failed check, recorded for
the client's address. After :data:`MAX_FAILED_SIGN_INS` failed checks from one address within
:data:`SIGN_IN_WINDOW` seconds, no token from that address is checked until the oldest of them is that
old: the form answers 429, the API a 429 problem, both with ``Retry-After``, whatever token is sent
(even a valid one: an answer that told valid from invalid would let the guessing go on). A success
does not wipe an address's record (one valid token must not buy more guesses at others).

What is counted is guesses:

* a token is counted once per address within the window: a client retrying with the one stale token
  it was configured with is told 401 each time, and does not lock out its neighbours;
* an IPv6 address counts by its /64 (one host commonly holds a whole /64), an IPv4 address as it is
  (an IPv4-mapped IPv6 address as its IPv4 address);
* many addresses do not multiply the guesses: after :data:`MAX_FAILED_OVERALL` failed checks of
  distinct tokens from all addresses together within the window, no token is checked for an address
  that has not authenticated successfully within the window either. An address that has keeps its
  own limit, so that a flood of bad tokens from elsewhere does not lock out the clients already at
  work (a client holding a valid token can still guess only at its own address's pace).

The address is the connection's peer. ``tenure serve`` does not take ``X-Forwarded-For`` from anyone
(uvicorn runs with ``proxy_headers=False``), so a client cannot pick an address per request; behind a
reverse proxy every client shares the proxy's address (and its limit).

The records live in memory, bounded (the least recent addresses are forgotten first); a restart forgets
them.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from starlette.requests import Request

from tenure.service.config import Principal, ServiceConfig
from tenure.service.problems import TOO_MANY_FAILURES, ProblemError

__all__ = [
    "MAX_ADDRESSES",
    "MAX_FAILED_OVERALL",
    "MAX_FAILED_SIGN_INS",
    "SIGN_IN_WINDOW",
    "Refusal",
    "SignInLimiter",
    "address_key",
    "app_object",
    "authenticate",
    "client_address",
    "limiter_of",
]

#: Failed checks of distinct tokens one client address may make within :data:`SIGN_IN_WINDOW` seconds.
MAX_FAILED_SIGN_INS = 10
#: Failed checks of distinct tokens all addresses together may make within the window.
MAX_FAILED_OVERALL = 100
SIGN_IN_WINDOW = 300.0
#: The most client addresses whose failures (or successes) are remembered; the least recent go first.
MAX_ADDRESSES = 10_000

T = TypeVar("T")

_made = threading.Lock()


def app_object(request: Request, name: str, make: Callable[[], T]) -> T:
    """The object the app keeps on its state as ``name``, made by ``make`` on first use (once, under a lock)."""
    state = request.app.state
    found: T | None = getattr(state, name, None)
    if found is None:
        with _made:
            found = getattr(state, name, None)
            if found is None:
                found = make()
                setattr(state, name, found)
    return found


# Asked on every authenticated request, where parsing the address cost more than the rest of the check.
@functools.lru_cache(maxsize=4096)
def address_key(host: str) -> str:
    """What failures are counted by: an IPv4 address, or an IPv6 address's /64 (``2001:db8::/64``)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host  # not an address (a test client's name, "unknown"): itself
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


def client_address(request: Request) -> str:
    """The connection's peer address (never a forwarded header), as :func:`address_key` counts it."""
    return address_key(request.client.host if request.client is not None else "unknown")


def _span(seconds: float) -> str:
    """A duration for a message: whole minutes when it is some, else seconds."""
    whole = math.ceil(seconds)
    if whole >= 60 and whole % 60 == 0:
        minutes = whole // 60
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{whole} second{'s' if whole != 1 else ''}"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why no token is checked now, and for how long (whole seconds, at least one)."""

    seconds: int
    #: The limit that was reached, for a message: "from this address (10 within 5 minutes)".
    limit: str

    @property
    def message(self) -> str:
        return f"Too many failed token checks {self.limit}: try again in {_span(self.seconds)}. No token was checked."


class SignInLimiter:
    """Failed token checks per client address and overall, in a sliding window, on an injectable monotonic clock.

    :meth:`refusal` says whether (and how long) an address must wait before a token of it is checked;
    :meth:`failed` records a failed check and :meth:`succeeded` a successful one. Only the last
    ``limit`` failures per address and the last ``overall`` in all are kept.
    """

    def __init__(
        self,
        limit: int = MAX_FAILED_SIGN_INS,
        window: float = SIGN_IN_WINDOW,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = MAX_ADDRESSES,
        overall: int = MAX_FAILED_OVERALL,
    ) -> None:
        self.limit = limit
        self.window = window
        self.overall = overall
        self._clock = clock
        self._max_addresses = max_addresses
        #: Per address: (time, token digest) of its latest distinct failures, oldest first.
        self._failures: OrderedDict[str, deque[tuple[float, bytes]]] = OrderedDict()
        #: Of every address: (time, token digest) of the latest distinct failures, oldest first.
        self._all: deque[tuple[float, bytes]] = deque(maxlen=overall)
        #: Per address: when a token of it was last checked and valid.
        self._succeeded: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def refusal(self, address: str) -> Refusal | None:
        """Why tokens from ``address`` are not checked now, or None when they are."""
        now = self._clock()
        with self._lock:
            self._expire(now)
            times = self._recent(address, now)
            if times is not None and len(times) >= self.limit:
                return Refusal(self._left(times[0][0], now), f"from this address ({self.limit} within {self._per()})")
            if len(self._all) >= self.overall and address not in self._succeeded:
                return Refusal(
                    self._left(self._all[0][0], now),
                    f"from all addresses together ({self.overall} within {self._per()})",
                )
        return None

    def wait(self, address: str) -> float:
        """Seconds until a token from ``address`` is checked again (0.0: now)."""
        found = self.refusal(address)
        return 0.0 if found is None else float(found.seconds)

    def failed(self, address: str, token: str) -> None:
        """Record that ``token`` from ``address`` named no client (counted once per address within the window)."""
        now = self._clock()
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()[:16]
        with self._lock:
            self._expire(now)
            times = self._recent(address, now) or deque(maxlen=self.limit)
            self._failures.pop(address, None)
            self._failures[address] = times  # the most recent last
            if any(d == digest for _, d in times):
                return
            times.append((now, digest))
            if all(d != digest for _, d in self._all):
                self._all.append((now, digest))
            while len(self._failures) > self._max_addresses:
                self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        """Record that a token from ``address`` was valid."""
        now = self._clock()
        with self._lock:
            self._succeeded.pop(address, None)
            self._succeeded[address] = now
            while len(self._succeeded) > self._max_addresses:
                self._succeeded.popitem(last=False)

    def _expire(self, now: float) -> None:
        """Forget what left the window, from the least recent end of each record (amortised constant time)."""
        edge = now - self.window
        while self._all and self._all[0][0] <= edge:
            self._all.popleft()
        while self._failures:
            times = next(iter(self._failures.values()))
            if times and times[-1][0] > edge:
                break
            self._failures.popitem(last=False)
        while self._succeeded and next(iter(self._succeeded.values())) <= edge:
            self._succeeded.popitem(last=False)

    def _recent(self, address: str, now: float) -> deque[tuple[float, bytes]] | None:
        """``address``'s failures still in the window (None: none)."""
        times = self._failures.get(address)
        if times is None:
            return None
        while times and times[0][0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[address]
            return None
        return times

    def _left(self, oldest: float, now: float) -> int:
        return max(1, math.ceil(oldest + self.window - now))

    def _per(self) -> str:
        return _span(self.window)


def limiter_of(request: Request) -> SignInLimiter:
    """The app's limiter of token checks (made on first use, kept on the app's state)."""
    return app_object(request, "sign_ins", SignInLimiter)


def authenticate(request: Request, config: ServiceConfig, token: str) -> Principal | None:
    """The client ``token`` names (None: none), checked through the app's limiter.

    Raises the 429 problem (with ``Retry-After``) without checking the token while the client's
    address, or every address, has failed too often.
    """
    limiter, address = limiter_of(request), client_address(request)
    refused = limiter.refusal(address)
    if refused is not None:
        raise ProblemError(
            TOO_MANY_FAILURES,
            refused.message,
            {"retry_after": refused.seconds},
            headers={"Retry-After": str(refused.seconds)},
        )
    found = config.authenticate(token)
    if found is None:
        limiter.failed(address, token)
    else:
        limiter.succeeded(address)
    return found
