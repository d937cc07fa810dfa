"""The resource commands: ls, show, history, create, event, desire, retry, wait, kinds and draw.

Each one runs against a server (``--server``) or a database (``--database``) through
:class:`~tenure.cli.backend.Backend`, prints a Rich table or, with ``--json``, the API's JSON.
"""

from __future__ import annotations

import contextlib
import json
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.table import Table

from tenure.cli.backend import Backend, Json, ServerBackend, connect
from tenure.cli.common import (
    DEFAULT_TOKEN_FILE,
    DirectDatabaseOption,
    IfVersionOption,
    JsonOption,
    KindsOption,
    ResourceIdArgument,
    ServerOption,
    TokenFileOption,
    console,
    errors,
    reported,
)
from tenure.errors import InvalidUsage, ServerUnreachable, UnknownState

__all__ = [
    "create",
    "desire",
    "draw",
    "event",
    "history",
    "journal_table",
    "list_kinds",
    "ls",
    "resource_table",
    "retry",
    "show",
    "wait",
]


class DrawFormat(StrEnum):
    mermaid = "mermaid"
    dot = "dot"
    svg = "svg"


def _print_json(value: Any) -> None:
    # Plain print: Rich would wrap long lines and colour the text, and scripts read this.
    print(json.dumps(value, indent=2))


