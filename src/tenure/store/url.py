"""Opening a store from a database URL, and the one place that decides which URL that is."""

from __future__ import annotations

import os
from collections.abc import Iterable
from urllib.parse import parse_qs, urlsplit

from tenure.clock import Clock, system_clock
from tenure.errors import InvalidDatabaseURL
from tenure.machine import Kind
from tenure.store.assembly import DatabaseStore
from tenure.store.tables import OwnedTables
from tenure.store.uses import UsePolicy

__all__ = ["DATABASE_URL_ENV", "DEFAULT_DATABASE_URL", "database_url", "open_store"]

#: The environment variable that names the database when no option does.
DATABASE_URL_ENV = "TENURE_DATABASE_URL"
#: The database used when nothing names one: a SQLite file in the working directory.
DEFAULT_DATABASE_URL = "sqlite:///tenure.db"


def database_url(explicit: str | None = None, *, configured: str | None = None) -> str:
    """The database URL to use: the first of these that is given (an empty one counts as not given).

    1. ``explicit``: the ``--database`` option, or the URL passed to :func:`open_store`;
    2. the ``TENURE_DATABASE_URL`` environment variable;
    3. ``configured``: the ``[service] database`` of the configuration file (``tenure serve``);
    4. ``sqlite:///tenure.db``.

    Every command line option and :func:`open_store` go through here, so the order is the same
    everywhere.
    """
    return explicit or os.environ.get(DATABASE_URL_ENV) or configured or DEFAULT_DATABASE_URL


def _sqlite_path(url: str) -> str:
    rest = url[len("sqlite://") :]
    if not rest.startswith("/"):
        raise InvalidDatabaseURL(url, "a SQLite URL needs three slashes before a relative path")
    path = rest[1:].split("?", 1)[0]
    if not path or path == ":memory:":
        raise InvalidDatabaseURL(url, "a SQLite URL must name a file (in-memory databases cannot be shared)")
    return path


def open_store(
    url: str | None = None,
    kinds: Iterable[Kind] = (),
    *,
    clock: Clock = system_clock,
    check_schema: bool = True,
    pool_size: int | None = None,
    tables: Iterable[OwnedTables] = (),
    default_sharable: bool = True,
    uses: UsePolicy | None = None,
) -> DatabaseStore:
    """Open the store a URL names.

    ``tables`` are the tables kinds own in its database (:mod:`tenure.store.tables`): ``migrate()``
    applies their migrations too, and the schema check covers them. ``default_sharable`` applies to a
    create that does not say whether the resource is sharable; ``uses`` says how long a party's use
    lasts (:class:`~tenure.store.uses.UsePolicy`).

    ``sqlite:///relative.db`` and ``sqlite:////absolute.db`` open the embedded store (query
    options: ``synchronous=full|normal``, ``busy_timeout`` in seconds); ``postgresql://...`` opens
    the shared store (options: ``pool_size``, ``connect_timeout``; every other parameter goes to
    libpq). ``pool_size`` given here is the size when the URL does not set one (default 4).
    """
    url = database_url(url)
    scheme = urlsplit(url).scheme.lower()
    options = {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}
    if scheme == "sqlite":
        from tenure.store.sqlite import SQLiteStore, Synchronous

        sync = options.get("synchronous", "full").upper()
        if sync not in Synchronous.__members__:
            raise InvalidDatabaseURL(url, f"synchronous must be full or normal, not {sync.lower()!r}")
        return SQLiteStore(
            _sqlite_path(url),
            kinds,
            clock=clock,
            synchronous=Synchronous[sync],
            busy_timeout=_number(url, options, "busy_timeout", 30.0),
            tables=tables,
            check_schema=check_schema,
            default_sharable=default_sharable,
            uses=uses,
        )
    if scheme in ("postgresql", "postgres"):
        from tenure.store.postgres import PostgresStore

        pool_size = int(_number(url, options, "pool_size", pool_size or 4))
        timeout = _number(url, options, "connect_timeout", 5.0)
        conninfo = _strip_options(url, ("pool_size", "connect_timeout"))
        return PostgresStore(
            conninfo,
            kinds,
            clock=clock,
            pool_size=pool_size,
            connect_timeout=timeout,
            tables=tables,
            check_schema=check_schema,
            default_sharable=default_sharable,
            uses=uses,
        )
    raise InvalidDatabaseURL(url, f"unknown scheme {scheme or '(none)'!r}")


def _number(url: str, options: dict[str, str], name: str, default: float) -> float:
    if name not in options:
        return default
    try:
        value = float(options[name])
    except ValueError:
        raise InvalidDatabaseURL(url, f"{name} must be a number, not {options[name]!r}") from None
    if value <= 0:
        raise InvalidDatabaseURL(url, f"{name} must be positive, not {options[name]!r}")
    return value


def _strip_options(url: str, names: tuple[str, ...]) -> str:
    parts = urlsplit(url)
    kept = [p for p in parts.query.split("&") if p and p.split("=", 1)[0] not in names]
    return parts._replace(query="&".join(kept)).geturl()
