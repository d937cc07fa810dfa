"""Schemathesis against the service's own OpenAPI document, served by a real server.

Every operation but the watch stream (it never ends) gets generated requests: valid ones and ones
that break the schema. The service must never answer 5xx, and every answer must be documented: its
status, its content type (problem+json for errors), its headers and its body's schema. Some
generated path parameters and bodies are swapped for ids, kinds and events that exist, so that
requests reach past "not found".

The number of examples is bounded so that this stays well under a minute.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks

from tests.support.live_server import ADMIN
from tests.support.service_support import Live

pytestmark = pytest.mark.timeout(180)

#: Examples per operation in the fuzzing phase.
MAX_EXAMPLES = 25

KINDS = ("image", "job", "ticket")
EVENTS = ("upload", "stage", "activate", "delete", "request", "cancel")
STATES = ("queued", "saving", "active", "deleted", "pending", "awaiting")


@pytest.fixture(scope="module")
def dialect() -> str:
    return "sqlite"


@pytest.fixture
def existing(live: Live) -> list[str]:
    """Resources that exist, in several states, for generated requests to find."""
    ids = []
    for i in range(3):
        ids.append(live.store.create("image", {"name": f"img-{i}"}).id)
    live.store.fire(ids[1], "upload")
    live.store.fire(ids[2], "delete")
    ids.append(live.store.create("job", {}).id)
    ids.append(live.store.create("ticket", {}).id)
    return ids


def _pick(generated: object, known: tuple[str, ...] | list[str]) -> object:
    """A known value for most generated ones (chosen by the generated value, so runs replay), else it."""
    index = len(str(generated)) % (len(known) + 1)
    return generated if index == len(known) else known[index]


def _steer(case: Any, existing: list[str]) -> None:
    if case.path_parameters:
        if "resource_id" in case.path_parameters:
            case.path_parameters["resource_id"] = _pick(case.path_parameters["resource_id"], existing)
        if "name" in case.path_parameters:
            case.path_parameters["name"] = _pick(case.path_parameters["name"], KINDS)
    body = case.body
    if isinstance(body, dict):
        if isinstance(body.get("kind"), str):
            body["kind"] = _pick(body["kind"], KINDS)
        if isinstance(body.get("event"), str):
            body["event"] = _pick(body["event"], EVENTS)
        if isinstance(body.get("resourceId"), str):
            body["resourceId"] = _pick(body["resourceId"], existing)
        if isinstance(body.get("desiredState"), str):
            body["desiredState"] = _pick(body["desiredState"], STATES)


def _operations(live: Live) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    schema.config.update(base_url=live.url)
    found = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path != "/v1/watch":
            found.append(operation)
    return found


def _run(
    operation: Any,
    mode: GenerationMode,
    existing: list[str],
    *,
    examples: int = MAX_EXAMPLES,
) -> list[str]:
    """Fuzz one operation in one mode; returns what failed (empty: nothing)."""
    failures: list[str] = []
    checked = [
        checks.not_a_server_error,
        checks.response_schema_conformance,
        checks.status_code_conformance,
        checks.content_type_conformance,
        checks.response_headers_conformance,
    ]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
    )
    def fuzz(case: Any) -> None:
        _steer(case, existing)
        try:
            case.call_and_validate(
                headers={"Authorization": f"Bearer {ADMIN}"},
                checks=checked,
                timeout=15,
            )
        except (Exception, BaseExceptionGroup) as exc:  # every failure is kept, and the run goes on
            text = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
            failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}): {' | '.join(text[:14])}")

    try:
        fuzz()
    except Unsatisfiable:
        # Nothing in the operation can be broken (no parameters, no body): no negative cases exist.
        assert mode is GenerationMode.NEGATIVE, f"no {mode.value} case for {operation.method} {operation.path}"
    return failures


def test_no_server_error_and_every_answer_is_documented(live: Live, existing: list[str]) -> None:
    operations = _operations(live)
    assert len(operations) >= 14, [f"{o.method} {o.path}" for o in operations]
    failures: list[str] = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failures.extend(_run(operation, mode, existing))
    assert not failures, "\n\n".join(dict.fromkeys(failures))
