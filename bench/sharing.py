"""Sharing: how fast parties register, renew and release uses, how fast the engine expires them, how soon
the last release starts a teardown, and how fast subscriptions are delivered.

Run ``.venv/bin/python bench/sharing.py`` (``--quick`` for a smoke run, ``--skip-postgres`` to leave
PostgreSQL out). For each store (a SQLite file, then a scratch PostgreSQL database):

* **API**: ``PUT /v1/resources/{id}/parties/{party}`` (register, then again: renew) and ``DELETE`` (release)
  against a real ``tenure serve --workers 0`` subprocess on 127.0.0.1 (auth on), from 1 and 8 client
  threads, each with its own keep-alive connection, next to the same store calls made in-process
  (``store.use`` / ``store.release_use``). Clients spread over a pool of deployments, so several
  parties share each one. Every answer's status is checked.
* **last release -> teardown started**: for each of many deployed deployments with one party and a
  teardown wish, the time from sending the party's ``DELETE`` to the answer; the teardown event is
  then checked in the journal at the very version the release wrote (one transaction), so the answer
  is the moment teardown started. p50 and p99.
* **expiry**: 100,000 uses (10 on each of 10,000 deployments) expire at once on an injected clock;
  the engine's sweep (``Worker.sweep_uses``, the batch size of a worker) removes them all, journaled.
* **deliveries**: subscription deliveries per second to a receiver on 127.0.0.1, to one subscription
  and to four at once (``bench/deliveries.py``, which also runs on its own).
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from api import BenchFailed, serving
from benchkit import scratch_database, unshadow

unshadow()

import httpx  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from tenure import Steps, Worker, open_store  # noqa: E402
from tenure.kinds import builtin_tables  # noqa: E402
from tenure.kinds.deployment import deployment  # noqa: E402
from tenure.store.protocol import EngineStore  # noqa: E402
from tenure.store.uses import UsePolicy  # noqa: E402

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SPEC = {"name": "web", "image": "nginx:1.27"}
JSON = "application/json"


class Clock:
    """A clock the expiry phase moves by hand (the store reads it; production stores read the real one)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def party(thread: int, i: int) -> str:
    return f"tag:bench.example,2026:t{thread}/p{i}"


def deployed_ids(store: EngineStore, n: int) -> list[str]:
    """``n`` deployments in state ``deployed`` (fired by hand: the bench runs no workers)."""
    ids = []
    for _ in range(n):
        r = store.create("deployment", SPEC)
        ids.append(store.fire(r, "deployed").id)
    return ids


# --- register / renew / release ------------------------------------------------------------------


def run_threads(clients: int, work: Callable[[int], int]) -> tuple[int, float]:
    done = [0] * clients
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            done[i] = work(i)
        except BaseException as exc:  # reported below: the run fails
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise BenchFailed(f"a client failed: {errors[0]!r}")
    return sum(done), elapsed


def api_phases(base_url: str, token: str, ids: list[str], clients: int, per_client: int) -> dict[str, float]:
    """Requests per second for register, renew and release through the API."""
    sessions = [
        httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30.0)
        for _ in range(clients)
    ]

    def path(t: int, i: int) -> str:
        return f"/v1/resources/{ids[(t * per_client + i) % len(ids)]}/parties/{quote(party(t, i), safe='')}"

    def op(method: str, want: int, body: bytes | None) -> Callable[[int], int]:
        def work(t: int) -> int:
            c = sessions[t]
            for i in range(per_client):
                headers = {"Content-Type": JSON} if body is not None else {}
                response = c.request(method, path(t, i), content=body, headers=headers)
                if response.status_code != want:
                    raise BenchFailed(f"{method} answered {response.status_code}, wanted {want}: {response.text}")
            return per_client

        return work

    rates = {}
    try:
        for name, method, want, body in (
            ("register", "PUT", 201, b'{"ttl_seconds": 3600}'),
            ("renew", "PUT", 200, b'{"ttl_seconds": 3600}'),
            ("release", "DELETE", 204, None),
        ):
            n, elapsed = run_threads(clients, op(method, want, body))
            rates[name] = n / elapsed
    finally:
        for c in sessions:
            c.close()
    return rates


def direct_phases(store: EngineStore, ids: list[str], clients: int, per_client: int) -> dict[str, float]:
    """The same operations as in-process store calls."""

    def rid(t: int, i: int) -> str:
        return ids[(t * per_client + i) % len(ids)]

    def register(t: int) -> int:
        for i in range(per_client):
            store.use(rid(t, i), party(t, i), ttl=timedelta(hours=1), client="bench")
        return per_client

    def release(t: int) -> int:
        for i in range(per_client):
            store.release_use(rid(t, i), party(t, i), client="bench")
        return per_client

    rates = {}
    for name, work in (("register", register), ("renew", register), ("release", release)):
        n, elapsed = run_threads(clients, work)
        rates[name] = n / elapsed
    return rates


