"""The resource commands as a user runs them against a running ``tenure serve`` and against its database.

A real server subprocess on a free port of 127.0.0.1 with a SQLite database in a temporary directory
(auth on, the generated admin token in that directory; a second one with ``TENURE_AUTH=off``), and
every command a subprocess too. Independent commands run side by side to keep the module quick.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from tenure.service.client import Client

#: Variables of the developer's shell that would point the commands somewhere else.
_SCRUBBED = ("TENURE_DATABASE_URL", "TENURE_SERVER", "TENURE_TOKEN", "TENURE_TOKEN_FILE", "TENURE_AUTH")
_SCRUBBED_SERVER = (*_SCRUBBED, "TENURE_CONFIG", "TENURE_TOKENS", "TENURE_PUBLIC_URL")


def _env(extra: dict[str, str] | None = None, scrub: tuple[str, ...] = _SCRUBBED) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if k not in scrub}
    return {**inherited, "COLUMNS": "200", "NO_COLOR": "1", **(extra or {})}


@dataclass
class Ran:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.returncode == 0, self.stderr
        return json.loads(self.stdout)


def start(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tenure", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=_env(env),
    )


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> Ran:
    out, err = proc.communicate(timeout=timeout)
    args = cast(list[str], proc.args)
    return Ran(tuple(args[3:]), proc.returncode, out, err)


def tenure(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Ran:
    return finish(start(*args, cwd=cwd, env=env))


def together(*commands: tuple[str, ...], cwd: Path, env: dict[str, str] | None = None) -> list[Ran]:
    """Run independent commands side by side; their results in the order given."""
    procs = [start(*args, cwd=cwd, env=env) for args in commands]
    return [finish(p) for p in procs]


def clean(*results: Ran) -> None:
    """No command leaked a traceback."""
    for r in results:
        assert "Traceback" not in r.stderr, (r.args, r.stderr)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Served:
    url: str
    dir: Path
    database: str
    token: str | None
    proc: subprocess.Popen[str]


def serve(directory: Path, *, auth: bool = True, workers: int = 1) -> Iterator[Served]:
    port = free_port()
    database = f"sqlite:///{directory / 'tenure.db'}"
    token_file = directory / "tenure.token"
    env = _env({} if auth else {"TENURE_AUTH": "off"}, _SCRUBBED_SERVER)
    command = [sys.executable, "-m", "tenure", "serve", "--port", str(port), "--database", database]
    command += ["--token-file", str(token_file), "--workers", str(workers), "--lease", "5"]
    # A file, not a pipe: nobody reads the server's log while it runs, and a full pipe would stall it.
    log = directory / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, text=True, cwd=directory, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"the server did not become ready:\n{log.read_text()}"
            time.sleep(0.1)
        token = token_file.read_text().strip() if auth else None
        yield Served(url, directory, database, token, proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from serve(tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def open_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from serve(tmp_path_factory.mktemp("open"), auth=False, workers=0)


def api(s: Served) -> Client:
    """The Python client, for setting the scene without paying for a process."""
    return Client(s.url, token=s.token)


def ids(page: dict[str, Any]) -> list[str]:
    return [r["id"] for r in page["items"]]


# --- against the server --------------------------------------------------------------------------


def test_kinds_and_diagrams_come_from_the_server(served: Served) -> None:
    on = ("--server", served.url)
    listed, dot, svg, missing = together(
        ("kinds", "--json", *on),
        ("draw", "volume", "--format", "dot", *on),
        ("draw", "image", "--format", "svg", *on),
        ("draw", "volcano", *on),
        cwd=served.dir,
    )
    clean(listed, dot, svg, missing)
    kinds = {k["name"]: k for k in listed.json()}
    assert {"deployment", "image", "transfer", "volume"} <= set(kinds)
    assert kinds["volume"]["initial"] == "requested"
    assert kinds["volume"]["specSchema"]["properties"]["size_gb"]["type"] == "integer"
    assert dot.stdout.startswith('digraph "volume" {')
    assert svg.returncode == 0, svg.stderr
    assert svg.stdout.lstrip().startswith(("<svg", "<?xml"))
    assert missing.returncode == 1
    assert "no kind 'volcano' is loaded (loaded: dataflow, deployment, image, transfer, volume)" in missing.stderr


def test_resource_commands_print_the_apis_json_and_tables(served: Served) -> None:
    on = ("--server", served.url)
    # Run where the server wrote its token file: the commands find ./tenure.token by themselves.
    made = tenure("create", "volume", '{"size_gb": 5, "project": "cli-json"}', "--json", *on, cwd=served.dir).json()
    assert (made["kind"], made["state"], made["version"]) == ("volume", "requested", 1)
    assert {"desiredState", "observedGeneration", "createdAt", "updatedAt"} <= set(made)
    rid = made["id"]

    waited = tenure("wait", rid, "--state", "available", "--timeout", "30", "--json", *on, cwd=served.dir)
    assert waited.json()["state"] == "available"

    # (The tables of kinds and history are the same code as with --database; see test_cli.py.)
    shown, listed, journal, table, show_table = together(
        ("show", rid, "--json", *on),
        ("ls", "--kind", "volume", "--json", *on),
        ("history", rid, "--json", *on),
        ("ls", "--kind", "volume", *on),
        ("show", rid, *on),
        cwd=served.dir,
    )
    clean(shown, listed, journal, table, show_table)
    resource = shown.json()
    assert (resource["id"], resource["state"]) == (rid, "available")
    page = listed.json()
    assert set(page) == {"items", "next"}
    assert rid in ids(page)
    entries = journal.json()
    assert [e["event"] for e in entries] == ["@create", "accepted", "scheduled", "created"]
    assert [e["toState"] for e in entries][-1] == "available"
    assert entries[0]["actor"] == "local-admin"  # the client the generated token belongs to
    assert [e["version"] for e in entries] == list(range(1, resource["version"] + 1))
    for text in ("id", "state", "desired", "version", "updated", rid, "available"):
        assert text in table.stdout
    assert "observedGeneration" in show_table.stdout

    version = resource["version"]
    stale, unknown, refused, desired = together(
        ("event", rid, "delete", "--if-version", "1", *on),
        ("event", rid, "explode", *on),
        ("event", rid, "accepted", *on),
        ("desire", rid, "available", "--if-version", str(version), "--json", *on),
        cwd=served.dir,
    )
    clean(stale, unknown, refused, desired)
    assert stale.returncode == 1
    assert "not 1 as If-Match says; read it again" in stale.stderr
    assert unknown.returncode == 1
    assert "has no event 'explode'" in unknown.stderr
    assert refused.returncode == 1
    assert "event 'accepted' is not allowed" in refused.stderr
    assert "allowed events in 'available': delete" in refused.stderr
    for r in (stale, unknown, refused):
        assert r.stderr.startswith("error: ")
        assert r.stderr.count("\n") == 1, r.stderr  # one line
    assert desired.json()["desiredState"] == "available"
    assert desired.json()["version"] == version + 1

    wished, deleting = together(
        ("ls", "--desired-state", "available", "--json", *on),
        ("event", rid, "delete", "--data", '{"reason": "test"}', *on),
        cwd=served.dir,
    )
    assert rid in ids(wished.json())
    assert deleting.returncode == 0, deleting.stderr
    assert f"{rid} volume deleting, desired available (version {version + 2})" in deleting.stdout


def test_ls_filters_and_pages(served: Served) -> None:
    on = ("--server", served.url)
    with api(served) as client:
        made = [client.create("image", {"name": f"page-{i}"})["id"] for i in range(3)]
        client.fire(made[0], "stage")
    first = tenure("ls", "--kind", "image", "--limit", "2", "--json", *on, cwd=served.dir).json()
    assert len(first["items"]) == 2
    assert first["next"] == first["items"][-1]["id"]
    rest, every, table, states = together(
        ("ls", "--kind", "image", "--limit", "2", "--after", first["next"], "--json", *on),
        ("ls", "--kind", "image", "--limit", "2", "--all", "--json", *on),
        ("ls", "--kind", "image", "--limit", "2", *on),
        ("ls", "--kind", "image", "--state", "uploading", "--state", "queued", "--limit", "1000", "--json", *on),
        cwd=served.dir,
    )
    clean(rest, every, table, states)
    everything = every.json()
    assert everything["next"] is None
    assert ids(everything)[:2] == ids(first)
    assert ids(everything)[2:4] == ids(rest.json())[:2]
    assert set(made) <= set(ids(everything))
    assert "use --all, or --after" in table.stdout
    assert {r["state"] for r in states.json()["items"]} == {"queued", "uploading"}
    assert set(made) <= set(ids(states.json()))


def test_wait_follows_what_the_workers_do(served: Served) -> None:
    on = ("--server", served.url)
    with api(served) as client:
        rid = client.create("transfer", {"asset": "q3-report.csv"})["id"]
        started = tenure("wait", rid, "--state", "started", "--timeout", "30", "--json", *on, cwd=served.dir).json()
        assert started["state"] == "started"

        # From 'started' nothing moves until a client says 'complete': the wait must see what follows.
        waiting = start("wait", rid, "--state", "deprovisioned", "--timeout", "30", "--json", *on, cwd=served.dir)
        assert waiting.stderr is not None
        # Without a terminal, the progress is a line on stderr when waiting starts, and one per state seen.
        first = waiting.stderr.readline()
        assert first == f"waiting for {rid} to reach deprovisioned: now started (version {started['version']})\n"
        client.fire(rid, "complete")
    done = finish(waiting)
    clean(done)
    assert done.json()["state"] == "deprovisioned"
    assert f"{rid}: deprovisioned (version" in done.stderr


def test_wait_gives_up_on_timeout_and_on_states_it_cannot_reach(served: Served) -> None:
    on = ("--server", served.url)
    with api(served) as client:
        queued = client.create("image", {"name": "stays-queued"})["id"]
        gone = client.create("image", {"name": "deleted"})["id"]
        client.fire(gone, "delete")
    timed_out, final, no_state, missing = together(
        ("wait", queued, "--state", "active", "--timeout", "1", "--json", *on),
        ("wait", gone, "--state", "active", *on),
        ("wait", queued, "--state", "exploded", *on),
        ("wait", "nope", "--state", "active", *on),
        cwd=served.dir,
    )
    clean(timed_out, final, no_state, missing)
    assert timed_out.returncode == 1
    assert (
        f"timed out after 1 s waiting for resource {queued} to reach 'active'; it is in state 'queued' (version 1)"
        in timed_out.stderr
    )
    assert json.loads(timed_out.stdout)["state"] == "queued"  # the resource as last seen, for scripts
    assert final.returncode == 1
    assert f"resource {gone} reached final state 'deleted', not 'active'" in final.stderr
    assert no_state.returncode == 1
    assert "kind 'image' has no state 'exploded'" in no_state.stderr
    assert missing.returncode == 1
    assert "no resource with id 'nope'" in missing.stderr


def test_tokens_come_from_the_environment_or_the_token_file_never_the_command_line(
    served: Served, tmp_path: Path
) -> None:
    assert served.token is not None
    on = ("--server", served.url)
    wrong = "not-the-token-0123456789"
    procs = [
        start("ls", *on, cwd=tmp_path),  # no tenure.token here
        start("ls", *on, cwd=tmp_path, env={"TENURE_TOKEN": wrong}),
        start("ls", "--json", *on, cwd=tmp_path, env={"TENURE_TOKEN": served.token}),
        start("ls", "--json", *on, "--token-file", str(served.dir / "tenure.token"), cwd=tmp_path),
        start("ls", "--json", cwd=served.dir, env={"TENURE_SERVER": served.url}),
        start("ls", *on, "--token", served.token, cwd=served.dir),
    ]
    no_token, bad_token, env_token, file_token, env_server, on_command_line = results = [finish(p) for p in procs]
    clean(*results)
    assert no_token.returncode == 1
    assert "send a client token" in no_token.stderr
    assert "no token was sent: set TENURE_TOKEN" in no_token.stderr
    assert bad_token.returncode == 1
    assert "the bearer token is not valid (the token from TENURE_TOKEN was refused)" in bad_token.stderr
    assert env_token.json()["items"]
    assert ids(file_token.json()) == ids(env_token.json())
    assert env_server.json()["items"]
    for r in (no_token, bad_token, env_token, file_token, env_server):
        assert served.token not in r.stdout + r.stderr
        assert wrong not in r.stdout + r.stderr
    # There is no option to pass a token: it would show in the process list.
    assert on_command_line.returncode == 2


def test_unreachable_servers_and_conflicting_options_are_one_line(served: Served, tmp_path: Path) -> None:
    down, both, bad_url = together(
        ("ls", "--server", "http://127.0.0.1:1"),
        ("ls", "--server", served.url, "--database", served.database),
        ("show", "x", "--server", "127.0.0.1:8080"),
        cwd=tmp_path,
    )
    clean(down, both, bad_url)
    assert down.returncode == 1
    assert "error: cannot reach the tenure server at http://127.0.0.1:1: connection failed" in down.stderr
    assert both.returncode == 1
    assert "give --server or --database, not both" in both.stderr
    assert bad_url.returncode == 1
    assert "must start with http:// or https://" in bad_url.stderr


def test_a_server_without_auth_needs_no_token(open_served: Served, tmp_path: Path) -> None:
    on = ("--server", open_served.url)
    made = tenure("create", "image", '{"name": "open"}', "--json", *on, cwd=tmp_path).json()
    listed, history = together(("ls", "--json", *on), ("history", made["id"], "--json", *on), cwd=tmp_path)
    assert ids(listed.json()) == [made["id"]]
    assert history.json()[0]["actor"] == "anonymous"


# --- against the database --------------------------------------------------------------------------


def test_the_same_commands_against_the_database(served: Served) -> None:
    on_db = ("--database", served.database)
    on = ("--server", served.url)
    # Created straight in the database; the server's workers (same database) take it to 'available'.
    made = tenure("create", "volume", '{"size_gb": 1, "project": "cli-db"}', "--json", *on_db, cwd=served.dir)
    rid = made.json()["id"]
    waited = tenure("wait", rid, "--state", "available", "--timeout", "30", *on_db, cwd=served.dir)
    assert waited.returncode == 0, waited.stderr
    assert f"{rid} volume available (version" in waited.stdout
    with api(served) as client:
        queued = client.create("image", {"name": "db-queued"})["id"]

    results = together(
        ("show", rid, "--json", *on_db),
        ("show", rid, "--json", *on),
        ("history", rid, "--json", *on_db),
        ("history", rid, "--json", *on),
        ("ls", "--kind", "volume", "--limit", "1000", "--json", *on_db),
        ("draw", "volume"),
        ("draw", "volume", *on),
        ("wait", queued, "--state", "active", "--timeout", "1", *on_db),
        cwd=served.dir,
    )
    clean(*results)
    show_db, show_http, history_db, history_http, listed, draw_local, draw_http, timed_out = results
    # One shape, whichever way the command went.
    assert show_db.json() == show_http.json()
    assert history_db.json() == history_http.json()
    assert history_db.json()[0]["actor"] == "cli"
    assert rid in ids(listed.json())
    assert draw_local.stdout.startswith("stateDiagram-v2")
    assert draw_local.stdout == draw_http.stdout
    assert timed_out.returncode == 1
    assert "timed out after 1 s" in timed_out.stderr

    version = show_db.json()["version"]
    desired = tenure("desire", rid, "available", "--if-version", str(version), "--json", *on_db, cwd=served.dir)
    assert desired.json()["desiredState"] == "available"
    stale, cleared = together(
        ("event", rid, "delete", "--if-version", str(version), *on_db),
        ("desire", rid, "--clear", "--if-version", str(version + 1), "--json", *on_db),
        cwd=served.dir,
    )
    clean(stale, cleared)
    assert stale.returncode == 1
    assert f"expected version {version}, found version" in stale.stderr
    assert cleared.json()["desiredState"] is None


# --- what a newcomer trips on ----------------------------------------------------------------------


def test_serve_on_a_port_in_use_says_so_before_claiming_anything(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        database = f"sqlite:///{tmp_path / 'tenure.db'}"
        ran = finish(
            subprocess.Popen(
                [sys.executable, "-m", "tenure", "serve", "--port", str(port), "--database", database],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=tmp_path,
                env=_env(scrub=_SCRUBBED_SERVER),
            )
        )
    assert ran.returncode == 1
    assert f"port in use: another process is listening on 127.0.0.1:{port}" in ran.stderr
    assert "serving" not in ran.stdout
    assert ran.stdout == ""  # nothing migrated, no token made, nothing announced
    assert list(tmp_path.iterdir()) == []
    clean(ran)


def test_serve_says_that_configured_tokens_retire_the_token_file(tmp_path: Path) -> None:
    (tmp_path / "tenure.token").write_text("made-by-an-earlier-run\n")
    port = free_port()
    command = [sys.executable, "-m", "tenure", "serve", "--port", str(port), "--workers", "0"]
    env = _env({"TENURE_TOKENS": "ci-bot:a-long-enough-secret-for-ci:read"}, _SCRUBBED_SERVER)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGINT)
    ran = finish(proc)
    assert "auth on: 1 client token(s) configured" in ran.stdout
    assert (
        "note: the admin token in tenure.token is not accepted while client tokens are configured (TENURE_TOKENS "
        "or --config)"
    ) in ran.stderr
    clean(ran)


def test_wait_says_when_the_server_went_away(tmp_path: Path) -> None:
    server = serve(tmp_path, workers=0)
    served = next(server)
    try:
        with api(served) as client:
            rid = client.create("image", {"name": "stays-queued"})["id"]
        waiting = start("wait", rid, "--state", "active", "--timeout", "4", "--server", served.url, cwd=tmp_path)
        assert waiting.stderr is not None
        assert waiting.stderr.readline().startswith(f"waiting for {rid} to reach active")
        served.proc.send_signal(signal.SIGINT)
        served.proc.wait(timeout=15)
        done = finish(waiting)
    finally:
        server.close()
    assert done.returncode == 1
    assert f"the server is unreachable (cannot reach the tenure server at {served.url}" in done.stderr
    assert f"stopped waiting for resource {rid} to reach 'active'" in done.stderr
    assert "it was last seen in state 'queued' (version 1)" in done.stderr
    clean(done)
