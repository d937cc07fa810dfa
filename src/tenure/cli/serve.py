"""``tenure serve``: the HTTP API and the engine's workers in one process."""

from __future__ import annotations

import contextlib
import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tenure.cli.common import (
    DEFAULT_CONCURRENCY,
    DEFAULT_TOKEN_FILE,
    ConcurrencyOption,
    DatabaseOption,
    KindsOption,
    LeaseOption,
    VerboseOption,
    all_kinds,
    console,
    errors,
    reported,
)
from tenure.cli.worker import pool_size, steps_for

if TYPE_CHECKING:
    from tenure.service.config import ServiceConfig

__all__ = ["serve"]


def serve(
    database: DatabaseOption = None,
    kinds: KindsOption = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535, help="Port to listen on.")] = 8080,
    config: Annotated[
        Path | None,
        typer.Option("--config", envvar="TENURE_CONFIG", help="TOML file with auth settings and client tokens."),
    ] = None,
    token_file: Annotated[
        Path,
        typer.Option(
            "--token-file", help="Where to keep a generated admin token when auth is on and none is configured."
        ),
    ] = DEFAULT_TOKEN_FILE,
    workers: Annotated[int, typer.Option("--workers", "-w", min=0, max=64, help="Workers to run (0: API only).")] = 1,
    concurrency: ConcurrencyOption = DEFAULT_CONCURRENCY,
    lease: LeaseOption = 30.0,
    log_format: Annotated[str, typer.Option("--log-format", help="text or json.")] = "text",
    verbose: VerboseOption = False,
) -> None:
    """Run tenure: the HTTP API on --host:--port and the engine's workers, until Ctrl-C or SIGTERM.

    The embedded SQLite database (./tenure.db unless --database says otherwise) is migrated first.
    """
    # The web framework, the engine and the database drivers: only this command needs them.
    from tenure.engine.deliveries import Deliverer
    from tenure.kinds import builtin_tables
    from tenure.service.config import ServiceConfig
    from tenure.service.logs import configure_logging
    from tenure.service.server import listen, run_server
    from tenure.store import open_store
    from tenure.store.url import database_url

    if log_format not in ("text", "json"):
        errors.print(f"[bold red]error:[/] --log-format must be text or json, not {log_format!r}")
        raise typer.Exit(2)
    configure_logging(verbose=verbose, fmt=log_format)
    with reported():
        # The address first: a port in use is said before anything is migrated, made or announced.
        sock = listen(host, port)
    with contextlib.closing(sock):
        with reported():
            settings = ServiceConfig.load(config)
            # A wildcard address is where the server listens, not where anyone can reach it.
            port_now = sock.getsockname()[1]
            wildcard = host in ("", "0.0.0.0", "::")
            listening = None if wildcard else f"http://{f'[{host}]' if ':' in host else host}:{port_now}"
            settings = dataclasses.replace(settings, signaling=settings.signaling_with_callbacks(listening))
            # The option (or TENURE_DATABASE_URL) first, then the configuration file, then the default.
            url = database_url(database, configured=settings.database)
            kinds = [*settings.kinds, *(kinds or [])]
            if url.startswith("sqlite:"):
                migrator = open_store(url, check_schema=False, tables=builtin_tables())
                try:
                    applied = migrator.migrate()
                finally:
                    migrator.close()
                if applied:
                    console.print(f"migrated {migrator.target} to schema version {max(applied)}")
            store = open_store(
                url,
                all_kinds(kinds, settings.signaling),
                pool_size=pool_size(workers + 2, concurrency),
                tables=builtin_tables(),
                **settings.store_options(),
            )
        try:
            with reported():
                steps = steps_for(store, kinds, settings.signaling)
                settings = _announce_auth(settings, token_file)
            console.print(
                f"tenure serving http://{host}:{sock.getsockname()[1]} on {store.target} with {workers} worker(s); "
                f"kinds: {', '.join(sorted(store.kinds))}; API docs at /docs; Ctrl-C to stop"
            )
            # Webhook subscriptions are delivered wherever the engine runs (not by an API-only process).
            deliverer = Deliverer(store).start() if workers else None
            try:
                with reported():
                    run_server(
                        store,
                        steps,
                        settings,
                        host=host,
                        port=port,
                        workers=workers,
                        concurrency=concurrency,
                        lease=timedelta(seconds=lease),
                        sock=sock,
                    )
            finally:
                if deliverer is not None:
                    deliverer.stop()
        finally:
            store.close()


def _announce_auth(settings: ServiceConfig, token_file: Path) -> ServiceConfig:
    from tenure.service.config import generated_token

    if not settings.auth:
        errors.print(
            "[bold red on white] WARNING [/] [bold red]authentication is OFF (TENURE_AUTH=off): anyone who can "
            "reach this port can create, change and tear down resources. Use this for local development only.[/]"
        )
        return settings
    if settings.tokens:
        console.print(f"auth on: {len(settings.tokens)} client token(s) configured")
        if token_file.exists():
            # A token added through TENURE_TOKENS (or --config) takes the generated one's place.
            errors.print(
                f"note: the admin token in {token_file} is not accepted while client tokens are configured "
                "(TENURE_TOKENS or --config); clients that read it, the CLI included, now need TENURE_TOKEN set "
                f"to a configured token. Configure no tokens to use {token_file} again.",
                highlight=False,
            )
        return settings
    existed = token_file.exists()
    token = generated_token(token_file)
    console.print(
        f"auth on: no client tokens configured, so {'reusing' if existed else 'made'} an admin token in "
        f"{token_file} (mode 600); send it as 'Authorization: Bearer <token>' (the CLI reads it by itself)"
    )
    return settings.with_tokens([token])
