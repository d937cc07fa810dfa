"""The control plane's signaling client (seed 001): tell a data plane to prepare, start, suspend or terminate.

The wire contract is ``docs/signaling.md``: ``POST {data plane url}/v1/signaling/{signal}`` with a
bearer token and a JSON body naming the transfer and the callback to use; the answer, at once, says
whether the data plane started an asynchronous operation (``async``) and how the flow stands. The
contract's names are declared here once, for both sides: :data:`SIGNALS` and
:data:`TRANSFER_ID_PATTERN` (the data plane's API and its ``dataflow`` kind import them). A
step of a kind (the ``transfer`` of :mod:`tenure.kinds.transfer_v2`) depends on the
:class:`DataPlaneClient` protocol only; :class:`HttpDataPlane` speaks it over HTTP.

How an answer that is not one maps onto a step's outcome:

* no connection, a timeout, ``408``, ``425``, ``429`` or ``5xx``: :class:`~tenure.engine.outcome.Retryable`
  (the step backs off and asks again; a ``Retry-After`` in seconds is honoured, up to a cap, instead of
  the backoff: a data plane answers ``503`` with ``Retry-After: 1`` while a flow finishes reporting
  its last operation, and the step asks again a second later);
* any other ``4xx`` (``404`` no flow, ``409`` not allowed in the flow's state, ``422`` malformed,
  ``401``/``403`` a token the data plane does not take): :class:`SignalRefused`, a
  :class:`~tenure.engine.outcome.Fatal` quoting the problem document's ``detail``;
* a ``200`` that is not such an answer: :class:`SignalRefused` too (asking again would not help).

Which statuses are retried is :func:`tenure.engine.answers.verdict`'s call, as for every party tenure
calls over HTTP. The callback token in the body and the bearer token are secrets: neither appears in
an error or a log line, even when the data plane echoes them back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import TracebackType
from typing import Any, Protocol

import httpx

from tenure.engine.answers import Verdict, problem_detail, public_url, quoted, retry_after, scrub, verdict
from tenure.engine.outcome import Fatal, Retryable
from tenure.engine.planes import DataPlaneRef, Signaling
from tenure.errors import InvalidArgument

__all__ = [
    "SIGNALS",
    "TRANSFER_ID_PATTERN",
    "DataPlaneClient",
    "HttpDataPlane",
    "SignalAnswer",
    "SignalRefused",
    "close_dataplanes",
    "dataplanes",
]

log = logging.getLogger("tenure.engine.signaling")

#: The signals a data plane answers, in the order a transfer's life uses them.
SIGNALS = ("prepare", "start", "suspend", "terminate")
#: What a transfer id is on the wire; a data plane's flow for the transfer has it as its id.
TRANSFER_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"

#: How much of a response an error quotes.
_SNIPPET = 300
#: The longest ``Retry-After`` honoured (a longer one is cut to this).
_MAX_RETRY_AFTER = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class SignalAnswer:
    """A data plane's answer to a signal.

    ``async_``: it started an operation (provisioning or deprovisioning) and will call back when it
    ends; otherwise the control plane goes on at once. ``source`` and ``destination`` are the
    addresses as the data plane now has them (a provisioner may have changed them). ``replayed``:
    an earlier identical signal got this answer first.

    >>> SignalAnswer.from_json({"async": True, "state": "provisioning", "dataFlowId": "t-1"}).async_
    True
    """

    async_: bool
    state: str | None = None
    data_flow_id: str | None = None
    source: Mapping[str, Any] | None = field(default=None, compare=False)
    destination: Mapping[str, Any] | None = field(default=None, compare=False)
    replayed: bool = False

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> SignalAnswer:
        """The answer in a JSON document (raises ValueError naming what does not fit)."""
        asynchronous = doc.get("async")
        if not isinstance(asynchronous, bool):
            raise ValueError(f"'async' is {_kind_of(asynchronous)}; it must be true or false")
        state, flow, replayed = doc.get("state"), doc.get("dataFlowId"), doc.get("replayed", False)
        if state is not None and not isinstance(state, str):
            raise ValueError(f"'state' is {_kind_of(state)}; it must be text")
        if flow is not None and not isinstance(flow, str):
            raise ValueError(f"'dataFlowId' is {_kind_of(flow)}; it must be text")
        if not isinstance(replayed, bool):
            raise ValueError(f"'replayed' is {_kind_of(replayed)}; it must be true or false")
        addresses: dict[str, dict[str, Any] | None] = {}
        for name in ("source", "destination"):
            value = doc.get(name)
            if value is not None and not isinstance(value, dict):
                raise ValueError(f"{name!r} is {_kind_of(value)}; it must be an object")
            addresses[name] = value
        return cls(asynchronous, state, flow, addresses["source"], addresses["destination"], replayed)

    def to_json(self) -> dict[str, Any]:
        """The answer as the wire has it (camelCase)."""
        return {
            "async": self.async_,
            "state": self.state,
            "dataFlowId": self.data_flow_id,
            "source": None if self.source is None else dict(self.source),
            "destination": None if self.destination is None else dict(self.destination),
            "replayed": self.replayed,
        }


class DataPlaneClient(Protocol):
    """Sends one signal to one data plane and returns its answer.

    Raises :class:`~tenure.engine.outcome.Retryable` when asking again later may help (the data
    plane is unreachable or overloaded) and :class:`~tenure.engine.outcome.Fatal` when it will not.
    """

    def signal(self, signal: str, body: Mapping[str, Any], /) -> SignalAnswer: ...


class SignalRefused(Fatal):
    """The data plane refused a signal for good (a ``4xx``), or answered with something that is no answer.

    ``status`` is the HTTP status (0 when the answer was a ``200`` that could not be read), ``detail``
    the problem document's ``detail`` (or the start of the body). Neither carries a token.
    """

    def __init__(self, message: str, *, status: int, detail: str) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class HttpDataPlane:
    """A data plane's signaling API over HTTP (``ref``: its id, base URL and the token presented there).

    ``timeout`` bounds each request in seconds. Pass ``client`` to share an :class:`httpx.Client` (it is
    then not closed here); otherwise one is made, and :meth:`close` (or leaving a ``with`` block)
    closes it. Safe to use from several threads, as a worker's steps do.
    """

    def __init__(self, ref: DataPlaneRef, *, timeout: float = 10.0, client: httpx.Client | None = None) -> None:
        try:
            url = httpx.URL(ref.url)
        except (httpx.InvalidURL, TypeError):
            url = None
        if url is None or url.scheme not in ("http", "https") or not url.host:
            shown = "<invalid URL>" if url is None else _public(url)
            raise InvalidArgument(f"the URL of data plane {ref.id!r}", "must be an http:// or https:// URL", shown)
        if not timeout > 0:
            raise InvalidArgument("timeout", "must be a positive number of seconds", timeout)
        self.ref = ref
        self.id = ref.id
        self.timeout = timeout
        self._base = ref.url.rstrip("/")
        self._where = f"data plane {ref.id!r} ({_public(url)})"
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=timeout)
        self._closed = False

    def __repr__(self) -> str:
        return f"HttpDataPlane({self.id!r}, {_public(httpx.URL(self._base))!r})"

    # --- the client protocol --------------------------------------------------------------------

    def url(self, signal: str) -> str:
        """Where ``signal`` is POSTed."""
        return f"{self._base}/v1/signaling/{signal}"

    def signal(self, signal: str, body: Mapping[str, Any], /) -> SignalAnswer:
        """POST ``body`` as ``signal``; the data plane's answer (raises Retryable or SignalRefused)."""
        if signal not in SIGNALS:
            raise Fatal(f"{signal!r} is not a signal (signals: {', '.join(SIGNALS)})")
        if self._closed:
            raise Retryable(f"the client of {self._where} is closed")
        secrets = _secrets(body, self.ref.token)
        what = f"{signal} to {self._where}"
        headers = {"Accept": "application/json"}
        if self.ref.token:
            headers["Authorization"] = f"Bearer {self.ref.token}"
        try:
            response = self._client.post(self.url(signal), json=dict(body), headers=headers, timeout=self.timeout)
        except httpx.TimeoutException as exc:
            raise Retryable(f"{what} timed out ({type(exc).__name__}, limit {self.timeout:g}s)") from None
        except httpx.UnsupportedProtocol as exc:
            raise Fatal(f"{what}: cannot reach it: {scrub(str(exc), secrets)}") from None
        except httpx.RequestError as exc:
            detail = scrub(str(exc), secrets) or "no detail"
            raise Retryable(f"{what} failed: {type(exc).__name__}: {detail}") from None
        answer = self._interpret(what, response, body, secrets)
        log.debug(
            "signaled %s: async=%s state=%s replayed=%s",
            what,
            answer.async_,
            answer.state,
            answer.replayed,
            extra={"resource_id": body.get("transferId")},
        )
        return answer

    def _interpret(
        self, what: str, response: httpx.Response, body: Mapping[str, Any], secrets: tuple[str, ...]
    ) -> SignalAnswer:
        code = response.status_code
        judged = verdict(code)
        if judged is Verdict.RETRY:
            delay = retry_after(response, cap=_MAX_RETRY_AFTER)
            raise Retryable(f"{what}: HTTP {code}{quoted(_detail(response, secrets))}", delay=delay)
        if judged is Verdict.REFUSED and 400 <= code < 500:
            detail = _detail(response, secrets)
            raise SignalRefused(f"{what} was refused: HTTP {code}{quoted(detail)}", status=code, detail=detail)
        if code != 200:
            detail = _detail(response, secrets)
            raise SignalRefused(
                f"{what}: HTTP {code} is not an answer to a signal (expected 200){quoted(detail)}",
                status=code,
                detail=detail,
            )
        try:
            doc = json.loads(response.content)
            if not isinstance(doc, dict):
                raise ValueError("the body is not a JSON object")
            answer = SignalAnswer.from_json(doc)
            sent, answered = body.get("transferId"), doc.get("transferId")
            if answered is not None and sent is not None and answered != sent:
                raise ValueError(f"it answers for transfer {_short(answered, secrets)}, not {sent!r}")
        except ValueError as exc:
            detail = scrub(str(exc), secrets)
            raise SignalRefused(f"{what}: the answer cannot be read: {detail}", status=0, detail=detail) from None
        return answer

    # --- lifetime ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the HTTP client, if this object made it (idempotent)."""
        self._closed = True
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> HttpDataPlane:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def dataplanes(signaling: Signaling, *, timeout: float = 10.0) -> dict[str, HttpDataPlane]:
    """One :class:`HttpDataPlane` per data plane ``signaling`` configures, by id (close them with
    :func:`close_dataplanes`)."""
    made: dict[str, HttpDataPlane] = {}
    try:
        for ref in signaling.dataplanes:
            if ref.id in made:
                raise InvalidArgument("dataplanes", f"name {ref.id!r} twice; each data plane has one id", ref.id)
            made[ref.id] = HttpDataPlane(ref, timeout=timeout)
    except BaseException:
        close_dataplanes(made)
        raise
    return made