def teardown_latency(base_url: str, token: str, store: EngineStore, n: int) -> tuple[float, float]:
    """p50 and p99 (ms) from the last party's DELETE being sent to its answer, teardown started."""
    ids = deployed_ids(store, n)
    for rid in ids:
        store.use(rid, party(0, 0), client="bench")
        store.set_desired_state(rid, "undeployed", client="creator")
    times = []
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30.0) as c:
        for rid in ids:
            t0 = time.perf_counter()
            response = c.delete(f"/v1/resources/{rid}/parties/{quote(party(0, 0), safe='')}")
            times.append((time.perf_counter() - t0) * 1000)
            if response.status_code != 204:
                raise BenchFailed(f"DELETE answered {response.status_code}: {response.text}")
    for rid in ids:
        r = store.get(rid)
        last = store.journal(rid)[-1]
        if r.state != "undeploying" or last.event != "undeploy" or last.detail.get("uses") != {party(0, 0): "released"}:
            raise BenchFailed(f"{rid}: the release did not start the teardown in its own write ({last})")
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))]


def expiry(url: str, resources: int, per_resource: int) -> tuple[float, int]:
    """Seconds for the engine's sweep to remove ``resources * per_resource`` expired uses."""
    clock = Clock()
    policy = UsePolicy(max_ttl=timedelta(hours=1))
    # Filling the store is not what is measured: on SQLite it skips the fsync of every commit.
    filling = open_store(url + ("?synchronous=normal" if url.startswith("sqlite") else ""), [deployment], clock=clock)
    try:
        ids = deployed_ids(filling, resources)
        for rid in ids:
            filling.change_uses(
                rid, register={party(j, 0): timedelta(minutes=10) for j in range(per_resource)}, client="bench"
            )
    finally:
        filling.close()
    clock.now += timedelta(minutes=11)
    store = open_store(url, [deployment], clock=clock, uses=policy)
    try:
        worker = Worker(store, Steps(), name="sweeper")
        t0 = time.perf_counter()
        while worker.sweep_uses():
            pass
        elapsed = time.perf_counter() - t0
        left = sum(len(store.get(rid).in_use_by) for rid in ids[:50])
        if left:
            raise BenchFailed(f"{left} uses left after the sweep")
        return elapsed, resources * per_resource
    finally:
        store.close()


# --- one store -----------------------------------------------------------------------------------


@contextmanager
def a_store(url: str) -> Iterator[EngineStore]:
    store = open_store(
        url, [deployment], check_schema=False, tables=builtin_tables(), uses=UsePolicy(max_ttl=timedelta(hours=1))
    )
    try:
        store.migrate()  # the built-in kinds' tables too: the server loads them
        yield store
    finally:
        store.close()


def bench_store(label: str, url: str, directory: str, quick: bool, console: Console) -> list[tuple[str, ...]]:
    per_client = 100 if quick else 1000
    rows: list[tuple[str, ...]] = []
    with a_store(url) as store:
        ids = deployed_ids(store, 50)
        direct = {c: direct_phases(store, ids, c, per_client) for c in (1, 8)}
        with serving(url, directory) as server:
            http = {c: api_phases(server.base_url, server.token, ids, c, per_client) for c in (1, 8)}
            p50, p99 = teardown_latency(server.base_url, server.token, store, 100 if quick else 1000)
    for c in (1, 8):
        for op in ("register", "renew", "release"):
            rows.append((label, f"{op}, {c} client(s)", f"{http[c][op]:,.0f}/s", f"{direct[c][op]:,.0f}/s",
                         f"{http[c][op] / direct[c][op]:.2f}x"))  # fmt: skip
    rows.append((label, "last release -> teardown started", f"p50 {p50:.2f} ms, p99 {p99:.2f} ms", "", ""))
    resources, each = (1000, 10) if quick else (10_000, 10)
    seconds, uses = expiry(url, resources, each)
    rows.append((label, f"expire {uses:,} uses ({resources:,} resources)", f"{seconds:.1f} s",
                 f"{uses / seconds:,.0f} uses/s", ""))  # fmt: skip
    figures = _deliveries().measure(url, 200 if quick else 2000)
    rows.append((label, "subscription deliveries, 1 subscription", f"{figures['one_subscription_per_second']:,.0f}/s",
                 "", ""))  # fmt: skip
    rows.append((label, "subscription deliveries, 4 at once", f"{figures['four_subscriptions_per_second']:,.0f}/s",
                 "", ""))  # fmt: skip
    console.print(f"[dim]{label} done[/dim]")
    return rows


def _deliveries() -> Any:
    """``bench/deliveries.py``, the subscriptions benchmark (importing a sibling puts the folder back a moment)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        return importlib.import_module("deliveries")
    finally:
        unshadow()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small runs, for a smoke test")
    parser.add_argument("--skip-postgres", action="store_true", help="leave PostgreSQL out")
    parser.add_argument(
        "--postgres-url", default=os.environ.get("TENURE_BENCH_POSTGRES_URL", DEFAULT_PG_URL), help="admin URL"
    )
    args = parser.parse_args()
    console = Console(width=160)
    rows: list[tuple[str, ...]] = []
    with tempfile.TemporaryDirectory(prefix="tenure-bench-sharing-") as directory:
        rows += bench_store("SQLite", f"sqlite:///{directory}/sharing.db", directory, args.quick, console)
        if not args.skip_postgres:
            try:
                with scratch_database(args.postgres_url) as url:
                    rows += bench_store("PostgreSQL", url, directory, args.quick, console)
            except OSError as exc:
                console.print(f"[yellow]PostgreSQL left out: {exc}[/yellow]")
    table = Table(title="tenure: sharing (through the API, next to direct store calls)")
    for column in ("store", "what", "API / figure", "direct store call", "API / direct"):
        table.add_column(column, justify="left" if column in ("store", "what") else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
