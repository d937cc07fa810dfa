"""The process ``test_memory.py`` measures: a real worker running many transfer lifecycles.

Usage::

    python -m tests.acceptance.memory_worker URL --lifecycles N --marks 1000,2000 --out PATH   # from the project's root

It opens the (migrated) store at ``URL``, starts a :class:`~tenure.engine.Worker` on the built-in
``transfer`` steps with their built-in provisioner (:class:`~tenure.engine.provision.MemoryProvisioner`),
and drives ``N`` whole lifecycles through it, a window at a time: create, fire ``complete`` once
started, wait until deprovisioned. After each mark (a number of lifecycles done) it records its
resident set size (``VmRSS``), after a garbage collection, and at the end writes the samples to
``PATH`` as JSON ``{"rss_kib": {"<lifecycles>": kib, ...}}``.

What the driver itself keeps is bounded by the window, so any growth is the worker's (or tenure's).
"""

from __future__ import annotations

import argparse
import gc
import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from tenure import open_store
from tenure.engine import Worker
from tenure.kinds.transfer import transfer_steps
from tenure.store.protocol import EngineStore

__all__ = ["main", "rss_kib"]

#: Transfers in flight at once.
WINDOW = 40
#: Bytes SQLite may keep in its page caches, all connections of the process together (soft limit).
SQLITE_HEAP_LIMIT = 2 * 1024 * 1024


def rss_kib() -> int:
    """This process's resident set size now, in KiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def run_window(store: EngineStore, count: int, first: int) -> None:
    """Create ``count`` transfers and drive them to the end of their lifecycle."""
    pending = {store.create("transfer", {"asset": f"asset-{first + i}"}).id for i in range(count)}
    completed: set[str] = set()
    while pending:
        seen = store.signal.seq
        for rid in list(pending):
            r = store.get(rid)
            if r.state == "started" and rid not in completed:
                store.fire(r, "complete")
                completed.add(rid)
            elif r.state in ("deprovisioned", "deprovisioning_failed"):
                if r.state != "deprovisioned":
                    raise RuntimeError(f"transfer {rid} ended in {r.state}: {r.error}")
                pending.discard(rid)
        if pending:
            store.signal.wait(seen, 0.05)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--lifecycles", type=int, required=True)
    parser.add_argument("--marks", required=True, help="comma-separated lifecycle counts to sample RSS after")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    marks = sorted({int(m) for m in args.marks.split(",")} | {args.lifecycles})
    if args.url.startswith("sqlite:"):
        # SQLite's page caches (2 MB a connection, one connection a thread) fill up as the database
        # grows: cap them for the whole process, so that what grows is what tenure keeps.
        sqlite3.connect(":memory:").execute(f"PRAGMA soft_heap_limit = {SQLITE_HEAP_LIMIT}").close()
    store = open_store(args.url)
    worker = Worker(store, transfer_steps(), concurrency=4).start()
    samples: dict[str, int] = {}
    done = 0
    started = time.monotonic()
    try:
        while done < args.lifecycles:
            count = min(WINDOW, args.lifecycles - done)
            run_window(store, count, done)
            done += count
            if marks and done >= marks[0]:
                gc.collect()
                samples[str(done)] = rss_kib()
                marks = [m for m in marks if m > done]
    finally:
        worker.stop()
        store.close()
    report = {"rss_kib": samples, "seconds": time.monotonic() - started, "claimed": worker.stats.claimed}
    args.out.write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