def close_dataplanes(planes: Mapping[str, object]) -> None:
    """Close every client in ``planes`` that can be closed."""
    for plane in planes.values():
        close = getattr(plane, "close", None)
        if callable(close):
            close()


# --- helpers ------------------------------------------------------------------------------------


def _secrets(body: Mapping[str, Any], bearer: str | None) -> tuple[str, ...]:
    """The secrets that must not appear in any message: the callback token and the bearer token."""
    callback = body.get("callback")
    token = callback.get("token") if isinstance(callback, Mapping) else None
    return tuple(s for s in (token, bearer) if isinstance(s, str) and s)


def _detail(response: httpx.Response, secrets: tuple[str, ...]) -> str:
    """The problem document's ``detail`` (or ``title``), else the start of the body; on one line, scrubbed."""
    return problem_detail(response, secrets, limit=_SNIPPET)


def _kind_of(value: object) -> str:
    """What ``value`` is, without quoting it (it might carry a secret)."""
    return "missing" if value is None else f"a JSON {type(value).__name__}"


def _short(value: object, secrets: tuple[str, ...]) -> str:
    """``value`` quoted, scrubbed of ``secrets`` before it is cut short."""
    text = scrub(repr(value), secrets)
    return text if len(text) <= 60 else text[:57] + "..."


def _public(url: httpx.URL) -> str:
    """``url`` without credentials, query, fragment or a trailing slash: safe for messages."""
    return public_url(url).rstrip("/")
