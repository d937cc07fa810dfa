"""Operations endpoints: liveness, readiness, and Prometheus metrics (no token needed for these)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tenure.service.bodies import JSONRoute
from tenure.service.problems import NOT_READY, ProblemError, problem_responses
from tenure.service.resources import Store
from tenure.store.migrator import latest_version

__all__ = ["router"]

log = logging.getLogger("tenure.service")

router = APIRouter(tags=["operations"], route_class=JSONRoute)


@router.get("/healthz", summary="The process is up", responses=problem_responses())
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="The database is reachable and its schema is current",
    responses=problem_responses(503),
)
def readyz(store: Store) -> dict[str, Any]:
    try:
        current = store.schema_version()
    except Exception as exc:  # whatever the driver raises, the answer is the same: not ready
        log.warning("readiness check failed: %s", exc)
        raise ProblemError(NOT_READY, "the database cannot be queried") from None
    wanted = latest_version(store.dialect)
    if current != wanted:
        raise ProblemError(
            NOT_READY,
            f"the database schema is at version {current}, this tenure needs {wanted}: run 'tenure migrate'",
            {"schema_version": current, "required_version": wanted},
        )
    return {"status": "ready", "schemaVersion": current, "database": store.dialect}


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **problem_responses(503)},
)
def metrics(request: Request) -> Response:
    body = request.app.state.metrics.render()
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
