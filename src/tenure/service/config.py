"""What the HTTP service is configured with: who may call it, and with which scopes.

Client tokens come from a TOML file, from the environment, or both::

    # tenure.toml
    [service]
    database = "postgresql://tenure@db.internal/tenure"
    kinds = ["mypkg.kinds"]          # besides the built-in example kinds
    public_url = "https://tenure.internal"
    max_body_bytes = 1048576
    default_sharable = true          # a create that does not say whether the resource is sharable
    default_interest_ttl = 3600      # seconds a party's use lasts when it asks for no time to live
    max_interest_ttl = 86400         # the longest a party may ask for (it renews to stay longer)

    [auth]
    enabled = true
    callbacks_need_client_token = false   # true: callbacks also need a "callback"-scoped token

    [[tokens]]
    client = "ci-bot"
    token_env = "CI_BOT_TOKEN"     # or: token = "..." (keep the file private then)
    scopes = ["read", "write"]

    TENURE_TOKENS="ci-bot:s3cret:read,write;ops:0ther:admin"
    TENURE_AUTH=off                # local development only: anyone may do anything

A token is only ever compared (in constant time), never logged or shown.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import os
import secrets
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from tenure.errors import ConfigError

__all__ = ["ClientToken", "ConfigError", "Principal", "Scope", "ServiceConfig", "generated_token"]

#: The largest request body the service reads (bigger ones get 413).
DEFAULT_MAX_BODY = 1024 * 1024
#: Seconds a party's use lasts when it asks for no time to live, and the most it may ask for.
DEFAULT_INTEREST_TTL = 3600
MAX_INTEREST_TTL = 86400


class Scope(enum.StrEnum):
    """What a client token allows."""

    #: Read resources, kinds, journals, waits, flows, the watch stream.
    READ = "read"
    #: Create resources, fire events, set desired states (implies read).
    WRITE = "write"
    #: Everything, including operations on behalf of others (implies every scope).
    ADMIN = "admin"
    #: Post callbacks on behalf of external provisioners and data planes.
    CALLBACK = "callback"
    #: Send data-plane signals (prepare, start, suspend, terminate): what a control plane holds.
    SIGNAL = "signal"


_IMPLIES: Mapping[Scope, frozenset[Scope]] = {
    Scope.READ: frozenset({Scope.READ}),
    Scope.WRITE: frozenset({Scope.WRITE, Scope.READ}),
    Scope.ADMIN: frozenset(Scope),
    Scope.CALLBACK: frozenset({Scope.CALLBACK}),
    Scope.SIGNAL: frozenset({Scope.SIGNAL}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a client identity and the scopes its token grants."""

    client: str
    scopes: frozenset[Scope]

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes


#: The caller when authentication is off.
ANONYMOUS = Principal("anonymous", frozenset(Scope))


