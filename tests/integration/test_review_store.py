"""Review findings on the store, each pinned by a test against a real database.

Every test here is marked ``xfail(strict=True)`` with the defect it shows: it fails today and is
meant to pass once the defect is fixed (then the marker goes).
"""

from __future__ import annotations

import gc
import os
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
@pytest.mark.xfail(
    strict=True,
    reason="BUG: store/sqlite.py:122-139 (_conn): every thread gets its own connection, kept in self._all until "
    "close(), so a thread that ends leaves its connection (and file descriptors) open; under the server's thread "
    "pool, which retires idle threads after 10 s and starts new ones, the open connections grow without bound",
)
def test_sqlite_connections_of_finished_threads_are_closed(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    store = open_store(f"sqlite:///{db}", [image], check_schema=False)
    try:
        store.migrate()
        r = store.create("image", {"name": "debian"})
        baseline = _open_files_on(str(db))

        # Short-lived threads, as a thread pool that retires idle workers makes them.
        for _ in range(5):
            batch = [threading.Thread(target=store.get, args=(r.id,)) for _ in range(10)]
            for t in batch:
                t.start()
            for t in batch:
                t.join()
        gc.collect()

        # None of those threads is alive any more: none of their connections should be either.
        assert _open_files_on(str(db)) <= baseline + 1
    finally:
        store.close()
