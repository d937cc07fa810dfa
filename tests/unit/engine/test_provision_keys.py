"""ProvisionStep's idempotency keys: one per definition and action, and with an operation marker, per operation."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from tenure.engine.provision import Definition, MemoryProvisioner, ProvisionStep
from tenure.store.model import Resource

BUCKET = Definition("bucket", "memory")


def resource(**data: Any) -> Resource:
    return cast(Resource, SimpleNamespace(id="r-1", data=data))


def step(**more: Any) -> ProvisionStep:
    return ProvisionStep(
        {"memory": MemoryProvisioner()}, lambda r: [BUCKET], done="d", requested="q", failed="f", **more
    )


def test_without_a_marker_the_key_is_the_same_for_every_ask() -> None:
    assert step().idempotency_key(resource(), BUCKET) == "r-1/provision/bucket"
    assert step(action="deprovision").idempotency_key(resource(), BUCKET) == "r-1/deprovision/bucket"


def test_an_operation_marker_makes_the_key_the_operations() -> None:
    marked = step(operation=lambda r: r.data.get("op"))
    assert marked.idempotency_key(resource(op=7), BUCKET) == "r-1/provision/bucket@7"
    assert marked.idempotency_key(resource(op=12), BUCKET) == "r-1/provision/bucket@12"
    # No marker (a resource written before there was one): the plain key.
    assert marked.idempotency_key(resource(), BUCKET) == "r-1/provision/bucket"
