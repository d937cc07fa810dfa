"""Webhook deliveries per second: changes sent to subscribers on 127.0.0.1, on SQLite and PostgreSQL.

Run ``.venv/bin/python bench/deliveries.py`` (``--quick`` for a smoke run, ``--skip-postgres`` to leave
PostgreSQL out). For each store (a SQLite file with ``synchronous=full``, then a scratch PostgreSQL
database) it writes ``n`` changes to ``bench_kinds.toggle`` resources, then times:

* **one subscription**: a :class:`~tenure.engine.deliveries.Deliverer` sends them one by one, in
  order, each a signed POST followed by the cursor move that records it (one transaction each);
* **four subscriptions**: four subscriptions to the same changes, delivered by the deliverer's
  background loop, four subscriptions at once (each still one change at a time, in order).

The receiver is a threaded ``http.server`` on 127.0.0.1 answering 204 and checking every signature;
each run checks that every change arrived exactly once per subscription (by delivery id) and stops
with exit status 1 otherwise. The rates include the receiver's own time: compare them with each other.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_kinds import NEXT, toggle
from benchkit import scratch_database, unshadow, version

unshadow()

import psycopg  # noqa: E402

from tenure.engine.deliveries import Deliverer  # noqa: E402
from tenure.engine.signing import verify_signature  # noqa: E402
from tenure.store import open_store  # noqa: E402
from tenure.store.subscriptions import Subscriptions  # noqa: E402

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
#: Changes written per resource (each resource's events cycle off <-> on).
PER_RESOURCE = 10


class Receiver:
    """Counts the deliveries it is sent, by subscription and delivery id, checking each signature."""

    def __init__(self, secrets: dict[str, str]) -> None:
        self.secrets = secrets
        self.seen: Counter[tuple[str, str]] = Counter()
        self.bad = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver would

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                sub = self.headers.get("Tenure-Subscription", "")
                ok = verify_signature(
                    receiver.secrets.get(sub, ""), body, self.headers.get("Tenure-Signature"), now=time.time()
                )
                with receiver.lock:
                    receiver.seen[(sub, self.headers.get("Tenure-Delivery", ""))] += 1
                    receiver.bad += not ok
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def count(self) -> int:
        with self.lock:
            return len(self.seen)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _write(store: Any, n: int) -> None:
    """``n`` changes: toggle resources created and switched, PER_RESOURCE changes each."""
    done = 0
    while done < n:
        r = store.create(toggle.name)
        done += 1
        while done < n and r.version < PER_RESOURCE:
            r = store.fire(r, NEXT[r.state][0])
            done += 1


def measure(store_url: str, n: int) -> dict[str, float]:
    """Deliveries per second to one subscription (in order) and to four at once, over ``n`` changes."""
    store = open_store(store_url, [toggle], check_schema=False)
    receiver: Receiver | None = None
    try:
        store.migrate()
        subs = Subscriptions(store.database, store.now)
        secrets: dict[str, str] = {}
        receiver = Receiver(secrets)
        one = subs.create(receiver.url, kind=toggle.name)
        secrets[one.id] = one.secret
        _write(store, n)
        deliverer = Deliverer(store, batch=500, per_claim=10 * n)
        started = time.perf_counter()
        sent = deliverer.run_until_idle()
        single = time.perf_counter() - started
        deliverer.stop()
        _check(receiver, [one.id], n, sent)

        four = [subs.create(receiver.url, kind=toggle.name) for _ in range(4)]
        secrets.update({s.id: s.secret for s in four})
        _write(store, n)
        running = Deliverer(store, concurrency=4, batch=500, per_claim=10 * n, poll_interval=0.05)
        started = time.perf_counter()
        running.start()
        target = n * 5  # the first subscription's second n, and four times n
        while receiver.count() < n + target:
            time.sleep(0.002)
        parallel = time.perf_counter() - started
        running.stop()
        _check(receiver, [s.id for s in four], n, n * 4)
        return {
            "changes": float(n),
            "one_subscription_per_second": n / single,
            "four_subscriptions_per_second": target / parallel,
        }
    finally:
        if receiver is not None:
            receiver.close()
        store.close()


def _check(receiver: Receiver, sub_ids: list[str], n: int, sent: int) -> None:
    with receiver.lock:
        for sub_id in sub_ids:
            got = [count for (sub, _), count in receiver.seen.items() if sub == sub_id]
            if len(got) != n or any(c != 1 for c in got):
                raise SystemExit(f"subscription {sub_id}: {len(got)} distinct deliveries of {n}, counts {set(got)}")
        if receiver.bad:
            raise SystemExit(f"{receiver.bad} deliveries carried a signature that does not verify")
    if sent < n:
        raise SystemExit(f"only {sent} requests were sent for {n} changes")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run, for a smoke test")
    parser.add_argument("--skip-postgres", action="store_true", help="leave PostgreSQL out")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("TENURE_BENCH_POSTGRES_URL", DEFAULT_PG_URL),
        help="admin URL; a scratch database is created next to it and dropped at the end (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    n = 200 if args.quick else 2000
    print(
        f"tenure webhook deliveries: Python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs; SQLite {sqlite3.sqlite_version}, tenure {version('tenure')}, "
        f"httpx {version('httpx')}; {n} changes per run"
    )
    rows: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="tenure-bench-deliveries-") as directory:
        rows.append(("SQLite (synchronous=full)", measure(f"sqlite:///{directory}/d.db", n)))
    if args.skip_postgres:
        print("PostgreSQL skipped (--skip-postgres).")
    else:
        try:
            with scratch_database(args.postgres_url) as url:
                rows.append(("PostgreSQL", measure(url, n)))
        except psycopg.OperationalError as exc:
            print(f"PostgreSQL unreachable ({str(exc).strip()}); SQLite only.")
    print(f"{'store':<28}{'1 subscription /s':>20}{'4 subscriptions /s':>22}")
    for name, got in rows:
        print(f"{name:<28}{got['one_subscription_per_second']:>20,.0f}{got['four_subscriptions_per_second']:>22,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
