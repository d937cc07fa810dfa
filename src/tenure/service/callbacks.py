"""``/v1/callbacks``: where external provisioners and data planes answer what a resource awaits.

The correlation token of the attempt that asked is the credential: no client token is needed, and
a token opens nothing but the answers to its own wait. The callback is stored through the inbox and
applied by the engine; the answer says accepted (202), duplicate (200: already recorded, nothing
changes) or refused, and why.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from tenure.service.models import CallbackIn, ReceiptOut
from tenure.service.problems import (
    CALLBACK_CONFLICT,
    CALLBACK_NOT_AWAITED,
    CALLBACK_REFUSED,
    CALLBACK_SUPERSEDED,
    Problem,
    ProblemError,
)
from tenure.service.resources import Store
from tenure.store.inbox import Delivery, Refusal

__all__ = ["router"]

router = APIRouter(prefix="/v1/callbacks", tags=["callbacks"])

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
    responses={200: {"description": "A duplicate of an answer already recorded", "model": ReceiptOut}},
)
def post_callback(body: CallbackIn, store: Store, request: Request, response: Response) -> ReceiptOut:
    receipt = store.deliver(body.resource_id, body.token, body.key, body.status, data=body.data, error=body.error)
    request.state.resource_id = body.resource_id
    if receipt.delivery is Delivery.REFUSED:
        refusal = receipt.refusal or Refusal.UNKNOWN_TOKEN
        facts = {"resource_id": receipt.resource_id, "key": receipt.key, "refusal": refusal.value}
        raise ProblemError(_PROBLEMS[refusal], receipt.reason, facts)
    if receipt.delivery is Delivery.DUPLICATE:
        response.status_code = 200
    return ReceiptOut.of(receipt)
