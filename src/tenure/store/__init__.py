"""The store layer: the seams callers depend on, an embedded SQLite store and a shared PostgreSQL store.

Callers use :class:`Store` (the service), :class:`EngineStore` (workers), :class:`StepStore` (a
step's code) or :class:`TableStore` (code keeping :class:`OwnedTables` of its own); :func:`open_store`
gives a store of either database that provides them all.
"""

from __future__ import annotations

from tenure.store.feed import Change, Changes
from tenure.store.inbox import AwaitedKey, WaitInfo
from tenure.store.model import CREATE_EVENT, BacklogRow, JournalEntry, Page, Resource, Use
from tenure.store.protocol import EngineStore, StepStore, Store, TableStore
from tenure.store.tables import OwnedTables
from tenure.store.url import DEFAULT_DATABASE_URL, database_url, open_store
from tenure.store.uses import UsePolicy

__all__ = [
    "CREATE_EVENT",
    "DEFAULT_DATABASE_URL",
    "AwaitedKey",
    "BacklogRow",
    "Change",
    "Changes",
    "EngineStore",
    "JournalEntry",
    "OwnedTables",
    "Page",
    "Resource",
    "StepStore",
    "Store",
    "TableStore",
    "Use",
    "UsePolicy",
    "WaitInfo",
    "database_url",
    "open_store",
]