def _json_object(text: str | None, what: str) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidUsage(f"{what} is not valid JSON ({exc.msg} at position {exc.pos}); give a JSON object") from None
    if not isinstance(value, dict):
        raise InvalidUsage(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _when(value: Any) -> str:
    """An ISO timestamp from the API, shortened to the second for a table."""
    return "-" if not value else str(value).replace("T", " ")[:19]


def _short(value: Any, width: int = 60) -> str:
    text = _text(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _summary(r: Json) -> str:
    desired = f", desired {r['desiredState']}" if r.get("desiredState") else ""
    return f"{r['id']} {r['kind']} {r['state']}{desired} (version {r['version']})"


def resource_table(items: Iterable[Json], *, title: str = "resources") -> Table:
    """Resources as a table: id, kind, state, desired, version, updated, error."""
    table = Table(title=title)
    for column in ("id", "kind", "state", "desired", "version", "updated", "error"):
        table.add_column(column, overflow="fold" if column == "id" else "ellipsis")
    for r in items:
        table.add_row(
            r["id"], r["kind"], r["state"], _text(r.get("desiredState")), str(r["version"]),
            _when(r.get("updatedAt")), _short(r.get("error"), 40),
        )  # fmt: skip
    return table


def journal_table(entries: Iterable[Json], *, title: str) -> Table:
    """Journal entries (the API's shape) as a table."""
    table = Table(title=title)
    for column in ("version", "event", "from", "to", "actor", "at", "detail"):
        table.add_column(column)
    for e in entries:
        table.add_row(
            str(e["version"]), str(e["event"]), _text(e.get("fromState")), str(e["toState"]), _text(e.get("actor")),
            str(e["at"]).replace("T", " ")[:23], _short(e.get("detail") or None, 50),
        )  # fmt: skip
    return table


# --- commands ------------------------------------------------------------------------------------


def ls(
    kind: Annotated[str | None, typer.Option("--kind", help="Only resources of this kind.")] = None,
    state: Annotated[
        list[str] | None, typer.Option("--state", "-s", help="Only resources in this state (repeat for several).")
    ] = None,
    desired_state: Annotated[
        str | None, typer.Option("--desired-state", help="Only resources whose desired state is this one.")
    ] = None,
    party: Annotated[str | None, typer.Option("--party", help="Only resources this party (a URI) is using.")] = None,
    data: Annotated[
        str | None,
        typer.Option("--data", help="KEY:TEXT: only resources whose data holds TEXT under KEY (e.g. ended:failed)."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000, help="Resources per page.")] = 100,
    after: Annotated[
        str | None, typer.Option("--after", help="Start after this id (the 'next' of the previous page).")
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Walk every page, not just the first.")] = False,
    server: ServerOption = None,
    database: DirectDatabaseOption = None,
    kinds: KindsOption = None,
    token_file: TokenFileOption = DEFAULT_TOKEN_FILE,
    as_json: JsonOption = False,
) -> None:
    """List resources, oldest first (JSON: {"items": [...], "next": cursor or null})."""
    items: list[Json] = []
    wanted = None
    if data is not None:
        key, colon, text = data.partition(":")
        if not colon:
            with reported():
                raise InvalidUsage("--data must be KEY:TEXT, such as ended:failed")
        wanted = (key, text)
    with connect(server, database, kinds, token_file) as backend:
        cursor = after
        while True:
            page = backend.list(
                kind=kind,
                states=state or [],
                desired_state=desired_state,
                party=party,
                after=cursor,
                limit=limit,
                data=wanted,
            )
            items += page.items
            cursor = page.next
            if not every or cursor is None:
                break
    if as_json:
        _print_json({"items": items, "next": cursor})
        return
    console.print(resource_table(items, title=f"resources ({len(items)})"))
    if cursor is not None:
        console.print(f"more after {cursor}: use --all, or --after {cursor}", highlight=False)


def show(
    resource_id: ResourceIdArgument,
    server: ServerOption = None,
    database: DirectDatabaseOption = None,
    kinds: KindsOption = None,
    token_file: TokenFileOption = DEFAULT_TOKEN_FILE,
    as_json: JsonOption = False,
) -> None:
    """Show one resource."""
    with connect(server, database, kinds, token_file) as backend:
        resource = backend.get(resource_id)
    if as_json:
        _print_json(resource)
        return
    table = Table(show_header=False, title=f"resource {resource['id']}")
    for key, value in resource.items():
        table.add_row(key, _text(value))
    console.print(table)


def history(
    resource_id: ResourceIdArgument,
    server: ServerOption = None,
    database: DirectDatabaseOption = None,
    kinds: KindsOption = None,
    token_file: TokenFileOption = DEFAULT_TOKEN_FILE,
    as_json: JsonOption = False,
) -> None:
    """Show a resource's journal: every write, oldest first."""
    with connect(server, database, kinds, token_file) as backend:
        entries = backend.history(resource_id)
    if as_json:
        _print_json(entries)
        return
    console.print(journal_table(entries, title=f"history of {resource_id}"))


def create(
    kind: Annotated[str, typer.Argument(help="Kind of the new resource.")],
    spec: Annotated[str | None, typer.Argument(help="The spec, a JSON object.")] = None,
    sharable: Annotated[
        bool | None,
        typer.Option("--sharable/--not-sharable", help="Whether several parties may use it [default: the kind's]."),
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", help="Send the same key again to get the same resource.")
    ] = None,
    server: ServerOption = None,
    database: DirectDatabaseOption = None,
    kinds: KindsOption = None,
    token_file: TokenFileOption = DEFAULT_TOKEN_FILE,
    as_json: JsonOption = False,
) -> None:
    """Create a resource in its kind's initial state."""
    with connect(server, database, kinds, token_file) as backend:
        made = backend.create(kind, _json_object(spec, "the spec"), sharable=sharable, idempotency_key=idempotency_key)
    if as_json:
        _print_json(made)
        return
    console.print(_summary(made), highlight=False)


def event(
    resource_id: ResourceIdArgument,
    name: Annotated[str, typer.Argument(help="The event to fire.")],
    if_version: IfVersionOption = None,
    data: Annotated[str | None, typer.Option("--data", help="JSON object merged into the resource's data.")] = None,
    server: ServerOption = None,
    database: DirectDatabaseOption = None,
    kinds: KindsOption = None,
    token_file: TokenFileOption = DEFAULT_TOKEN_FILE,
    as_json: JsonOption = False,
) -> None:
    """Fire an event on a resource (a compare-and-swap, journaled)."""
    with connect(server, database, kinds, token_file) as backend:
        extra = _json_object(data, "--data") or None
        fired = backend.fire(resource_id, name, data=extra, if_version=if_version)
    if as_json:
        _print_json(fired)
        return
    console.print(_summary(fired), highlight=False)


def desire(
    resource_id: ResourceIdArgument,
    state: Annotated[str | None, typer.Argument(help="The state the resource should end up in.")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Drop the wish instead (no desired state).")] = False,
    if_version: IfVersionOption = None,
    server: ServerOption = None,
    database: DirectDatabaseOption = None,
    kinds: KindsOption = None,
    token_file: TokenFileOption = DEFAULT_TOKEN_FILE,
    as_json: JsonOption = False,
) -> None:
    """Set the state a resource should end up in; the engine takes it there (see 'tenure wait')."""
    if (state is None) == (not clear):
        errors.print("[bold red]error:[/] give a STATE, or --clear to drop the desired state", highlight=False)
        raise typer.Exit(2)
    with connect(server, database, kinds, token_file) as backend:
        changed = backend.set_desired_state(resource_id, None if clear else state, if_version=if_version)
    if as_json:
        _print_json(changed)
        return
    console.print(_summary(changed), highlight=False)


def retry(
    resource_id: ResourceIdArgument,
    if_version: IfVersionOption = None,
    server: ServerOption = None,
    database: DirectDatabaseOption = None,
    kinds: KindsOption = None,
    token_file: TokenFileOption = DEFAULT_TOKEN_FILE,
    as_json: JsonOption = False,
) -> None:
    """Retry a failed step now instead of after its backoff (the admin scope over HTTP).

    Only for a resource in a work state, or a rest state on its way to a desired state, whose next
    attempt is scheduled later; the attempt becomes due at once and the journal records it ('@retry-now').
    """
    with connect(server, database, kinds, token_file) as backend:
        retried = backend.retry_now(resource_id, if_version=if_version)
    if as_json:
        _print_json(retried)
        return
    console.print(f"{_summary(retried)}; next attempt due now ({retried['nextAttemptAt']})", highlight=False)


def list_kinds(
    server: ServerOption = None,
    database: DirectDatabaseOption = None,
    kinds: KindsOption = None,
    token_file: TokenFileOption = DEFAULT_TOKEN_FILE,
    as_json: JsonOption = False,
) -> None:
    """List the kinds that are loaded (here, or by the server)."""
    with connect(server, database, kinds, token_file) as backend:
        loaded = backend.kinds()
    if as_json:
        _print_json(loaded)
        return
    table = Table(title="kinds")
    for column in ("name", "version", "initial", "states", "events", "description"):
        table.add_column(column)
    for k in loaded:
        names = {e["name"] for e in k.get("events", [])}
        table.add_row(
            k["name"], str(k["version"]), k["initial"], str(len(k["states"])), str(len(names)), k.get("description")
        )
    console.print(table)


def draw(
    kind: Annotated[str, typer.Argument(help="Name of the kind to draw.")],
    fmt: Annotated[DrawFormat, typer.Option("--format", "-f", help="Output format.")] = DrawFormat.mermaid,
    server: ServerOption = None,
    kinds: KindsOption = None,
    token_file: TokenFileOption = DEFAULT_TOKEN_FILE,
) -> None:
    """Print a kind's state graph as Mermaid, Graphviz DOT or SVG (from the server with --server)."""
    with connect(server, None, kinds, token_file) as backend:
        text = backend.diagram(kind, fmt.value)
    sys.stdout.write(text)


def wait(
    resource_id: ResourceIdArgument,
    state: Annotated[str, typer.Option("--state", "-s", help="The state to wait for.", show_default=False)],
    timeout: Annotated[
        float, typer.Option("--timeout", "-t", min=0, help="Give up after this many seconds (0: never).")
    ] = 300.0,
    server: ServerOption = None,
    database: DirectDatabaseOption = None,
    kinds: KindsOption = None,
    token_file: TokenFileOption = DEFAULT_TOKEN_FILE,
    as_json: JsonOption = False,
) -> None:
    """Wait until a resource reaches a state (exit 0), showing its state while waiting.

    Exits 1 when the resource gets where STATE cannot be reached from (a final state, say) or time is up.

    Against a server it follows the event stream (or polls if it cannot); against a database it polls.

    With --json it prints the resource as last seen, also when it exits 1.
    """
    with connect(server, database, kinds, token_file) as backend:
        current = backend.get(resource_id)
        kind = backend.kind(current["kind"])
        names = [s["name"] for s in kind["states"]]
        if state not in names:
            raise UnknownState(kind["name"], state, names)
        waiter = _Waiter(current, kind, state, timeout)
        failure = waiter.verdict(current)
        if failure is None and current["state"] != state:
            failure = waiter.run(backend)
        last = waiter.current
    if as_json:
        _print_json(last)
    if failure is not None:
        errors.print(f"[bold red]error:[/] {failure}", highlight=False)
        raise typer.Exit(1)
    if not as_json:
        console.print(f"{_summary(last)} after {waiter.elapsed():.1f} s", highlight=False)


class _Waiter:
    """Follows one resource until it is in ``target``, cannot get there, or time is up."""

    def __init__(self, current: Json, kind: Json, target: str, timeout: float) -> None:
        self.current = current
        self.target = target
        self.timeout = timeout
        self.started = time.monotonic()
        self._roles = {s["name"]: s.get("role") for s in kind["states"]}
        self._edges: dict[str, set[str]] = {}
        for e in kind.get("events", []):
            for source in e.get("sources", []):
                self._edges.setdefault(source, set()).add(e["target"])

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _reachable(self, start: str) -> set[str]:
        seen, todo = {start}, deque([start])
        while todo:
            for nxt in self._edges.get(todo.popleft(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    def verdict(self, r: Json) -> str | None:
        """Why waiting is pointless now (None: reached, or still possible)."""
        now = r["state"]
        if now == self.target or self.target in self._reachable(now):
            return None
        if self._roles.get(now) == "final":
            return f"resource {r['id']} reached final state {now!r}, not {self.target!r}"
        return f"resource {r['id']} is in state {now!r}, from which its kind cannot reach {self.target!r}"

    def _line(self) -> str:
        r = self.current
        return (
            f"waiting for {r['id']} to reach [bold]{self.target}[/]: now [bold]{r['state']}[/] "
            f"(version {r['version']}), {self.elapsed():.1f} s"
        )

    def _gone(self, unreachable: ServerUnreachable) -> str:
        r = self.current
        return (
            f"the server is unreachable ({unreachable}); stopped waiting for resource {r['id']} to reach "
            f"{self.target!r} after {self.elapsed():.0f} s: it was last seen in state {r['state']!r} "
            f"(version {r['version']})"
        )

    def _timed_out(self, backend: Backend) -> str:
        r = self.current
        if isinstance(backend, ServerBackend):
            # Nothing new for the whole wait may mean a server that went away: say so if it did.
            try:
                backend.get(r["id"])
            except ServerUnreachable as exc:
                return self._gone(exc)
        return (
            f"timed out after {self.timeout:g} s waiting for resource {r['id']} to reach {self.target!r}; "
            f"it is in state {r['state']!r} (version {r['version']})"
        )

    def run(self, backend: Backend) -> str | None:
        """Follow the resource in a thread; returns None once reached, else why not."""
        inbox: queue.Queue[Json | BaseException] = queue.Queue()
        stop = threading.Event()

        def follow() -> None:
            try:
                backend.follow(self.current["id"], inbox.put, stop)
            except BaseException as exc:  # handed to the waiting thread, which reports it
                inbox.put(exc)

        # A daemon: a follower blocked on the stream must not keep the command alive once it is done.
        threading.Thread(target=follow, name="tenure-wait", daemon=True).start()
        live = errors.is_terminal
        if not live:
            # No spinner without a terminal: a line when waiting starts, and one per state seen.
            r = self.current
            errors.print(f"waiting for {r['id']} to reach {self.target}: now {r['state']} (version {r['version']})")
        try:
            with errors.status(self._line()) if live else contextlib.nullcontext() as status:
                while True:
                    left = self.timeout - self.elapsed() if self.timeout else 3600.0
                    if left <= 0:
                        return self._timed_out(backend)
                    try:
                        item = inbox.get(timeout=min(left, 0.1))
                    except queue.Empty:
                        if status is not None:
                            status.update(self._line())
                        continue
                    if isinstance(item, ServerUnreachable):
                        return self._gone(item)
                    if isinstance(item, BaseException):
                        raise item
                    if item["version"] < self.current["version"]:
                        continue  # an older snapshot overtaken by one already seen
                    moved = item["state"] != self.current["state"]
                    self.current = item
                    if moved and not live:
                        errors.print(
                            f"{item['id']}: {item['state']} (version {item['version']}, {self.elapsed():.1f} s)",
                            highlight=False,
                        )
                    if item["state"] == self.target:
                        return None
                    failure = self.verdict(item)
                    if failure is not None:
                        return failure
                    if status is not None:
                        status.update(self._line())
        finally:
            stop.set()
