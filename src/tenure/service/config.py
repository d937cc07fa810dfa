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

    [tokens.controlplane]          # the same, keyed by the client's name
    token_env = "CP_TOKEN"
    scopes = ["signal"]

    [dataplane]                    # this process is a data plane (docs/signaling.md)
    id = "dp1"                     # its client name on the control plane
    controlplane_url = "http://127.0.0.1:8800"
    controlplane_token_env = "DP1_TOKEN"   # or: controlplane_token = "..."
    request_deadline = 60          # seconds a *_requested state waits before asking again

    [signaling]
    request_deadline = 60          # the same, for a control plane's *_requested states

    [[dataplanes]]                 # this process is a control plane of these data planes
    id = "dp1"
    url = "http://127.0.0.1:8801"
    token_env = "CP_TO_DP1_TOKEN"  # or: token = "..."

    [retention]                    # how long finished resources' history is kept (docs/retention.md)
    journal = "30d"                # journal entries between creation and the final state
    waits = "7d"                   # waits and the callbacks that answered them
    flows = "7d"                   # flow runs and their task checkpoints
    resources = "off"              # "off" (or 0): keep finished resources for ever
    batch = 500                    # the most rows one pruning transaction deletes

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
import re
import secrets
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tenure.errors import ConfigError

if TYPE_CHECKING:
    # Imported when a file configures signaling: reading a configuration needs no engine otherwise.
    from tenure.engine.planes import Signaling
    from tenure.store.retention import RetentionPolicy

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
    #: Data-plane signaling (``[dataplane]``, ``[[dataplanes]]``): None when the file configures neither.
    signaling: Signaling | None = None
    #: What the engine prunes of finished resources' history (``[retention]``): None for the default.
    retention: RetentionPolicy | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.default_interest_ttl <= self.max_interest_ttl:
            raise ConfigError(
                f"default_interest_ttl ({self.default_interest_ttl}) must be at least 1 and at most "
                f"max_interest_ttl ({self.max_interest_ttl})"
            )

    def signaling_with_callbacks(self, listening: str | None = None) -> Signaling | None:
        """The signaling settings, with the URL a control plane's data planes call back at.

        That is ``{public_url}/v1/callbacks``, else ``{listening}/v1/callbacks`` (where the server
        listens, when that is an address others can reach: ``tenure serve`` passes none for 0.0.0.0 or
        ::). With neither, a control plane with data planes is refused (ConfigError): its data planes
        could not call back.
        """
        signaling = self.signaling
        if signaling is None or not signaling.dataplanes or signaling.callback_url is not None:
            return signaling
        base = self.public_url or listening
        if base is None:
            raise ConfigError(
                "a control plane with data planes needs [service] public_url: its data planes call back at "
                "{public_url}/v1/callbacks"
            )
        return dataclasses.replace(signaling, callback_url=f"{base.rstrip('/')}/v1/callbacks")

    def retention_policy(self) -> RetentionPolicy:
        """The ``[retention]`` policy the engine prunes by, or the default one (docs/retention.md)."""
        from tenure.store.retention import DEFAULT_RETENTION

        return self.retention if self.retention is not None else DEFAULT_RETENTION

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
    unknown = set(doc) - set(_SECTIONS)
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown section(s) {', '.join(sorted(unknown))}; known: {', '.join(_SECTIONS)}"
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
        signaling=_signaling_from(doc, path, env),
        retention=_retention_from(doc, path),
    )


_SECTIONS = ("auth", "tokens", "service", "dataplane", "dataplanes", "signaling", "retention")

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


def _token_entries(doc: Mapping[str, Any], path: Path) -> list[tuple[str, Any]]:
    """The token tables, each with where it is: ``[[tokens]]`` (with a client), or ``[tokens.<client>]``."""
    entries = doc.get("tokens", [])
    if isinstance(entries, list):
        return [(f"config file {path}: tokens[{i}]", entry) for i, entry in enumerate(entries)]
    if not isinstance(entries, dict):
        raise ConfigError(f"config file {path}: tokens must be an array of tables ([[tokens]]) or [tokens.<client>]")
    named: list[tuple[str, Any]] = []
    for client, entry in entries.items():
        where = f"config file {path}: [tokens.{client}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table with token or token_env, and scopes")
        if "client" in entry and entry["client"] != client:
            raise ConfigError(f"{where}: client must be left out or be {client!r} (the table's name)")
        named.append((where, {**entry, "client": client}))
    return named


