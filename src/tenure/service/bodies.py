"""The one rule every request body goes through: a JSON media type, UTF-8, strict JSON, not too deep.

FastAPI would read a body with Python's ``json`` module, which takes ``NaN``, ``Infinity`` and numbers
that overflow to infinity (``1e400``) although JSON (RFC 8259) has none of them; a later layer then
stored them as ``null`` or refused them, depending on the endpoint. Here every route that takes a
body (:class:`JSONRoute`, the routers' route class) reads it first and refuses, before anything is
written:

* a body whose ``Content-Type`` is missing or not ``application/json`` (or ``application/*+json``):
  415, naming the accepted types; a route whose body declares its own media type (``PATCH`` takes
  ``application/merge-patch+json``, RFC 7396) accepts that one only;
* bytes that are not UTF-8, text that is not JSON, or a number JSON cannot carry: 400 malformed-json,
  naming the position or the path and the token;
* JSON nested deeper than :data:`MAX_BODY_DEPTH` levels: 400 too-deeply-nested, naming the limit.

An empty body is left to the endpoint's model (which answers 422: the body is required).
"""

from __future__ import annotations

import email.message
import json
import math
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message

from tenure.rules import MAX_JSON_DEPTH
from tenure.service.problems import MALFORMED_JSON, TOO_DEEP, UNSUPPORTED_MEDIA, ProblemError

__all__ = ["ACCEPTED_MEDIA_TYPES", "MAX_BODY_DEPTH", "JSONRoute", "check_media_type", "parse_json"]

#: The media types a body may be sent as.
ACCEPTED_MEDIA_TYPES = ("application/json", "application/*+json")
#: How deep a body may nest: its own object, around a spec or data of at most MAX_JSON_DEPTH levels.
MAX_BODY_DEPTH = MAX_JSON_DEPTH + 1


class _NotJson:
    """Stands in for a token the parser met that JSON cannot carry, until its path is known."""

    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token


def _constant(token: str) -> _NotJson:
    return _NotJson(token)


def _float(text: str) -> float | _NotJson:
    value = float(text)
    return value if math.isfinite(value) else _NotJson(text)


def _int(text: str) -> int | _NotJson:
    try:
        return int(text)
    except ValueError:  # more digits than Python converts
        return _NotJson(text if len(text) <= 40 else f"{text[:20]}...({len(text)} digits)")


_DECODER = json.JSONDecoder(parse_constant=_constant, parse_float=_float, parse_int=_int)


def check_media_type(content_type: str | None, accepted: Sequence[str] = ACCEPTED_MEDIA_TYPES) -> None:
    """Refuse (415) a body that is not sent as one of the ``accepted`` JSON types, in UTF-8.

    ``application/*+json`` in ``accepted`` stands for every JSON-based type.
    """
    facts = {"accepted": list(accepted)}
    wanted = accepted[0]
    if not content_type:
        raise ProblemError(
            UNSUPPORTED_MEDIA,
            f"the body has no Content-Type; send it as 'Content-Type: {wanted}'",
            {**facts, "content_type": None},
        )
    message = email.message.Message()
    message["content-type"] = content_type
    charset = message.get_param("charset")
    sent = message.get_content_type()
    if not any(sent == media or (media == "application/*+json" and sent.endswith("+json")) for media in accepted):
        others = f" (or {', '.join(accepted[1:])})" if len(accepted) > 1 else ""
        raise ProblemError(
            UNSUPPORTED_MEDIA,
            f"the body is sent as {content_type[:100]!r}; send it as 'Content-Type: {wanted}'{others}",
            {**facts, "content_type": content_type[:100]},
        )
    if isinstance(charset, str) and charset.lower().replace("-", "") != "utf8":
        raise ProblemError(
            UNSUPPORTED_MEDIA,
            f"the body is sent in charset {charset[:40]!r}; send {wanted} in UTF-8 (charset=utf-8, or no charset)",
            {**facts, "content_type": content_type[:100]},
        )


def parse_json(body: bytes) -> Any:
    """``body`` as strict JSON (RFC 8259), or :class:`ProblemError` saying what is wrong and where."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProblemError(
            MALFORMED_JSON,
            f"the body is not valid JSON: it is not UTF-8 (byte 0x{body[exc.start]:02x} at position "
            f"{exc.start} cannot be decoded); send JSON encoded as UTF-8",
            {"position": exc.start},
        ) from None
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise ProblemError(
            MALFORMED_JSON,
            f"the body is not valid JSON: {exc.msg} at position {exc.pos} (line {exc.lineno}, column "
            f"{exc.colno}); send one JSON object",
            {"position": exc.pos},
        ) from None
    except RecursionError:
        raise _too_deep("$", None) from None
    _check(value)
    return value


def _too_deep(path: str, depth: int | None) -> ProblemError:
    path = _shown(path)
    deeper = "deeper than that" if depth is None else f"{depth} levels deep"
    return ProblemError(
        TOO_DEEP,
        f"the body nests objects and arrays {deeper} (at {path}); at most {MAX_BODY_DEPTH} levels are "
        f"accepted (a spec or data of at most {MAX_JSON_DEPTH})",
        {"path": path, "max_depth": MAX_BODY_DEPTH},
    )


def _check(value: Any) -> None:
    """Refuse a token JSON cannot carry, naming its path, and nesting deeper than the limit."""
    stack: list[tuple[Any, str, int]] = [(value, "$", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, _NotJson):
            path = _shown(path)
            raise ProblemError(
                MALFORMED_JSON,
                f"the body is not valid JSON: {item.token} at {path} is not a JSON number (JSON has no NaN "
                "or infinities, and a number must fit a 64-bit float); send a finite number, or a string",
                {"path": path, "token": item.token},
            )
        if isinstance(item, Mapping | list):
            if depth + 1 > MAX_BODY_DEPTH:
                raise _too_deep(path, depth + 1)
            pairs = item.items() if isinstance(item, Mapping) else enumerate(item)
            # Reversed, so that the first offending member in the body is the one named.
            for key, child in reversed(list(pairs)):
                where = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}"
                stack.append((child, where, depth + 1))


def _shown(path: str) -> str:
    """A path as a problem names it: at most 200 characters (keys may be long)."""
    return path if len(path) <= 200 else f"{path[:197]}..."


class JSONRoute(APIRoute):
    """A route whose body, if it takes one, is read by this module's rule before FastAPI sees it."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler
        # A body declared with its own media type (Body(media_type=...)) is accepted as that type only.
        declared = getattr(self.body_field.field_info, "media_type", None) or "application/json"
        accepted = ACCEPTED_MEDIA_TYPES if declared == "application/json" else (declared,)

        async def strict(request: Request) -> Response:
            body = await request.body()
            if not body:
                return await handler(request)
            check_media_type(request.headers.get("content-type"), accepted)
            parsed = _Parsed(request.scope, _replay(request, body), parse_json(body))
            return await handler(parsed)

        return strict


def _replay(request: Request, body: bytes) -> Callable[[], Coroutine[Any, Any, Message]]:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await request.receive()

    return receive


class _Parsed(Request):
    """The request, with its body already parsed by :func:`parse_json`."""

    def __init__(self, scope: Any, receive: Any, value: Any) -> None:
        super().__init__(scope, receive)
        self._parsed = value

    async def json(self) -> Any:
        return self._parsed
