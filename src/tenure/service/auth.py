"""Bearer-token authentication and scopes, as FastAPI dependencies.

``401`` when no valid token is presented (with ``WWW-Authenticate: Bearer``), ``403`` when the token
is valid but does not grant the scope the endpoint needs. Tokens are looked up by their sha-256 in
constant time and never appear in a log line or an answer. A token that names no client counts
against the client's address, as a failed dashboard sign-in does: too many of them and tokens from
that address are not checked for a while (``429`` with ``Retry-After``; see :mod:`tenure.service.limiter`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tenure.service.config import ANONYMOUS, Principal, Scope, ServiceConfig
from tenure.service.limiter import authenticate
from tenure.service.problems import FORBIDDEN, UNAUTHORIZED, ProblemError

__all__ = ["Admin", "Caller", "admit", "require"]

_bearer = HTTPBearer(auto_error=False, description="A client token from the service's configuration")

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="tenure"'}


def _config(request: Request) -> ServiceConfig:
    config: ServiceConfig = request.app.state.config
    return config


def admit(request: Request, credentials: HTTPAuthorizationCredentials | None, scope: Scope) -> Principal:
    """Who the request's bearer token names, if it grants ``scope``; else the 401, 403 or 429 problem."""
    config = _config(request)
    if not config.auth:
        principal = ANONYMOUS
    else:
        if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
            raise ProblemError(
                UNAUTHORIZED, "send a client token as 'Authorization: Bearer <token>'", headers=_CHALLENGE
            )
        found = authenticate(request, config, credentials.credentials)
        if found is None:
            raise ProblemError(UNAUTHORIZED, "the bearer token is not valid", headers=_CHALLENGE)
        principal = found
    if not principal.allows(scope):
        granted = ", ".join(sorted(s.value for s in principal.scopes))
        raise ProblemError(
            FORBIDDEN,
            f"client {principal.client!r} lacks the {scope.value!r} scope (it has: {granted})",
            {"client": principal.client, "required_scope": scope.value},
        )
    request.state.client = principal.client
    return principal


def require(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """A dependency that admits callers whose token grants ``scope``, and returns who they are."""

    # A coroutine: FastAPI runs a plain function dependency in its thread pool, a hand-off per request
    # that costs more than the check itself (nothing in it blocks).
    async def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        return admit(request, credentials, scope)

    return check


#: Who is calling, for endpoints that need the ``read`` scope.
Caller = Annotated[Principal, Depends(require(Scope.READ))]
#: Who is calling, for endpoints that need the ``admin`` scope.
Admin = Annotated[Principal, Depends(require(Scope.ADMIN))]
