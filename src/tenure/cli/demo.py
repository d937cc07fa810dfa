"""``tenure demo``: race conflicting events at real resources and show that exactly one wins."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import typer

from tenure.cli.common import DatabaseOption, console, reported
from tenure.errors import Conflict, TransitionNotAllowed

if TYPE_CHECKING:
    from rich.progress import Progress

    from tenure.store import Resource
    from tenure.store.protocol import Store

__all__ = ["demo"]

#: Every one of these is allowed from ``queued``; racing them at one snapshot leaves one winner.
RACING_EVENTS = ("upload", "stage", "import", "delete")
#: Fired without a version after round one: the kind decides which still make sense.
FOLLOW_UPS = ("activate", "kill", "reset", "delete")


@dataclass(frozen=True, slots=True)
class Attempt:
    resource_id: str
    thread: int
    event: str
    outcome: str  # "won", "conflict" or "refused"
    version: int | None


def _race(store: Store, targets: list[Resource], threads: int, progress: Progress, *, pinned: bool) -> list[Attempt]:
    """Each thread fires its own event at every target at the same moment (a barrier lines them up)."""
    attempts: list[Attempt] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads)
    events = RACING_EVENTS if pinned else FOLLOW_UPS
    task = progress.add_task("round 1: pinned to version 1" if pinned else "round 2: unpinned", total=len(targets))

    failures: list[BaseException] = []

    def run(n: int) -> None:
        try:
            fire_all(n)
        except BaseException as exc:  # a broken thread must not leave the others at the barrier
            failures.append(exc)
            barrier.abort()

    def fire_all(n: int) -> None:
        event = events[n % len(events)]
        for target in targets:
            barrier.wait(timeout=60)
            try:
                after = store.fire(target if pinned else target.id, event, actor=f"thread-{n}")
                result = Attempt(target.id, n, event, "won", after.version)
            except Conflict:
                result = Attempt(target.id, n, event, "conflict", None)
            except TransitionNotAllowed:
                result = Attempt(target.id, n, event, "refused", None)
            with lock:
                attempts.append(result)
                if n == 0:
                    progress.advance(task)

    workers = [threading.Thread(target=run, args=(n,), name=f"demo-{n}") for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    real = [f for f in failures if not isinstance(f, threading.BrokenBarrierError)]
    if real or failures:
        raise (real or failures)[0]
    return attempts


def _replay_matches(store: Store, resource: Resource) -> bool:
    """Replaying the journal through the kind gives the row's state and version."""
    from tenure.store import CREATE_EVENT

    kind = store.kind_of(resource)
    state, version = None, 0
    for entry in store.journal(resource.id):
        if entry.event == CREATE_EVENT:
            state = kind.initial.name
        elif state is None or kind.target(state, entry.event) != entry.to_state:
            return False
        else:
            state = entry.to_state
        version = entry.version
    return (state, version) == (resource.state, resource.version)


def demo(
    ctx: typer.Context,
    database: DatabaseOption = None,
    resources: Annotated[int, typer.Option("--resources", "-n", min=1, max=500, help="Images to create.")] = 8,
    threads: Annotated[int, typer.Option("--threads", "-t", min=2, max=16, help="Racing threads.")] = 4,
) -> None:
    """Race conflicting events at images from several threads and show who won (or: tenure demo signaling)."""
    if ctx.invoked_subcommand is not None:
        return
    from tenure.kinds import builtin_kinds, builtin_tables
    from tenure.store import open_store

    with reported():
        store = open_store(database, builtin_kinds(), check_schema=False, tables=builtin_tables())
        try:
            applied = store.migrate()
            if applied:
                console.print(f"migrated {store.target} (applied {', '.join(map(str, applied))})")
            _run(store, resources, threads)
        finally:
            store.close()


def _run(store: Store, count: int, threads: int) -> None:
    from rich.progress import Progress
    from rich.table import Table

    from tenure.cli.resources import journal_table
    from tenure.service.models import JournalOut

    console.print(f"[bold]tenure demo[/] on {store.target}: {count} images, {threads} threads racing\n")
    with Progress(console=console, transient=False) as progress:
        task = progress.add_task("creating images", total=count)
        created = []
        for i in range(count):
            created.append(store.create("image", {"name": f"demo-{i}", "disk_format": "qcow2"}, actor="demo"))
            progress.advance(task)
        first = _race(store, created, threads, progress, pinned=True)
        second = _race(store, created, threads, progress, pinned=False)

    table = Table(title="who won")
    for column in ("resource", "round 1: all at version 1", "round 2: by id", "now"):
        table.add_column(column)
    final = {r.id: store.get(r.id) for r in created}
    for r in created:
        mine1 = [a for a in first if a.resource_id == r.id]
        mine2 = [a for a in second if a.resource_id == r.id]
        winner = next(a for a in mine1 if a.outcome == "won")
        lost = sum(a.outcome == "conflict" for a in mine1)
        won2 = " then ".join(a.event for a in sorted(mine2, key=lambda a: a.version or 0) if a.outcome == "won")
        refused = sum(a.outcome == "refused" for a in mine2)
        table.add_row(
            r.id[-8:],
            f"{winner.event} by thread-{winner.thread} ({lost} lost)",
            f"{won2 or 'nothing'} ({refused} refused)",
            f"{final[r.id].state} v{final[r.id].version}",
        )
    console.print(table)
    sample = created[0].id
    entries = [JournalOut.of(e).model_dump(mode="json", by_alias=True) for e in store.journal(sample)]
    console.print(journal_table(entries, title=f"journal of {sample}"))

    outcomes = Counter(a.outcome for a in first + second)
    wins_per_version = Counter((a.resource_id, a.version) for a in first + second if a.outcome == "won")
    one_winner = all(n == 1 for n in wins_per_version.values()) and all(
        sum(a.outcome == "won" for a in first if a.resource_id == r.id) == 1 for r in created
    )
    replay_ok = all(_replay_matches(store, final[r.id]) for r in created)
    console.print(
        f"\n{len(first) + len(second)} events fired: {outcomes['won']} won, {outcomes['conflict']} lost a "
        f"compare-and-swap, {outcomes['refused']} refused by the kind."
    )
    console.print(f"exactly one winner per version: {'[green]yes[/]' if one_winner else '[red]NO[/]'}")
    console.print(
        f"journal replay gives every row's state and version: {'[green]yes[/]' if replay_ok else '[red]NO[/]'}"
    )
    if not (one_winner and replay_ok):
        raise typer.Exit(1)
