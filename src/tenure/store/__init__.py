"""The store layer: the seams callers depend on, an embedded SQLite store and a shared PostgreSQL store.

Callers use :class:`Store` (the service), :class:`EngineStore` (workers) or :class:`StepStore` (a
step's code); :func:`open_store` gives a store of either database that provides all three.
"""

from __future__ import annotations

from tenure.store.feed import Change, Changes
from tenure.store.inbox import AwaitedKey, WaitInfo
from tenure.store.interests import Interest, NotSharable
from tenure.store.model import CREATE_EVENT, BacklogRow, JournalEntry, Page, Resource
from tenure.store.protocol import EngineStore, StepStore, Store
from tenure.store.url import DEFAULT_DATABASE_URL, database_url, open_store

__all__ = [
    "CREATE_EVENT",
    "DEFAULT_DATABASE_URL",
    "AwaitedKey",
    "BacklogRow",
    "Change",
    "Changes",
    "EngineStore",
    "Interest",
    "JournalEntry",
    "NotSharable",
    "Page",
    "Resource",
    "StepStore",
    "Store",
    "WaitInfo",
    "database_url",
    "open_store",
]
