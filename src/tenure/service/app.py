"""The ASGI application: routes, error handling, body limits and request logging.

>>> from tenure.store import open_store
>>> from tenure.service import ServiceConfig, create_app
>>> store = open_store("sqlite:///:memory:")  # doctest: +SKIP
>>> app = create_app(store, ServiceConfig(auth=False))  # doctest: +SKIP

Serve it with any ASGI server; ``tenure serve`` runs it with uvicorn next to the engine's workers.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from tenure import __version__
from tenure.engine import Worker
from tenure.errors import TenureError
from tenure.service import (
    callbacks,
    dashboard,
    kinds,
    operations,
    parties,
    resources,
    retries,
    signaling,
    subscriptions,
    watch,
)
from tenure.service.config import ServiceConfig
from tenure.service.metrics import Metrics
from tenure.service.problems import (
    BAD_REQUEST,
    HEADERS_TOO_LARGE,
    INTERNAL,
    INVALID_REQUEST,
    MALFORMED_JSON,
    METHOD_NOT_ALLOWED,
    NOT_ACCEPTABLE,
    NOT_FOUND,
    TOO_LARGE,
    UNSUPPORTED_MEDIA,
    Problem,
    ProblemError,
    problem_response,
    tenure_error_response,
)
from tenure.service.snapshots import Snapshots
from tenure.service.watch import Wakeups
from tenure.store.protocol import EngineStore

__all__ = ["create_app"]

log = logging.getLogger("tenure.service")
access = logging.getLogger("tenure.access")

_BY_STATUS = {404: NOT_FOUND, 405: METHOD_NOT_ALLOWED, 406: NOT_ACCEPTABLE, 413: TOO_LARGE, 415: UNSUPPORTED_MEDIA}


def create_app(
    store: EngineStore,
    config: ServiceConfig | None = None,
    *,
    workers: Sequence[Worker] = (),
) -> FastAPI:
    """The HTTP API over ``store``; ``workers`` (running elsewhere) feed the metrics."""
    config = config or ServiceConfig()
    wakeups = Wakeups(store)

    reads = store.async_reads()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Other processes' writes wake the watchers too, where the database can tell (PostgreSQL).
        store.listen()
        try:
            yield
        finally:
            wakeups.close()
            await reads.close()

    app = FastAPI(
        lifespan=lifespan,
        title="tenure",
        version=__version__,
        description="Durable, race-free lifecycles for provisioned resources.",
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.store = store
    #: The reads the event loop makes itself (tenure.store.asyncreads).
    app.state.reads = reads
    app.state.config = config
    app.state.metrics = Metrics(store, workers)
    app.state.wakeups = wakeups
    #: The resources last answered, which pinned events are planned from (tenure.service.snapshots).
    app.state.snapshots = Snapshots()
    modules = [resources, parties, retries, kinds, callbacks, watch, subscriptions, operations]
    if config.signaling is not None and config.signaling.is_dataplane:
        signaling.check_store(store)  # a data plane serves its control plane's signals
        modules.append(signaling)
    modules.append(dashboard)  # the web dashboard, /ui
    for module in modules:
        app.include_router(module.router)
    # The routes themselves, for the Allow header of a 405 (the app's own list may hold routers).
    app.state.routes = [route for module in modules for route in module.router.routes]
    _errors(app)
    _docs(app)
    # The last added is the outermost: every answer, a 413 or a HEAD included, is logged and counted.
    app.add_middleware(_BodyLimit, limit=config.max_body)
    app.add_middleware(_HeaderLimit, limit=MAX_HEADER_BYTES)
    app.add_middleware(_Head)
    app.add_middleware(_Logged)
    return app


#: Where Swagger UI's files are served from: this package's copy, so that /docs needs no network.
_ASSETS = "/docs/assets"


def _docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI from local files) and an OpenAPI document listing only real answers."""
    app.mount(_ASSETS, StaticFiles(directory=swagger_ui_path), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} API",
            swagger_js_url=f"{root}{_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{_ASSETS}/favicon-32x32.png",
        )

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _only_real_answers(generate())
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


def _only_real_answers(schema: dict[str, Any]) -> None:
    """Drop FastAPI's generic 422 (the service's own is listed where it can happen); errors are problem+json."""
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.get("responses", {})
            for status, response in list(responses.items()):
                if "HTTPValidationError" in str(response):
                    del responses[status]
                elif status.isdigit() and int(status) >= 400:
                    # Every refusal is a problem document, never plain application/json.
                    response.get("content", {}).pop("application/json", None)
    schemas = schema.get("components", {}).get("schemas", {})
    if "HTTPValidationError" not in str(schema.get("paths")):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)


