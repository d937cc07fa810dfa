"""``POST /v1/resources/{id}/retry``: an admin makes the next attempt of a step backing off due now.

A step that failed with a retryable error is tried again when its backoff is over
(``nextAttemptAt``). When the cause has been fixed, an operator need not wait: this operation makes
the next attempt due at once, as one journaled compare-and-swap (an ``@retry-now`` entry naming the
client and the schedule it replaced). The state, the attempt count and the last error stay.

Only a resource whose step backs off can be retried now: in a work state, or a rest state on its way
to a desired state, with its next attempt scheduled later and no worker holding it; anything else is
answered 409 ``retry-not-allowed`` naming the state, its role and why. ``If-Match`` pins the version
as for every write (412 when the resource has moved on).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from tenure.service.auth import Admin
from tenure.service.bodies import JSONRoute
from tenure.service.models import ResourceOut
from tenure.service.problems import ETAG_HEADER, problem_responses, success
from tenure.service.resources import IfMatch, Store, write_pinned
from tenure.store.model import Resource

__all__ = ["router"]

router = APIRouter(prefix="/v1/resources", tags=["resources"], route_class=JSONRoute)


@router.post(
    "/{resource_id}/retry",
    response_model=ResourceOut,
    summary="Make the next attempt of a step backing off after a failure due now (admin scope)",
    description=(
        "For a resource whose step backs off after a failed attempt (`nextAttemptAt` in the future), in a "
        "work state or in a rest state on its way to a desired state: the attempt becomes due now and a "
        "worker takes it at once. "
        "The state, `attempts` and `error` stay; the journal gets an `@retry-now` entry with the "
        "client and the schedule it replaced. No body. 409 `retry-not-allowed` (naming the state, its "
        "role and why) for any other resource; 412 when `If-Match` names a version it has moved past."
    ),
    responses={
        200: success("The resource, its next attempt due now", ETAG_HEADER),
        **problem_responses(400, 401, 403, 404, 409, 412, 422, 503),
    },
)
def retry_now(
    resource_id: str,
    store: Store,
    caller: Admin,
    response: Response,
    request: Request,
    if_match: IfMatch = None,
) -> Response:
    def retry(pinned: int | None) -> Resource:
        return store.retry_now(resource_id, expected_version=pinned, actor=caller.client)

    return write_pinned(request, response, resource_id, if_match, "retry", retry)
