"""Review findings on the store, each pinned by a test against a real database.

Each test shows a defect found by reviewing the store; they were fixed, and the tests keep them so.
"""

from __future__ import annotations

import gc
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from tenure import open_store
from tenure.kinds.image import image

pytestmark = pytest.mark.timeout(60)


def _open_files_on(path: str) -> int:
    """How many file descriptors of this process are open on ``path`` (Linux /proc)."""
    wanted = os.path.realpath(path)
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == wanted:
                count += 1
        except OSError:
            continue
    return count


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open files through /proc")
def test_sqlite_connections_of_finished_threads_are_closed(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    store = open_store(f"sqlite:///{db}", [image], check_schema=False)
    try:
        store.migrate()
        r = store.create("image", {"name": "debian"})
        baseline = _open_files_on(str(db))

        # Short-lived threads, as a thread pool that retires idle workers makes them.
        for _ in range(20):
            batch = [threading.Thread(target=store.get, args=(r.id,)) for _ in range(10)]
            for t in batch:
                t.start()
            for t in batch:
                t.join()
        gc.collect()

        # None of those 200 threads is alive any more, and none of their connections is. SQLite keeps
        # the descriptors of closed connections while another connection of the process holds a lock
        # on the file (closing one would drop that lock) and reuses them: bounded by one batch.
        alive = [c for c in gc.get_objects() if isinstance(c, sqlite3.Connection)]
        assert len(alive) <= 2, f"{len(alive)} connections outlived their threads"
        assert _open_files_on(str(db)) <= baseline + 10
    finally:
        store.close()
