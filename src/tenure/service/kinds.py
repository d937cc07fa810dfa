"""``/v1/kinds``: the loaded kinds, each one's states, events and roles, and its diagram."""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from tenure.draw import to_dot, to_mermaid, to_svg
from tenure.machine import Kind
from tenure.service.auth import Caller
from tenure.service.bodies import JSONRoute
from tenure.service.models import KindOut
from tenure.service.problems import KIND_NOT_FOUND, ProblemError, problem_responses
from tenure.service.resources import Store

__all__ = ["router"]

router = APIRouter(prefix="/v1/kinds", tags=["kinds"], route_class=JSONRoute)


class DiagramFormat(enum.StrEnum):
    MERMAID = "mermaid"
    DOT = "dot"
    SVG = "svg"


_DRAW: dict[DiagramFormat, Callable[[Kind], str]] = {
    DiagramFormat.MERMAID: to_mermaid,
    DiagramFormat.DOT: to_dot,
    DiagramFormat.SVG: to_svg,
}

_MEDIA = {
    DiagramFormat.MERMAID: "text/vnd.mermaid; charset=utf-8",
    DiagramFormat.DOT: "text/vnd.graphviz; charset=utf-8",
    DiagramFormat.SVG: "image/svg+xml",
}


#: ``?version=``: one loaded version of the kind (default: the newest, which new resources are made under).
Version = Annotated[int | None, Query(ge=1, description="A loaded version of the kind (default: the newest)")]


def _find(store: Store, name: str, version: int | None = None) -> Kind:
    kind = store.kinds.get(name)
    if kind is None:
        known = ", ".join(sorted(store.kinds)) or "none"
        raise ProblemError(KIND_NOT_FOUND, f"no kind {name[:100]!r} is loaded (loaded: {known})", {"kind": name[:100]})
    if version is None or version == kind.version:
        return kind
    versions = store.kind_versions(name)
    found = next((k for k in versions if k.version == version), None)
    if found is None:
        loaded = ", ".join(str(k.version) for k in versions)
        raise ProblemError(
            KIND_NOT_FOUND,
            f"version {version} of kind {name!r} is not loaded (loaded versions: {loaded})",
            {"kind": name, "version": version},
        )
    return found


def _out(store: Store, kind: Kind) -> KindOut:
    return KindOut.of(kind, versions=[k.version for k in store.kind_versions(kind.name)])


@router.get("", response_model=list[KindOut], summary="The loaded kinds", responses=problem_responses(401, 403))
def list_kinds(store: Store, caller: Caller) -> list[KindOut]:
    return [_out(store, store.kinds[name]) for name in sorted(store.kinds)]


@router.get(
    "/{name}",
    response_model=KindOut,
    summary="One kind (one version of it): states, events, roles, spec schema",
    responses=problem_responses(401, 403, 404, 422),
)
def get_kind(name: str, store: Store, caller: Caller, version: Version = None) -> KindOut:
    return _out(store, _find(store, name, version))


@router.get(
    "/{name}/diagram",
    summary="The kind's state graph as Mermaid, Graphviz DOT or SVG",
    response_class=Response,
    responses={
        200: {"content": {media: {"schema": {"type": "string"}} for media in _MEDIA.values()}},
        **problem_responses(401, 403, 404, 422),
    },
)
def get_diagram(
    name: str,
    store: Store,
    caller: Caller,
    fmt: Annotated[DiagramFormat, Query(alias="format")] = DiagramFormat.MERMAID,
    version: Version = None,
) -> Response:
    kind = _find(store, name, version)
    body = _DRAW[fmt](kind)
    return Response(body, media_type=_MEDIA[fmt])
