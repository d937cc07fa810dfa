"""The sharing commands: use, renew, release, parties and teardown --force.

A party (a URI the client controls, ``tag:`` or ``urn:`` preferred) uses a resource until its use
expires; ``use`` registers it, ``renew`` extends it (the same call; it says renewed), ``release``
ends it, and the last release of a resource whose teardown is wished starts the teardown.
``teardown --force`` (admin) tears down whoever still uses it.

Against a server (``--server``) the uses belong to the token's client, as the API says. Against a
database (``--database``) the command is the client ``cli`` acting as the operator who holds the
database: it may renew or release any client's party, as an admin may over HTTP.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from tenure.cli.backend import LOCAL_CLIENT, Backend, Json, ServerBackend, connect
from tenure.cli.common import (
    DEFAULT_TOKEN_FILE,
    DirectDatabaseOption,
    JsonOption,
    KindsOption,
    ResourceIdArgument,
    ServerOption,
    TokenFileOption,
    console,
    errors,
)
from tenure.errors import InvalidArgument

if TYPE_CHECKING:
    from tenure.store.model import Resource
    from tenure.store.protocol import Store

__all__ = ["parties", "release", "renew", "teardown", "use"]

PartyArgument = Annotated[
    str, typer.Argument(help="The party's URI, e.g. tag:example.org,2026:ci/42 (tag: or urn: preferred).")
]
TtlOption = Annotated[
    int | None,
    typer.Option("--ttl", min=1, help="Seconds the use lasts (at most the provider's maximum; default: its default)."),
]


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _store(backend: Backend) -> Store:
    # Only two backends exist: a server's (the API) and a database's (its store).
    from tenure.cli.backend import DatabaseBackend

    assert isinstance(backend, DatabaseBackend)
    return backend.store


def _party_json(party: str, r: Resource) -> Json:
    from tenure.service.parties import PartyOut

    return PartyOut.of(party, r.in_use_by[party]).model_dump(mode="json", by_alias=True)


def _register(backend: Backend, resource_id: str, party: str, ttl: int | None) -> Json:
    if isinstance(backend, ServerBackend):
        return backend.client.use(resource_id, party, ttl=ttl)
    from datetime import timedelta

    store = _store(backend)
    asked = None if ttl is None else timedelta(seconds=ttl)
    r = store.use(resource_id, party, ttl=asked, client=LOCAL_CLIENT, admin=True)
    return _party_json(party, r)


def _say_use(use: Json, resource_id: str, verb: str, as_json: bool) -> None:
    if as_json:
        _print_json(use)
        return
    console.print(
        f"{verb} {use['party']} on {resource_id} until {use['expiresAt']} (client {use['client']})", highlight=False
    )


def use(
    resource_id: ResourceIdArgument,
    party: PartyArgument,
    ttl: TtlOption = None,
    server: ServerOption = None,
    database: DirectDatabaseOption = None,
    kinds: KindsOption = None,
    token_file: TokenFileOption = DEFAULT_TOKEN_FILE,
    as_json: JsonOption = False,
) -> None:
    """Register PARTY as using a resource (renews it if already registered); teardown waits for it."""
    with connect(server, database, kinds, token_file) as backend:
        registered = _register(backend, resource_id, party, ttl)
    _say_use(registered, resource_id, "registered", as_json)


def renew(
    resource_id: ResourceIdArgument,
    party: PartyArgument,
    ttl: TtlOption = None,
    server: ServerOption = None,
    database: DirectDatabaseOption = None,
    kinds: KindsOption = None,
    token_file: TokenFileOption = DEFAULT_TOKEN_FILE,
    as_json: JsonOption = False,
) -> None:
    """Renew PARTY's use of a resource: it lasts --ttl seconds from now (the same call as 'use')."""
    with connect(server, database, kinds, token_file) as backend:
        renewed = _register(backend, resource_id, party, ttl)
    _say_use(renewed, resource_id, "renewed", as_json)


def release(
    resource_id: ResourceIdArgument,
    party: PartyArgument,
    server: ServerOption = None,
    database: DirectDatabaseOption = None,
    kinds: KindsOption = None,
    token_file: TokenFileOption = DEFAULT_TOKEN_FILE,
) -> None:
    """Release PARTY's use of a resource; the last one leaving starts a teardown that waits for it."""
    with connect(server, database, kinds, token_file) as backend:
        if isinstance(backend, ServerBackend):
            backend.client.release(resource_id, party)
        else:
            store = _store(backend)
            live = store.get(resource_id).live_uses(store.now())
            if party not in live:
                using = ", ".join(sorted(live)) or "none"
                raise InvalidArgument(
                    "party", f"does not use resource {resource_id} (parties using it: {using})", party
                )
            store.release_use(resource_id, party, client=LOCAL_CLIENT, admin=True)
    console.print(f"released {party} from {resource_id}", highlight=False)


def parties(
    resource_id: ResourceIdArgument,
    server: ServerOption = None,
    database: DirectDatabaseOption = None,
    kinds: KindsOption = None,
    token_file: TokenFileOption = DEFAULT_TOKEN_FILE,
    as_json: JsonOption = False,
) -> None:
    """List the parties using a resource: who registered each and when its use expires."""
    with connect(server, database, kinds, token_file) as backend:
        if isinstance(backend, ServerBackend):
            items = backend.client.parties(resource_id)
        else:
            store = _store(backend)
            r = store.get(resource_id)
            items = [_party_json(party, r) for party in sorted(r.live_uses(store.now()))]
    if as_json:
        _print_json(items)
        return
    table = Table(title=f"parties using {resource_id}")
    for column in ("party", "client", "registered", "expires"):
        table.add_column(column)
    for item in items:
        table.add_row(item["party"], str(item["client"]), item["registeredAt"], item["expiresAt"])
    console.print(table)


def teardown(
    resource_id: ResourceIdArgument,
    force: Annotated[bool, typer.Option("--force", help="Tear down now, whoever still uses it (admin).")] = False,
    reason: Annotated[str | None, typer.Option("--reason", help="Why, for the journal.")] = None,
    server: ServerOption = None,
    database: DirectDatabaseOption = None,
    kinds: KindsOption = None,
    token_file: TokenFileOption = DEFAULT_TOKEN_FILE,
    as_json: JsonOption = False,
) -> None:
    """Force a resource's teardown whoever still uses it (--force; the admin scope over HTTP).

    To tear down once the parties are gone, set the desired state instead ('tenure desire ID undeployed').
    """
    if not force:
        errors.print(
            "[bold red]error:[/] teardown needs --force (it does not wait for the parties); to tear down once "
            "they are gone, set the desired state: tenure desire ID STATE",
            highlight=False,
        )
        raise typer.Exit(2)
    with connect(server, database, kinds, token_file) as backend:
        if isinstance(backend, ServerBackend):
            forced = backend.client.force_teardown(resource_id, reason=reason)
        else:
            from tenure.service.models import ResourceOut

            store = _store(backend)
            r = store.force_teardown(resource_id, actor=LOCAL_CLIENT, reason=reason)
            forced = ResourceOut.seen_in(store, r).model_dump(mode="json", by_alias=True)
    if as_json:
        _print_json(forced)
        return
    console.print(
        f"{resource_id}: teardown forced; state {forced['state']}, desired {forced['desiredState']}", highlight=False
    )
