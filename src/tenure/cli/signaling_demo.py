"""``tenure demo signaling``: a control plane and a data plane, two processes, every row of seed 001's table.

It starts both as ``tenure serve`` processes (:mod:`tenure.cli.planes`), each with its own SQLite
database, then walks a consumer and a provider transfer through every row of the table, once
without resources to provision (the data plane answers "not async") and once with one (it
provisions, or deprovisions, and calls back). Each transition is printed with the process that made
it, and the table is checked against the journals at the end.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from tenure.cli.common import console, errors

__all__ = ["ROWS", "Row", "Scenario", "rows_taken", "signaling"]


@dataclass(frozen=True, slots=True)
class Row:
    """One row of seed 001's table: from ``state``, for ``side``, ``signal`` leads to one of two states."""

    state: str
    side: str
    signal: str
    if_async: str
    if_not: str


#: Seed 001's table.
ROWS = (
    Row("initial", "consumer", "prepare", "preparation_requested", "requesting"),
    Row("initial", "provider", "start", "startup_requested", "starting"),
    Row("started", "consumer", "suspend", "suspension_requested", "suspending"),
    Row("started", "provider", "suspend", "suspension_requested", "suspending"),
    Row("started", "consumer", "terminate", "termination_requested", "terminating"),
    Row("started", "provider", "terminate", "termination_requested", "terminating"),
)


def rows_taken(side: str, journal: Iterable[Mapping[str, Any]]) -> set[tuple[Row, bool]]:
    """The rows (and whether async) a transfer of ``side`` took, read from its control-plane journal."""
    moves = [(e.get("fromState"), e.get("toState")) for e in journal]
    taken = set()
    for row in ROWS:
        if row.side != side:
            continue
        for source, target in moves:
            if source == row.state and target == row.if_async:
                taken.add((row, True))
            elif source == row.state and target == row.if_not:
                taken.add((row, False))
    return taken


@dataclass(frozen=True, slots=True)
class Scenario:
    """One transfer the demo walks: its side, and whether the data plane has anything to provision."""

    side: str
    provisions: bool

    @property
    def title(self) -> str:
        how = "with a bucket to provision (async)" if self.provisions else "with nothing to provision (not async)"
        return f"{self.side} transfer, {how}"

    def spec(self, dataplane: str) -> dict[str, Any]:
        resources = [{"id": "bucket", "type": "memory-async", "spec": {"delayMs": 150}}] if self.provisions else []
        return {
            "asset": f"{self.side}-report.csv",
            "type": self.side,
            "dataplane": dataplane,
            "destination": {"type": "memory", "path": f"/landing/{self.side}"},
            "resources": resources,
        }


SCENARIOS = (
    Scenario("consumer", False),
    Scenario("consumer", True),
    Scenario("provider", False),
    Scenario("provider", True),
)


#: Where a data plane's flow rests between signals (every other state is an operation under way).
_FLOW_AT_REST = (
    "received",
    "provisioned",
    "started",
    "suspended",
    "completed",
    "terminated",
    "deprovisioned",
    "failed",
)


class _Printer:
    """Prints the journal entries of a transfer on every plane that it has not printed yet, in time order."""

    def __init__(self, planes: Any, out: Callable[[str], None]) -> None:
        self.planes = planes
        self.out = out
        self.seen: set[tuple[str, int]] = set()

    def flush(self, resource_id: str) -> None:
        fresh = [(p, e) for p, e in self.planes.journals(resource_id) if (p, e["version"]) not in self.seen]
        for plane, entry in sorted(fresh, key=lambda pe: pe[1]["at"]):
            self.seen.add((plane, entry["version"]))
            at = str(entry["at"])[11:23]
            source = entry.get("fromState") or "·"
            who = entry.get("actor") or "-"
            self.out(
                f"  [cyan]{plane:>13}[/]  {at}  {source} → [bold]{entry['toState']}[/]  "
                f"[dim]({entry['event']}, by {who})[/]"
            )