def _errors(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def on_problem(request: Request, exc: ProblemError) -> Response:
        return problem_response(exc.problem, exc.detail, exc.facts, exc.headers, request=request)

    @app.exception_handler(TenureError)
    async def on_tenure_error(request: Request, exc: TenureError) -> Response:
        return tenure_error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = [_field_problem(err) for err in exc.errors()]
        for err in exc.errors():
            if err.get("type") == "json_invalid":
                why = (err.get("ctx") or {}).get("error") or "it cannot be parsed"
                at = err.get("loc", ("body", "?"))[-1]
                detail = f"the body is not valid JSON: {why} at position {at}; send one JSON object"
                return problem_response(MALFORMED_JSON, detail, {"position": at}, request=request)
        detail = "; ".join(f"{p['field']}: {p['constraint']}" for p in problems)
        return problem_response(INVALID_REQUEST, detail, {"errors": problems}, request=request)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> Response:
        problem = _BY_STATUS.get(exc.status_code) or Problem(exc.status_code, "http-error", "HTTP error")
        if exc.status_code == 400:
            problem = BAD_REQUEST
        headers = dict(exc.headers or {})
        detail = str(exc.detail)
        if exc.status_code == 405:
            allowed = _methods_for(request.app, request.scope)
            headers["Allow"] = ", ".join(allowed)
            detail = f"{request.method} is not allowed on {request.url.path}; allowed: {', '.join(allowed)}"
        elif exc.status_code == 404:
            detail = f"no such endpoint: {request.url.path[:200]} (the API is under /v1; see /docs)"
        return problem_response(problem, detail, headers=headers, request=request)

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> Response:
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return problem_response(INTERNAL, "the server failed; the error is logged", request=request)


def _methods_for(app: FastAPI, scope: Scope) -> list[str]:
    """Every method some route serves at the request's path (RFC 9110 wants them all in Allow)."""
    methods: set[str] = set()
    probe = {**scope, "method": "GET"}
    for route in app.state.routes:
        match, _ = route.matches(probe)
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def _field_problem(err: Any) -> dict[str, str]:
    where = [str(p) for p in err.get("loc", ()) if p != "body"]
    field = ".".join(where) or "body"
    constraint = str(err.get("msg", "invalid"))
    if err.get("type") == "extra_forbidden":
        constraint = "unknown field (not accepted here)"
    return {"field": field, "constraint": constraint}


#: The most header-field bytes (names and values) one request may send.
MAX_HEADER_BYTES = 64 * 1024


class _HeaderLimit:
    """Refuse requests whose header fields total more than ``limit`` bytes with 431 (RFC 6585)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = sum(len(name) + len(value) for name, value in scope.get("headers", ()))
            if size > self.limit:
                facts = {"limit": self.limit, "size": size, "instance": scope.get("path", "")}
                detail = f"the header fields total {size} bytes; at most {self.limit} are accepted"
                response = problem_response(HEADERS_TOO_LARGE, detail, facts)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413, by Content-Length or while reading a chunked body."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None:
            # The server holds the client to its Content-Length, so checking the number is enough.
            if not declared.isdigit() or int(declared) > self.limit:
                await self._refuse(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        # A body of unknown length (chunked) is read here, up to the limit, before the app sees it.
        chunks: list[Message] = []
        seen = 0
        while True:
            message = await receive()
            chunks.append(message)
            if message["type"] != "http.request":
                break
            seen += len(message.get("body", b""))
            if seen > self.limit:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return chunks.pop(0) if chunks else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        facts = {"limit": self.limit, "instance": scope.get("path", "")}
        response = problem_response(TOO_LARGE, f"the body must be at most {self.limit} bytes", facts)
        await response(scope, receive, send)


class _Head:
    """Answer HEAD like GET without the body (RFC 9110), wherever GET is served."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        finished = False

        async def headless(message: Message) -> None:
            nonlocal finished
            if finished:
                return
            if message["type"] == "http.response.body":
                finished = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await send(message)

        async def until_finished() -> Message:
            # A stream (the watch) stops once the headers went out: the client asked for no body.
            if finished:
                return {"type": "http.disconnect"}
            return await receive()

        await self.app({**scope, "method": "GET"}, until_finished, headless)


class _Logged:
    """One structured log line per request: method, path, status, duration, client, resource."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            state = scope.get("state") or {}
            resource = state.get("resource")
            extra: dict[str, Any] = {
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "client": state.get("client"),
            }
            if resource is not None:
                extra.update(resource_id=resource.id, kind=resource.kind)
            elif state.get("resource_id"):
                extra["resource_id"] = state["resource_id"]
            access.info("%s %s %s", scope["method"], scope["path"], status, extra=extra)
            metrics = getattr(getattr(scope.get("app"), "state", None), "metrics", None)
            if metrics is not None:
                metrics.count_request(scope["method"], status)