@dataclass(frozen=True, slots=True)
class ClientToken:
    """One client's bearer token (kept as its sha-256 only) and the scopes it grants."""

    client: str
    digest: bytes = field(repr=False)
    scopes: frozenset[Scope]

    @classmethod
    def make(cls, client: str, token: str, scopes: Iterable[str | Scope]) -> ClientToken:
        if not client or any(c in client for c in ":;\n"):
            raise ConfigError(f"client name {client!r} must be non-empty, without ':', ';' or newlines")
        if len(token) < 16:
            raise ConfigError(f"the token of client {client!r} is too short: use at least 16 characters")
        granted: set[Scope] = set()
        for raw in scopes:
            try:
                granted |= _IMPLIES[Scope(str(raw).strip())]
            except ValueError:
                allowed = ", ".join(s.value for s in Scope)
                raise ConfigError(f"client {client!r} has unknown scope {raw!r}; scopes are {allowed}") from None
        if not granted:
            raise ConfigError(
                f"client {client!r} has no scopes; give at least one of read, write, admin, callback, signal"
            )
        return cls(client, _digest(token), frozenset(granted))


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """How the service runs: authentication, its tokens, limits, and its public address."""

    auth: bool = True
    tokens: tuple[ClientToken, ...] = ()
    max_body: int = DEFAULT_MAX_BODY
    #: The address external parties reach this service at (callback URLs are built from it).
    public_url: str | None = None
    #: Import paths of modules defining kinds (and steps) to load, besides the built-in ones.
    kinds: tuple[str, ...] = ()
    #: The database URL, when the command line does not give one.
    database: str | None = None
    #: Whether a callback needs a client token with the ``callback`` scope besides its correlation token.
    callbacks_need_client: bool = False
    #: Whether a resource is sharable when its create does not say.
    default_sharable: bool = True
    #: Seconds a party's use lasts when it asks for no time to live.
    default_interest_ttl: int = DEFAULT_INTEREST_TTL
    #: The most seconds a party may ask for; it renews to stay longer.
    max_interest_ttl: int = MAX_INTEREST_TTL

    def __post_init__(self) -> None:
        if not 1 <= self.default_interest_ttl <= self.max_interest_ttl:
            raise ConfigError(
                f"default_interest_ttl ({self.default_interest_ttl}) must be at least 1 and at most "
                f"max_interest_ttl ({self.max_interest_ttl})"
            )

    def store_options(self) -> dict[str, Any]:
        """The keyword arguments of ``open_store`` this configuration decides: the sharing defaults."""
        # Imported here: the store package is not needed to read a configuration (the CLI starts faster).
        from tenure.store.uses import UsePolicy

        policy = UsePolicy(
            default_ttl=timedelta(seconds=self.default_interest_ttl), max_ttl=timedelta(seconds=self.max_interest_ttl)
        )
        return {"default_sharable": self.default_sharable, "uses": policy}

    def authenticate(self, token: str) -> Principal | None:
        """The principal ``token`` belongs to, or None; compares every configured token in constant time."""
        presented = _digest(token)
        found: Principal | None = None
        for t in self.tokens:
            # No early exit: the time taken does not depend on which token (if any) matched.
            if hmac.compare_digest(presented, t.digest):
                found = Principal(t.client, t.scopes)
        return found

    def with_tokens(self, tokens: Iterable[ClientToken]) -> ServiceConfig:
        return dataclasses.replace(self, tokens=(*self.tokens, *tokens))

    @classmethod
    def load(cls, path: str | Path | None = None, env: Mapping[str, str] | None = None) -> ServiceConfig:
        """The configuration from a TOML file (if given, or named by ``TENURE_CONFIG``) and the environment.

        The environment wins: ``TENURE_AUTH=off`` turns authentication off whatever the file says, and
        ``TENURE_TOKENS`` adds tokens to the file's.
        """
        env = os.environ if env is None else env
        path = path or env.get("TENURE_CONFIG") or None
        loaded = _from_file(Path(path), env) if path is not None else cls()
        auth, tokens, public_url = loaded.auth, list(loaded.tokens), loaded.public_url
        switch = env.get("TENURE_AUTH")
        if switch is not None:
            if switch.lower() not in ("on", "off", "true", "false", "1", "0"):
                raise ConfigError(f"TENURE_AUTH must be on or off, not {switch!r}")
            auth = switch.lower() in ("on", "true", "1")
        tokens += _from_env(env.get("TENURE_TOKENS", ""))
        public_url = env.get("TENURE_PUBLIC_URL") or public_url
        return dataclasses.replace(loaded, auth=auth, tokens=tuple(tokens), public_url=public_url)


def _from_file(path: Path, env: Mapping[str, str]) -> ServiceConfig:
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = set(doc) - {"auth", "tokens", "service"}
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown section(s) {', '.join(sorted(unknown))}; known: auth, tokens, service"
        )
    auth_section = _table(doc, "auth", path)
    enabled = auth_section.get("enabled", True)
    strict_callbacks = auth_section.get("callbacks_need_client_token", False)
    for name, value in (("enabled", enabled), ("callbacks_need_client_token", strict_callbacks)):
        if not isinstance(value, bool):
            raise ConfigError(f"config file {path}: auth.{name} must be true or false")
    tokens = _tokens_from(doc, path, env)
    service = _table(doc, "service", path)
    max_body = service.get("max_body_bytes", DEFAULT_MAX_BODY)
    if not isinstance(max_body, int) or max_body < 1024:
        raise ConfigError(f"config file {path}: service.max_body_bytes must be an integer of at least 1024")
    extra = set(service) - set(_SERVICE_KEYS)
    if extra:
        names = ", ".join(sorted(extra))
        raise ConfigError(
            f"config file {path}: unknown key(s) in [service]: {names}; known: {', '.join(_SERVICE_KEYS)}"
        )
    public_url = service.get("public_url")
    database = service.get("database")
    for name, value in (("public_url", public_url), ("database", database)):
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"config file {path}: service.{name} must be a string")
    kinds = service.get("kinds", [])
    if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
        raise ConfigError(f'config file {path}: service.kinds must be a list of import paths such as ["mypkg.kinds"]')
    sharable = service.get("default_sharable", True)
    if not isinstance(sharable, bool):
        raise ConfigError(f"config file {path}: service.default_sharable must be true or false")
    default_ttl, max_ttl = _interest_ttls(service, path)
    return ServiceConfig(
        enabled,
        tuple(tokens),
        max_body,
        public_url,
        tuple(kinds),
        database,
        strict_callbacks,
        default_sharable=sharable,
        default_interest_ttl=default_ttl,
        max_interest_ttl=max_ttl,
    )


