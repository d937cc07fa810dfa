"""ProvisionStep hands each request a callback token that is issued on its first read.

Issuing it opens a provisional wait in the store (a write), so that a callback faster than the
provisioner's own answer is kept. A provisioner that answers at once never reads it and costs no
write; one that answers pending reads it before it hands it out. The store the step writes through
is stood in for by a recorder of ``open_wait`` calls (what a step may do with the store is a narrow
protocol, :class:`~tenure.store.protocol.StepStore`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import cast

import pytest

from tenure.engine.outcome import Advance, Wait
from tenure.engine.provision import (
    Definition,
    MemoryProvisioner,
    ProvisionRequest,
    ProvisionResult,
    ProvisionStep,
)
from tenure.engine.steps import StepContext
from tenure.errors import StoreUnavailable
from tenure.kinds.transfer import transfer_kind
from tenure.store.claims import Claim
from tenure.store.model import Resource
from tenure.store.protocol import StepStore

BUCKET = Definition("bucket", "memory")


class Waits:
    """Records the provisional waits a step opens; raises ``error`` instead when given one."""

    def __init__(self, error: Exception | None = None) -> None:
        self.opened: list[tuple[str, str]] = []
        self.error = error

    def open_wait(self, resource: Resource, hashed: str) -> None:
        if self.error is not None:
            raise self.error
        self.opened.append((resource.id, hashed))


def context(waits: Waits) -> StepContext:
    r = cast(Resource, SimpleNamespace(id="r-1", version=3, state="provisioning", data={}, claim_token="t"))
    return StepContext(
        worker="w",
        claim=Claim(r),
        attempt=1,
        store=cast(StepStore, waits),
        kind=transfer_kind(),
        now=lambda: datetime(2030, 1, 1, tzinfo=UTC),
    )


def step(provisioner: object) -> ProvisionStep:
    return ProvisionStep({"memory": provisioner}, lambda r: [BUCKET], done="d", requested="q", failed="f")


def test_a_provisioner_that_answers_at_once_opens_no_wait() -> None:
    waits = Waits()
    ctx = context(waits)

    outcome = step(MemoryProvisioner())(ctx.claim.resource, ctx)

    assert isinstance(outcome, Advance)
    assert waits.opened == []
    assert not ctx.token_issued


def test_a_provisioner_that_answers_pending_has_the_wait_opened_before_it_answers() -> None:
    waits = Waits()
    ctx = context(waits)
    provisioner = MemoryProvisioner(asynchronous=True)

    outcome = step(provisioner)(ctx.claim.resource, ctx)

    assert isinstance(outcome, Wait)
    assert len(waits.opened) == 1, "one wait, for the one token of the attempt"
    (request,) = provisioner.requests
    assert request.token == ctx.token, "the token handed out is the attempt's"
    assert len(waits.opened) == 1


class ReadsTheToken:
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def provision(self, request: ProvisionRequest) -> ProvisionResult:
        self.tokens.append(request.token)
        return ProvisionResult.pending()


def test_an_unavailable_store_while_issuing_the_token_is_an_error_of_the_step_not_the_provisioners_failure() -> None:
    ctx = context(Waits(StoreUnavailable("db", "connection refused")))
    provisioner = ReadsTheToken()

    with pytest.raises(StoreUnavailable):
        step(provisioner)(ctx.claim.resource, ctx)

    assert provisioner.tokens == []


def test_a_token_given_as_text_is_used_as_it_is() -> None:
    request = ProvisionRequest("provision", "r-1", BUCKET, token="given", key="bucket", attempt=1, idempotency_key="k")

    assert request.token == "given"
    assert request.to_json()["token"] == "given"
    assert "given" not in repr(request), "a token is a secret: never in a repr that reaches the logs"
