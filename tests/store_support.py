"""Helpers shared by the store tests: a settable clock, history checks, and the race worker.

The race worker runs the same way in a thread and in a spawned process: it opens its own store from
a URL, so nothing but plain values crosses the boundary.
"""

from __future__ import annotations

import random
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import psycopg

from tenure import Conflict, JournalEntry, Kind, Resource, TransitionNotAllowed, open_store
from tenure.kinds.image import image
from tenure.store import CREATE_EVENT
from tenure.store.protocol import EngineStore

__all__ = [
    "RACE_EVENTS",
    "FakeClock",
    "Lost",
    "Refused",
    "Report",
    "Win",
    "all_journal",
    "bring_to_active",
    "check_history",
    "check_lockstep",
    "choose_event",
    "feed_all",
    "process_main",
    "race_worker",
    "replay",
]


class FakeClock:
    """A clock that only moves when told to (injected into stores with ``clock=``)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta = timedelta(seconds=1)) -> datetime:
        self.now += delta
        return self.now


# --- reading and checking histories -------------------------------------------------------------


def all_journal(store: EngineStore, resource_id: str) -> list[JournalEntry]:
    """Every journal entry of one resource, paging through ``after_version``."""
    out: list[JournalEntry] = []
    while True:
        page = store.journal(resource_id, after_version=out[-1].version if out else 0, limit=500)
        out.extend(page)
        if len(page) < 500:
            return out


def feed_all(store: EngineStore, after_seq: int = 0) -> list[JournalEntry]:
    """Every journal entry after ``after_seq``, paging through the feed."""
    out: list[JournalEntry] = []
    cursor = after_seq
    while True:
        page = store.feed(after_seq=cursor, limit=500)
        out.extend(page)
        if len(page) < 500:
            return out
        cursor = page[-1].seq


def replay(kind: Kind, entries: Sequence[JournalEntry]) -> tuple[str, int]:
    """Replay a resource's journal through ``kind``; returns (state, version) it arrives at.

    Fails if the journal does not start with the creation in the initial state, skips or repeats a
    version, or holds a step the kind does not allow from the state the previous step reached.
    """
    assert entries, "a resource has no journal at all"
    first = entries[0]
    rid = first.resource_id
    assert (first.version, first.event, first.from_state, first.to_state) == (
        1,
        CREATE_EVENT,
        None,
        kind.initial.name,
    ), f"{rid}: journal does not start with its creation: {first}"
    state = first.to_state
    for number, entry in enumerate(entries[1:], start=2):
        assert entry.resource_id == rid
        assert entry.version == number, f"{rid}: journal version {entry.version} where {number} was due"
        assert entry.from_state == state, (
            f"{rid} v{number}: journal says from {entry.from_state!r}, replay is at {state!r}"
        )
        assert kind.allows(state, entry.event), f"{rid} v{number}: {entry.event!r} is not allowed in {state!r}"
        assert kind.target(state, entry.event) == entry.to_state, f"{rid} v{number}: wrong target {entry.to_state!r}"
        state = entry.to_state
    return state, len(entries)


@dataclass(frozen=True, slots=True)
class Win:
    """A fire that returned successfully."""

    resource_id: str
    version: int
    event: str
    from_state: str | None  # None when the writer could not know it (a blind fire)
    to_state: str
    actor: str
    round: int | None = None


@dataclass(frozen=True, slots=True)
class Lost:
    """A fire refused with :class:`Conflict`."""

    resource_id: str
    expected_version: int
    actual_version: int
    actual_state: str | None
    actor: str
    round: int | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """A blind fire (by id, no version) refused because the state had moved on in the meantime."""

    resource_id: str
    event: str
    read_state: str
    refused_state: str
    actor: str


@dataclass(slots=True)
class Report:
    actor: str
    wins: list[Win] = field(default_factory=list)
    lost: list[Lost] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    error: str | None = None


def check_history(
    store: EngineStore, resource_ids: Iterable[str], wins: Sequence[Win], *, after_seq: int = 0
) -> dict[str, list[JournalEntry]]:
    """The invariants every history must keep, whoever wrote it; returns the journals read.

    ``wins`` must hold every successful fire on ``resource_ids`` since their creation.
    """
    ids = list(resource_ids)
    kinds = store.kinds
    winners = Counter((w.resource_id, w.version) for w in wins)
    twice = {key: n for key, n in winners.items() if n > 1}
    assert not twice, f"more than one writer won the same (resource, version): {twice}"

    journals = {rid: all_journal(store, rid) for rid in ids}
    rows = sum(len(j) for j in journals.values())
    assert len(wins) == rows - len(ids), (
        f"{len(wins)} successful fires but {rows - len(ids)} journal rows besides the creations"
    )
    for rid, entries in journals.items():
        current = store.get(rid)
        assert replay(kinds[current.kind], entries) == (current.state, current.version), (
            f"{rid}: replaying the journal does not give the row ({current.state!r} v{current.version})"
        )

    journaled = {(e.resource_id, e.version): e for entries in journals.values() for e in entries}
    for w in wins:
        entry = journaled.get((w.resource_id, w.version))
        assert entry is not None, f"lost update: {w} is not in the journal"
        assert (entry.event, entry.to_state, entry.actor) == (w.event, w.to_state, w.actor), (
            f"the journal row {entry} is not the write {w} that was reported as won"
        )
        assert w.from_state in (None, entry.from_state), f"{w} left {w.from_state!r}, the journal says otherwise"

    wanted = set(ids)
    from_feed = [e for e in feed_all(store, after_seq) if e.resource_id in wanted]
    assert sorted((e.resource_id, e.version) for e in from_feed) == sorted(journaled), "feed and journal disagree"
    seqs = [e.seq for e in from_feed]
    assert seqs == sorted(set(seqs)), "feed is not in strictly increasing seq order"
    return journals


def check_lockstep(reports: Sequence[Report], workers: int) -> int:
    """In a lockstep round every worker fired at the same snapshot: one wins, the others conflict.

    Returns the number of rounds that had a winner.
    """
    wins_by_round: dict[int, list[Win]] = defaultdict(list)
    lost_by_round: dict[int, list[Lost]] = defaultdict(list)
    for rep in reports:
        for w in rep.wins:
            if w.round is not None:
                wins_by_round[w.round].append(w)
        for c in rep.lost:
            if c.round is not None:
                lost_by_round[c.round].append(c)
    for rnd, lost in lost_by_round.items():
        assert len(wins_by_round.get(rnd, [])) == 1, f"round {rnd}: {len(lost)} conflicts but no single winner"
    for rnd, ws in wins_by_round.items():
        assert len(ws) == 1, f"round {rnd}: {len(ws)} winners on one snapshot: {ws}"
        (win,) = ws
        lost = lost_by_round.get(rnd, [])
        assert len(lost) == workers - 1, f"round {rnd}: one winner but {len(lost)} conflicts of {workers - 1}"
        for c in lost:
            assert (c.resource_id, c.expected_version, c.actual_version, c.actual_state) == (
                win.resource_id,
                win.version - 1,
                win.version,
                win.to_state,
            ), f"round {rnd}: conflict {c} does not describe the winner {win}"
    return len(wins_by_round)


# --- the race worker ------------------------------------------------------------------------------


def bring_to_active(store: EngineStore, count: int) -> tuple[list[str], list[Win]]:
    """Create ``count`` images and take each to ``active``; returns their ids and the wins doing so."""
    ids: list[str] = []
    wins: list[Win] = []
    for i in range(count):
        r = store.create("image", {"name": f"race-{i}"})
        ids.append(r.id)
        for event in ("upload", "activate"):
            after = store.fire(r, event, actor="setup")
            wins.append(Win(r.id, after.version, event, r.state, after.state, "setup"))
            r = after
    return ids, wins


#: Event weights per state for the racing workers: mostly the active <-> deactivated cycle, sometimes
#: a conflicting delete.
RACE_EVENTS: Mapping[str, Sequence[tuple[str, float]]] = {
    "queued": (("upload", 1.0),),
    "saving": (("activate", 1.0),),
    "active": (("deactivate", 0.97), ("delay_delete", 0.02), ("delete", 0.01)),
    "deactivated": (("reactivate", 0.99), ("delete", 0.01)),
    "pending_delete": (("scrub", 0.5), ("delete", 0.5)),
}


def choose_event(rng: random.Random, state: str) -> str | None:
    """An event the image kind allows in ``state`` (None in a final state)."""
    options = RACE_EVENTS.get(state)
    if not options:
        return None
    events = [e for e, _ in options]
    weights = [w for _, w in options]
    chosen = rng.choices(events, weights)[0]
    assert image.allows(state, chosen)
    return chosen


class BarrierLike(Protocol):
    def wait(self, timeout: float | None = None) -> int: ...

    def abort(self) -> None: ...


def _fire(store: EngineStore, rid: str, rng: random.Random, report: Report, *, style: str) -> None:
    snap = store.get(rid)
    event = choose_event(rng, snap.state)
    if event is not None:
        _fire_at(store, snap, event, report, style=style, rnd=None)


def _fire_at(store: EngineStore, snap: Resource, event: str, report: Report, *, style: str, rnd: int | None) -> None:
    actor = report.actor
    try:
        if style == "snapshot":
            after = store.fire(snap, event, actor=actor)
        elif style == "pinned":
            after = store.fire(snap.id, event, expected_version=snap.version, actor=actor)
        else:
            after = store.fire(snap.id, event, actor=actor)
    except Conflict as exc:
        report.lost.append(Lost(snap.id, exc.expected_version, exc.actual_version, exc.actual_state, actor, rnd))
        return
    except TransitionNotAllowed as exc:
        if style != "blind":
            raise
        report.refused.append(Refused(snap.id, event, snap.state, exc.state, actor))
        return
    # A blind fire re-reads after a lost race, so the state it left is not known here (None).
    source = None if style == "blind" else snap.state
    report.wins.append(Win(snap.id, after.version, event, source, after.state, actor, rnd))


def race_worker(
    url: str,
    ids: Sequence[str],
    actor: str,
    *,
    rounds: int,
    free_ops: int,
    seed: int,
    barrier: BarrierLike,
    timeout: float = 60.0,
) -> Report:
    """Race the other workers on ``ids``; each round is a lockstep shot at one resource, then free play.

    Lockstep: wait for everybody, read the same resource, wait again (so all hold the same snapshot),
    then fire at it - by snapshot or by id with the expected version - and wait until every shot has
    landed, so nothing else touched the resource in between. Free play: ``free_ops`` fires on
    random resources with any of the three styles.
    """
    rng = random.Random(seed)
    report = Report(actor)
    store = open_store(url, [image])
    try:
        for rnd in range(rounds):
            rid = ids[rnd % len(ids)]
            barrier.wait(timeout)
            snap = store.get(rid)
            barrier.wait(timeout)
            event = choose_event(rng, snap.state)
            if event is not None:
                _fire_at(store, snap, event, report, style=rng.choice(("snapshot", "pinned")), rnd=rnd)
            barrier.wait(timeout)  # every lockstep shot has landed before anybody plays freely
            for _ in range(free_ops):
                _fire(store, rng.choice(ids), rng, report, style=rng.choice(("snapshot", "pinned", "blind")))
    except BaseException:
        barrier.abort()
        raise
    finally:
        store.close()
    return report


def process_main(
    *,
    url: str,
    ids: list[str],
    actor: str,
    rounds: int,
    free_ops: int,
    seed: int,
    barrier: BarrierLike,
    queue: Any,
) -> None:
    """Entry point of a racing process: runs :func:`race_worker` and puts its report on ``queue``."""
    try:
        report = race_worker(url, ids, actor, rounds=rounds, free_ops=free_ops, seed=seed, barrier=barrier)
    except BaseException:
        report = Report(actor, error=traceback.format_exc())
    queue.put(report)


def settle(store: EngineStore) -> None:
    """Wait until every committed journal entry is below PostgreSQL's horizon (elsewhere: at once).

    On PostgreSQL the change feed, the counts fold and retention's walk hold back entries above the
    oldest transaction still running anywhere on the server (other tests' included), so right after a
    write they may not see it yet.
    """
    if getattr(store, "dialect", "") != "postgres":
        return
    deadline = time.monotonic() + 20
    with psycopg.connect(store.conninfo, autocommit=True) as conn:  # type: ignore[attr-defined]
        while True:
            row = conn.execute(
                "SELECT count(*) FROM journal WHERE txid >= pg_snapshot_xmin(pg_current_snapshot())"
            ).fetchone()
            if row is not None and row[0] == 0:
                return
            assert time.monotonic() < deadline, "a transaction on the server held the journal back for 20 s"
            time.sleep(0.005)