_SERVICE_KEYS = (
    "max_body_bytes",
    "public_url",
    "kinds",
    "database",
    "default_sharable",
    "default_interest_ttl",
    "max_interest_ttl",
)


def _interest_ttls(service: Mapping[str, Any], path: Path) -> tuple[int, int]:
    """``default_interest_ttl`` and ``max_interest_ttl``: whole positive seconds, the default within the maximum."""
    values = []
    for name, fallback in (("default_interest_ttl", DEFAULT_INTEREST_TTL), ("max_interest_ttl", MAX_INTEREST_TTL)):
        value = service.get(name, fallback)
        # bool is an int in Python; "true" seconds is a mistake, not 1.
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"config file {path}: service.{name} must be a whole number of seconds, at least 1")
        values.append(value)
    default_ttl, max_ttl = values
    if default_ttl > max_ttl:
        raise ConfigError(
            f"config file {path}: service.default_interest_ttl ({default_ttl}) must not exceed "
            f"service.max_interest_ttl ({max_ttl})"
        )
    return default_ttl, max_ttl


def _tokens_from(doc: Mapping[str, Any], path: Path, env: Mapping[str, str]) -> list[ClientToken]:
    tokens: list[ClientToken] = []
    entries = doc.get("tokens", [])
    if not isinstance(entries, list):
        raise ConfigError(f"config file {path}: tokens must be an array of tables ([[tokens]])")
    for i, entry in enumerate(entries):
        where = f"config file {path}: tokens[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table with client, token or token_env, and scopes")
        extra = set(entry) - {"client", "token", "token_env", "scopes"}
        if extra:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
        token = entry.get("token")
        if "token_env" in entry:
            token = env.get(str(entry["token_env"]))
            if token is None:
                raise ConfigError(f"{where}: environment variable {entry['token_env']} is not set")
        if not isinstance(token, str) or not isinstance(entry.get("client"), str):
            raise ConfigError(f"{where} needs client and token (or token_env) as strings")
        scopes = entry.get("scopes", [])
        if not isinstance(scopes, list):
            raise ConfigError(f'{where}: scopes must be a list such as ["read", "write"]')
        try:
            tokens.append(ClientToken.make(entry["client"], token, scopes))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return tokens


def _table(doc: Mapping[str, Any], name: str, path: Path) -> Mapping[str, Any]:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"config file {path}: [{name}] must be a table")
    return value


def _from_env(text: str) -> list[ClientToken]:
    tokens = []
    for i, item in enumerate(p for p in text.split(";") if p.strip()):
        parts = item.strip().split(":")
        if len(parts) != 3:
            raise ConfigError(
                f"TENURE_TOKENS entry {i + 1} is not client:token:scope[,scope...] (the token is not shown)"
            )
        client, token, scopes = parts
        try:
            tokens.append(ClientToken.make(client.strip(), token.strip(), scopes.split(",")))
        except ConfigError as exc:
            raise ConfigError(f"TENURE_TOKENS entry {i + 1}: {exc}") from None
    return tokens


def generated_token(path: Path) -> ClientToken:
    """An admin token for local use, kept in ``path`` (created with mode 0600 if it does not exist)."""
    if path.exists():
        token = path.read_text().strip()
    else:
        token = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
    return ClientToken.make("local-admin", token, [Scope.ADMIN])