def _wait_for(http: Any, resource_id: str, states: Iterable[str], timeout: float) -> dict[str, Any]:
    wanted = set(states)
    deadline = time.monotonic() + timeout
    while True:
        resource: dict[str, Any] = http.get(f"/v1/resources/{resource_id}").json()
        if resource["state"] in wanted:
            return resource
        if time.monotonic() > deadline:
            raise TimeoutError(f"{resource_id} is {resource['state']!r}, not one of {sorted(wanted)}")
        time.sleep(0.05)


def walk(planes: Any, scenario: Scenario, out: Callable[[str], None], *, timeout: float = 30.0) -> str:
    """Take one transfer of ``scenario`` through start, suspend, resume and terminate; returns its id."""
    printer = _Printer(planes, out)
    with planes.control.client() as cp:
        made = cp.post("/v1/resources", json={"kind": "transfer", "spec": scenario.spec("dp1")})
        made.raise_for_status()
        rid = str(made.json()["id"])
        out(f"[bold]{scenario.title}[/]: {rid}")
        if scenario.side == "consumer":
            _wait_for(cp, rid, ["requested"], timeout)
            printer.flush(rid)
            out("  [dim]the provider's start message arrives (client event start)[/]")
            cp.post(f"/v1/resources/{rid}/events", json={"event": "start"}).raise_for_status()
        _wait_for(cp, rid, ["started"], timeout)
        printer.flush(rid)
        for wish, rest in (("suspended", "suspended"), ("started", "started"), ("terminated", "terminated")):
            out(f"  [dim]the client asks for desiredState {wish}[/]")
            cp.put(f"/v1/resources/{rid}/desired-state", json={"desiredState": wish}).raise_for_status()
            _wait_for(cp, rid, [rest], timeout)
            # The data plane may still be finishing: its flow's last moves follow the callback.
            with planes.dataplanes["dp1"].client() as dp:
                _wait_for(dp, rid, _FLOW_AT_REST, timeout)
            printer.flush(rid)
    return rid


def signaling(
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir", help="Where the two planes keep their databases, configs and logs (default: a temp dir)."
        ),
    ] = None,
    deadline: Annotated[
        float, typer.Option("--deadline", min=1.0, help="Seconds a *_requested state waits before asking again.")
    ] = 30.0,
) -> None:
    """Start a control plane and a data plane and walk transfers through every row of seed 001's table."""
    from tenure.cli.planes import LocalPlanes

    with tempfile.TemporaryDirectory(prefix="tenure-signaling-") as scratch:
        home = directory or Path(scratch)
        planes = LocalPlanes(home, dataplanes=["dp1"], request_deadline=deadline)
        console.print(f"starting the control plane and data plane dp1 under {home} ...")
        with planes:
            console.print(f"control plane {planes.control.url}, data plane dp1 {planes.dataplanes['dp1'].url}\n")
            seen: dict[tuple[Row, bool], str] = {}
            for scenario in SCENARIOS:
                rid = walk(planes, scenario, console.print)
                with planes.control.client() as cp:
                    journal = cp.get(f"/v1/resources/{rid}/journal", params={"limit": 1000}).json()["items"]
                for taken in rows_taken(scenario.side, journal):
                    seen.setdefault(taken, rid)
                console.print()
        missing = [(row, a) for row in ROWS for a in (True, False) if (row, a) not in seen]
        console.print("[bold]seed 001's table, as the journals show it[/]")
        for row in ROWS:
            for is_async in (True, False):
                target = row.if_async if is_async else row.if_not
                mark = "[green]✓[/]" if (row, is_async) in seen else "[red]✗[/]"
                console.print(f"  {mark} {row.state:8} {row.side:9} {row.signal:10} → {target}")
        if missing:
            errors.print(f"[bold red]error:[/] {len(missing)} row(s) of the table were not taken")
            raise typer.Exit(1)
