"""``/v1/subscriptions``: webhooks for watchers who are not users of a resource.

A client with the ``write`` scope subscribes a callback URL to the changes of one resource, or of
one kind (optionally only those entering some states). The engine's deliverer POSTs every matching
change to the URL, signed with the subscription's secret, at least once and in order (see
:mod:`tenure.engine.deliveries`). The secret is in the answer to the creation only; reading a
subscription shows how far delivery got (its feed position, failed attempts, the last error, the
next attempt), never the secret. A client sees and deletes its own subscriptions; ``admin`` all.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, cast

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from tenure.errors import InvalidArgument, SubscriptionNotFound
from tenure.machine import Kind
from tenure.service.auth import Caller, require
from tenure.service.bodies import JSONRoute
from tenure.service.config import Principal, Scope
from tenure.service.problems import FORBIDDEN, LOCATION_HEADER, ProblemError, problem_responses, success
from tenure.service.resources import Store
from tenure.store.protocol import Store as StoreProtocol
from tenure.store.protocol import TableStore
from tenure.store.subscriptions import MAX_PAGE, MAX_SECRET, MAX_STATES, MAX_URL, Subscription, Subscriptions

__all__ = ["router"]

router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"], route_class=JSONRoute)

Writer = Annotated[Principal, Depends(require(Scope.WRITE))]

_RESOURCE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_SUBSCRIPTION_ID = re.compile(r"[0-9a-f]{32}")
#: The store's argument names, as the body calls them.
_BODY_FIELD = {"resource_id": "resource"}


class _In(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True)


class SubscriptionIn(_In):
    """Where to send changes, and which: one ``resource``, or one ``kind`` (and, optionally, ``states``)."""

    url: str = Field(max_length=MAX_URL, description="An absolute http:// or https:// URL, without credentials")
    resource: str | None = Field(None, max_length=64, description="The id of the one resource to watch")
    kind: str | None = Field(None, max_length=100, description="The kind whose resources to watch")
    states: list[str] | None = Field(
        None, max_length=MAX_STATES, description="Only changes entering these states of the kind"
    )
    secret: str | None = Field(
        None, max_length=MAX_SECRET, description="At least 16 characters; left out, one is made (and shown once)"
    )


class SubscriptionOut(_Out):
    """A subscription and how far its delivery got (its secret is never shown again)."""

    id: str
    url: str
    resource: str | None
    kind: str | None
    states: list[str] | None
    created_by: str | None
    created_at: datetime
    #: The change-feed position delivered up to.
    position: str
    delivered: int
    #: Failed attempts at the next change since the last success.
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    last_delivered_at: datetime | None

    @classmethod
    def of(cls, s: Subscription) -> SubscriptionOut:
        return cls(
            id=s.id,
            url=s.url,
            resource=s.resource_id,
            kind=s.kind,
            states=None if s.states is None else list(s.states),
            created_by=s.created_by,
            created_at=s.created_at,
            position=s.position,
            delivered=s.delivered,
            attempts=s.attempts,
            next_attempt_at=s.next_attempt_at,
            last_error=s.last_error,
            last_delivered_at=s.last_delivered_at,
        )


class CreatedSubscriptionOut(SubscriptionOut):
    """A new subscription with its secret: keep it, it is not shown again."""

    secret: str


class SubscriptionPage(_Out):
    items: list[SubscriptionOut]
    #: The ``after`` of the next page (null: nothing more).
    next: str | None


async def subscriptions_of(request: Request) -> Subscriptions:
    """The app's subscriptions, over its store's database (made on first use)."""
    found: Subscriptions | None = getattr(request.app.state, "subscriptions", None)
    if found is None:
        store: StoreProtocol = request.app.state.store
        # Both built-in stores are TableStores too: the subscriptions part runs on their database.
        tables = cast(TableStore, store)

        def kind(name: str) -> Kind | None:
            return store.kinds.get(name)  # looked up each time: kinds may be registered later

        found = Subscriptions(tables.database, tables.now, kinds=kind)
        request.app.state.subscriptions = found
    return found


Subs = Annotated[Subscriptions, Depends(subscriptions_of)]


def _mine(subs: Subscriptions, sub_id: str, caller: Principal) -> Subscription:
    """The subscription, if the caller created it or is an admin (403 otherwise, 404 if there is none)."""
    if _SUBSCRIPTION_ID.fullmatch(sub_id) is None:
        raise SubscriptionNotFound(sub_id[:100])  # no subscription has such an id
    sub = subs.get(sub_id)
    if sub.created_by != caller.client and not caller.allows(Scope.ADMIN):
        raise ProblemError(
            FORBIDDEN,
            f"subscription {sub_id} belongs to another client; only its creator or an admin may see or delete it",
            {"client": caller.client, "subscription_id": sub_id},
        )
    return sub


@router.post(
    "",
    status_code=201,
    response_model=CreatedSubscriptionOut,
    summary="Subscribe a URL to changes (the answer shows the signing secret, once)",
    responses={
        201: success("The subscription, with its secret (shown only now)", LOCATION_HEADER),
        **problem_responses(400, 401, 403, 413, 415, 422, 503),
    },
)
def create_subscription(
    body: SubscriptionIn, store: Store, subs: Subs, caller: Writer, response: Response
) -> CreatedSubscriptionOut:
    if body.kind is not None:
        store.kind(body.kind)  # an unknown kind is 422, as for /v1/watch
    if (
        body.resource is not None
        and body.kind is None
        and (_RESOURCE_ID.fullmatch(body.resource) is None or store.find(body.resource) is None)
    ):
        raise InvalidArgument("resource", "must be the id of an existing resource", body.resource[:100])
    try:
        sub = subs.create(
            body.url,
            resource_id=body.resource,
            kind=body.kind,
            states=body.states,
            secret=body.secret,
            created_by=caller.client,
        )
    except InvalidArgument as exc:
        raise InvalidArgument(_BODY_FIELD.get(exc.field, exc.field), exc.constraint, exc.got) from None
    response.headers["Location"] = f"/v1/subscriptions/{sub.id}"
    return CreatedSubscriptionOut(**SubscriptionOut.of(sub).model_dump(), secret=sub.secret)


@router.get(
    "",
    response_model=SubscriptionPage,
    summary="List your subscriptions (an admin's: everyone's), oldest first",
    responses=problem_responses(401, 403, 422, 503),
)
def list_subscriptions(
    subs: Subs,
    caller: Caller,
    after: Annotated[str | None, Query(max_length=64, description="The 'next' of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> SubscriptionPage:
    every = caller.allows(Scope.ADMIN)
    found = subs.list(created_by=caller.client, every=every, after=after, limit=limit)
    nxt = found[-1].id if len(found) == limit else None
    return SubscriptionPage(items=[SubscriptionOut.of(s) for s in found], next=nxt)


@router.get(
    "/{subscription_id}",
    response_model=SubscriptionOut,
    summary="A subscription and how far its delivery got (never its secret)",
    responses=problem_responses(401, 403, 404, 503),
)
def get_subscription(subscription_id: str, subs: Subs, caller: Caller) -> SubscriptionOut:
    return SubscriptionOut.of(_mine(subs, subscription_id, caller))


@router.delete(
    "/{subscription_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a subscription: nothing more is sent",
    responses={204: success("Deleted"), **problem_responses(401, 403, 404, 503)},
)
def delete_subscription(subscription_id: str, subs: Subs, caller: Writer) -> Response:
    subs.delete(_mine(subs, subscription_id, caller).id)
    return Response(status_code=204)