def _tokens_from(doc: Mapping[str, Any], path: Path, env: Mapping[str, str]) -> list[ClientToken]:
    tokens: list[ClientToken] = []
    for where, entry in _token_entries(doc, path):
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


_DATAPLANE_KEYS = ("id", "controlplane_url", "controlplane_token", "controlplane_token_env", "request_deadline")
_DATAPLANES_KEYS = ("id", "url", "token", "token_env")
#: The default of ``[dataplane] request_deadline``, in seconds.
DEFAULT_REQUEST_DEADLINE = 60


def _signaling_from(doc: Mapping[str, Any], path: Path, env: Mapping[str, str]) -> Signaling | None:
    """``[dataplane]`` and ``[[dataplanes]]`` as :class:`~tenure.engine.planes.Signaling` (None: neither is there)."""
    if "dataplane" not in doc and "dataplanes" not in doc:
        if "signaling" in doc:
            raise ConfigError(
                f"config file {path}: [signaling] has no effect without [dataplane] (this process is a data plane) "
                "or [[dataplanes]] (it is a control plane)"
            )
        return None
    from tenure.engine.planes import ControlPlaneRef, DataPlaneRef, Signaling

    where = f"config file {path}"
    planes: list[DataPlaneRef] = []
    entries = doc.get("dataplanes", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: dataplanes must be an array of tables ([[dataplanes]]) with id, url and token")
    for i, entry in enumerate(entries):
        at = f"{where}: dataplanes[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{at} must be a table with id, url, and token or token_env")
        _known_keys(entry, _DATAPLANES_KEYS, at)
        plane_id = _plane_id(entry.get("id"), f"{at}.id")
        if any(p.id == plane_id for p in planes):
            raise ConfigError(f"{at}.id: data plane {plane_id!r} is configured twice; ids must be unique")
        url = _base_url(entry.get("url"), f"{at}.url", "the data plane's base URL, such as http://127.0.0.1:8801")
        token = _secret(entry, "token", env, at, "the token the control plane presents to the data plane")
        planes.append(DataPlaneRef(plane_id, url, token))
    shared = doc.get("signaling", {})
    if not isinstance(shared, dict):
        raise ConfigError(f"{where}: signaling must be a table ([signaling]) with request_deadline")
    _known_keys(shared, ("request_deadline",), f"{where}: [signaling]")
    section = doc.get("dataplane")
    if section is None:
        deadline = _deadline(shared.get("request_deadline", DEFAULT_REQUEST_DEADLINE), f"{where}: [signaling]")
        return Signaling(dataplanes=tuple(planes), request_deadline=timedelta(seconds=deadline))
    at = f"{where}: [dataplane]"
    if not isinstance(section, dict):
        raise ConfigError(f"{at} must be a table with id, controlplane_url and controlplane_token")
    _known_keys(section, _DATAPLANE_KEYS, at)
    plane_id = _plane_id(section.get("id"), f"{at} id")
    url = _base_url(
        section.get("controlplane_url"),
        f"{at} controlplane_url",
        "the control plane's base URL (callbacks go to its /v1/callbacks), such as http://127.0.0.1:8800",
    )
    token = _secret(section, "controlplane_token", env, at, "the token this data plane presents to the control plane")
    deadline = _deadline(section.get("request_deadline", shared.get("request_deadline", DEFAULT_REQUEST_DEADLINE)), at)
    return Signaling(
        dataplanes=tuple(planes),
        dataplane_id=plane_id,
        controlplane=ControlPlaneRef(url, token),
        request_deadline=timedelta(seconds=deadline),
    )


_RETENTION_KEYS = ("journal", "waits", "flows", "resources", "batch")
#: A retention duration: a whole number and a unit (seconds, minutes, hours, days, weeks).
_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: The longest retention duration (a hundred years): longer is "off".
_MAX_RETENTION_SECONDS = 36500 * 86400


