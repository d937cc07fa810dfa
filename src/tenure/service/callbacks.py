"""``/v1/callbacks``: where external provisioners and data planes answer what a resource awaits.

The correlation token of the attempt that asked is the credential: a token opens nothing but the
answers to its own wait. A client token is not needed, unless the configuration says callbacks need
one (``[auth] callbacks_need_client_token = true``); a client token that is sent must be valid and
grant the ``callback`` scope. The callback is stored through the inbox and
applied by the engine; the answer says accepted (202), duplicate (200: already recorded, nothing
changes) or refused, and why.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tenure.errors import ResourceNotFound, UnknownKind
from tenure.service.auth import admit
from tenure.service.bodies import JSONRoute
from tenure.service.config import Scope, ServiceConfig
from tenure.service.models import CallbackIn, ReceiptOut
from tenure.service.problems import (
    CALLBACK_CONFLICT,
    CALLBACK_NOT_AWAITED,
    CALLBACK_REFUSED,
    CALLBACK_SUPERSEDED,
    CALLBACK_WRONG_CALLER,
    Problem,
    ProblemError,
    problem_responses,
)
from tenure.service.resources import Store
from tenure.store.inbox import Delivery, Refusal

__all__ = ["router"]

router = APIRouter(prefix="/v1/callbacks", tags=["callbacks"], route_class=JSONRoute)

_bearer = HTTPBearer(auto_error=False, description="Optional: a client token with the callback scope")

_PROBLEMS: dict[Refusal, Problem] = {
    Refusal.UNKNOWN_TOKEN: CALLBACK_REFUSED,
    Refusal.NOT_AWAITED: CALLBACK_NOT_AWAITED,
    Refusal.SUPERSEDED: CALLBACK_SUPERSEDED,
    Refusal.CONFLICTING_ANSWER: CALLBACK_CONFLICT,
    Refusal.TOO_EARLY: CALLBACK_SUPERSEDED,
}


@router.post(
    "",
    status_code=202,
    response_model=ReceiptOut,
    summary="Answer one awaited key of a resource's wait, with the token of the attempt that asked",
    responses={
        200: {"description": "A duplicate of an answer already recorded", "model": ReceiptOut},
        # 401 only where a client token is sent or required; 403 also for a refused callback token.
        **problem_responses(400, 401, 403, 409, 413, 415, 422, 503),
    },
)
def post_callback(
    body: CallbackIn,
    store: Store,
    request: Request,
    response: Response,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ReceiptOut:
    config: ServiceConfig = request.app.state.config
    caller = None
    expected = _answered_by(store, body)
    if config.auth and (credentials is not None or config.callbacks_need_client or expected is not None):
        # A client token, where one is sent or required, must be valid and grant "callback".
        caller = admit(request, credentials, Scope.CALLBACK).client
    if config.auth and expected is not None and caller != expected:
        raise ProblemError(
            CALLBACK_WRONG_CALLER,
            # Which party is assigned is not told: the caller learns only that it is not the one.
            f"client {caller!r} may not answer for resource {body.resource_id!r}: only its assigned party may",
            {"resource_id": body.resource_id, "caller": caller},
        )
    receipt = store.deliver(body.resource_id, body.token, body.key, body.status, data=body.data, error=body.error)
    request.state.resource_id = body.resource_id
    if receipt.delivery is Delivery.REFUSED:
        refusal = receipt.refusal or Refusal.UNKNOWN_TOKEN
        facts = {"resource_id": receipt.resource_id, "key": receipt.key, "refusal": refusal.value}
        raise ProblemError(_PROBLEMS[refusal], receipt.reason, facts)
    if receipt.delivery is Delivery.DUPLICATE:
        response.status_code = 200
    return ReceiptOut.of(receipt)


def _answered_by(store: Store, body: CallbackIn) -> str | None:
    """The one client the resource's kind lets answer its waits (None: any holder of the token)."""
    if not any(k.answered_by for name in store.kinds for k in store.kind_versions(name)):
        return None  # no loaded kind names its answerer: no need to read the resource
    try:
        resource = store.get(body.resource_id)
        kind = store.kind_of(resource)
    except (ResourceNotFound, UnknownKind):
        return None  # the inbox refuses it, with its own reason
    return None if kind.answered_by is None else kind.answered_by(resource)
