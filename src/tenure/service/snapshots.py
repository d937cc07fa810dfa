"""The resources this process last answered with: where a client's pinned event is planned from.

A client fires an event with ``If-Match`` naming the version its last answer gave. When this process
gave that answer, the resource as it was then is kept here, and the event is planned from it without
reading the row again: one statement to the database for the event instead of two.

Nothing kept here is trusted beyond what the store checks. The compare-and-swap matches the row's
version, state and life (``created_at``), so an event planned from a snapshot the row has moved on
from loses exactly as one planned from a fresh read would: the client hears 412. The one answer a
kept snapshot could get wrong is a resource deleted (pruned) and created again under its id, at the
version the client names: that conflict says so (``recreated``), and the event is planned again from
the row as it is.

Only events are planned from here. What a transition writes depends on the versioned fields alone
(state, spec, data, uses, desired state; guards see state, spec and data); a desired state, say,
also carries the claim's fields and the next attempt, which move without a new version.

What is kept is bounded by the size of the answers it was sent as: at most :data:`MAX_BYTES` of JSON
in all, the least recently answered going first, and none larger than :data:`MAX_ENTRY_BYTES`. Only
an answer that shows the whole resource is kept (none whose secret data it redacts, or whose expired
uses it leaves out), so that its size is the resource's. An answer older than the one kept (a read
that finished after a write) does not replace it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from tenure.errors import Conflict
from tenure.store.model import Resource

__all__ = ["MAX_BYTES", "MAX_ENTRY_BYTES", "Snapshots"]

#: The JSON of every resource kept, together.
MAX_BYTES = 16 * 1024 * 1024
#: A resource whose answer is larger is not kept (its events read the row).
MAX_ENTRY_BYTES = 64 * 1024


class Snapshots:
    """The last answer per resource id, as the resource it showed (see the module's docstring).

    >>> kept = Snapshots()
    >>> kept.pinned("r1", 3) is None
    True
    """

    __slots__ = ("_bytes", "_entries", "_entry_bytes", "_lock", "_max_bytes")

    def __init__(self, *, max_bytes: int = MAX_BYTES, entry_bytes: int = MAX_ENTRY_BYTES) -> None:
        self._max_bytes = max_bytes
        self._entry_bytes = min(entry_bytes, max_bytes)
        self._entries: OrderedDict[str, tuple[Resource, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        """The bytes of JSON the kept resources were answered as."""
        return self._bytes

    def keep(self, resource: Resource, size: int) -> None:
        """Remember ``resource`` as answered in ``size`` bytes of JSON (unless a newer answer is kept)."""
        with self._lock:
            old = self._entries.get(resource.id)
            if old is not None:
                kept = old[0]
                if kept.created_at == resource.created_at and kept.version > resource.version:
                    return
                del self._entries[resource.id]
                self._bytes -= old[1]
            if size > self._entry_bytes:
                return
            self._entries[resource.id] = (resource, size)
            self._bytes += size
            while self._bytes > self._max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped

    def forget(self, resource_id: str) -> None:
        with self._lock:
            old = self._entries.pop(resource_id, None)
            if old is not None:
                self._bytes -= old[1]

    def pinned(self, resource_id: str, version: int | None) -> Resource | None:
        """The resource as last answered, if that answer was at ``version`` (None: not kept, or unpinned)."""
        if version is None:
            return None  # an unpinned write takes the row as it is, whatever version that is
        found = self._entries.get(resource_id)
        if found is None or found[0].version != version:
            return None
        return found[0]

    def write(self, resource_id: str, version: int | None, write: Callable[[Resource | str], Resource]) -> Resource:
        """``write`` planned from the kept snapshot at ``version`` if there is one, else from the row.

        A snapshot of a resource since deleted and created again loses its swap with a ``recreated``
        conflict whatever the versions say; the write is then planned again from the row.
        """
        seen = self.pinned(resource_id, version)
        if seen is None:
            return write(resource_id)
        try:
            return write(seen)
        except Conflict as lost:
            if not lost.recreated:
                raise
        self.forget(resource_id)
        return write(resource_id)