def _retention_from(doc: Mapping[str, Any], path: Path) -> RetentionPolicy | None:
    """``[retention]`` as a policy (None: the section is absent, the default applies)."""
    if "retention" not in doc:
        return None
    from tenure.store.retention import DEFAULT_RETENTION, MAX_BATCH, MIN_BATCH, RetentionPolicy

    at = f"config file {path}: [retention]"
    section = doc["retention"]
    if not isinstance(section, dict):
        raise ConfigError(f"{at} must be a table with journal, waits, flows, resources and batch")
    _known_keys(section, _RETENTION_KEYS, at)
    durations = {name: getattr(DEFAULT_RETENTION, name) for name in ("journal", "waits", "flows", "resources")}
    for name in durations:
        if name in section:
            durations[name] = _retention_duration(section[name], f"{at} {name}")
    batch = section.get("batch", DEFAULT_RETENTION.batch)
    if isinstance(batch, bool) or not isinstance(batch, int) or not MIN_BATCH <= batch <= MAX_BATCH:
        raise ConfigError(
            f"{at} batch must be a whole number of rows from {MIN_BATCH} to {MAX_BATCH} (the most one pruning "
            f"transaction deletes), not {batch!r}"
        )
    return RetentionPolicy(**durations, batch=batch)


def _retention_duration(value: object, at: str) -> timedelta | None:
    """A duration to keep something for: ``"30d"``, ``"12h"``, ``"90m"``, ``"3600s"``, ``"2w"`` or whole
    seconds; ``"off"``, ``0`` or ``false`` keep it for ever (None)."""
    seconds: int | None = None
    if value is False or value == 0 or (isinstance(value, str) and value.strip().lower() == "off"):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str):
        match = _DURATION.fullmatch(value.strip().lower())
        if match is not None:
            seconds = int(match[1]) * _UNITS[match[2]]
    if seconds is None or not 0 < seconds <= _MAX_RETENTION_SECONDS:
        raise ConfigError(
            f'{at} must be a duration such as "30d", "12h", "90m", "3600s" or "2w" (or whole seconds), '
            f'at most 36500 days, or "off" (or 0) to keep for ever; not {value!r}'
        )
    return timedelta(seconds=seconds)


def _deadline(value: object, at: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 86400 * 7:
        raise ConfigError(
            f"{at} request_deadline must be a number of seconds, more than 0 and at most 604800 (a week), not {value!r}"
        )
    return float(value)


def _known_keys(table: Mapping[str, Any], known: tuple[str, ...], at: str) -> None:
    extra = set(table) - set(known)
    if extra:
        raise ConfigError(f"{at}: unknown key(s) {', '.join(sorted(extra))}; known: {', '.join(known)}")


def _plane_id(value: object, at: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 100 or any(c in value for c in ":;\n"):
        raise ConfigError(
            f"{at} must be the data plane's id: text of 1 to 100 characters without ':', ';' or newlines "
            "(it is also its client name on the control plane)"
        )
    return value


def _base_url(value: object, at: str, what: str) -> str:
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(f"{at} must be {what}: an http:// or https:// URL without query or fragment")
    return str(value).rstrip("/")


def _secret(table: Mapping[str, Any], key: str, env: Mapping[str, str], at: str, what: str) -> str:
    """``table[key]``, or the environment variable ``table[key + "_env"]`` names; never shown in an error."""
    named = f"{key}_env"
    if key in table and named in table:
        raise ConfigError(f"{at}: give {key} or {named}, not both")
    if named in table:
        variable = table[named]
        value = env.get(str(variable)) if isinstance(variable, str) else None
        if value is None:
            raise ConfigError(f"{at}: {named} names environment variable {variable!r}, which is not set")
    else:
        value = table.get(key)
    if not isinstance(value, str):
        raise ConfigError(f"{at}: {key} (or {named}) is required: {what}, as text")
    if len(value) < 16:
        raise ConfigError(f"{at}: {key} is too short: use at least 16 characters")
    return value


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
