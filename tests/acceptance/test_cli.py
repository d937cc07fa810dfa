"""The ``tenure`` command as a user runs it: a real subprocess against real databases."""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tenure import open_store
from tenure.kinds import builtin_kinds, builtin_tables
from tenure.store.migrator import latest_version

ROOT = Path(__file__).resolve().parents[2]


def tenure(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    inherited = {k: v for k, v in os.environ.items() if k != "TENURE_DATABASE_URL"}
    full_env = {**inherited, "COLUMNS": "160", "NO_COLOR": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "tenure", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=120,
        check=False,
    )


def test_migrate_then_up_to_date(store_url: str) -> None:
    first = tenure("migrate", "--database", store_url)
    assert first.returncode == 0, first.stderr
    latest = latest_version("postgres" if store_url.startswith("postgresql") else "sqlite")
    assert f"applied migrations {', '.join(str(v) for v in range(1, latest + 1))}" in first.stdout
    again = tenure("migrate", "--database", store_url)
    assert again.returncode == 0, again.stderr
    assert f"up to date (schema version {latest})" in again.stdout


def test_database_comes_from_the_environment(sqlite_url: str) -> None:
    result = tenure("migrate", env={"TENURE_DATABASE_URL": sqlite_url})
    assert result.returncode == 0, result.stderr
    assert sqlite_url in result.stdout


def test_default_database_is_tenure_db_in_the_working_directory(tmp_path: Path) -> None:
    result = tenure("migrate", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "tenure.db").exists()


def test_kinds_lists_the_builtin_kinds_as_table_and_json() -> None:
    table = tenure("kinds")
    assert table.returncode == 0, table.stderr
    for kind in builtin_kinds():
        assert kind.name in table.stdout
    as_json = json.loads(tenure("kinds", "--json").stdout)
    assert [k["name"] for k in as_json] == [k.name for k in builtin_kinds()]
    image = next(k for k in as_json if k["name"] == "image")
    assert {s["name"]: s["code"] for s in image["states"]}["active"] == 50


def test_user_kinds_load_by_import_path(tmp_path: Path) -> None:
    (tmp_path / "mykinds.py").write_text(
        "from tenure import Kind, State, Event, Role\n"
        "lamp = Kind('lamp', states=[State('off', 0), State('on', 1)],\n"
        "            events=[Event('flip', 'off', 'on'), Event('flop', 'on', 'off')], initial='off')\n"
    )
    result = tenure("kinds", "--kinds", "mykinds", "--json", env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert [k["name"] for k in json.loads(result.stdout)] == [*(k.name for k in builtin_kinds()), "lamp"]
    missing = tenure("kinds", "--kinds", "no_such_module_here")
    assert missing.returncode == 1
    assert "cannot import kinds from 'no_such_module_here'" in missing.stderr


def test_draw_mermaid_and_dot() -> None:
    mermaid = tenure("draw", "image")
    assert mermaid.returncode == 0, mermaid.stderr
    assert mermaid.stdout.startswith("stateDiagram-v2")
    assert "pending_delete (70, wait)" in mermaid.stdout
    dot = tenure("draw", "image", "--format", "dot")
    assert dot.returncode == 0, dot.stderr
    assert dot.stdout.startswith('digraph "image" {')
    assert '"active" -> "deactivated" [label="deactivate"];' in dot.stdout


def test_draw_unknown_kind_names_the_known_ones() -> None:
    result = tenure("draw", "volcano")
    assert result.returncode == 1
    known = ", ".join(sorted(k.name for k in builtin_kinds()))
    assert f"unknown kind 'volcano'; known kinds: {known}" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_races_and_verifies(store_url: str) -> None:
    result = tenure("demo", "--database", store_url, "--resources", "5", "--threads", "4")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "exactly one winner per version: yes" in result.stdout
    assert "journal replay gives every row's state and version: yes" in result.stdout
    store = open_store(store_url, builtin_kinds())
    try:
        page = store.list(kind="image")
        assert len(page.items) == 5
        for r in page.items:
            versions = [e.version for e in store.journal(r.id)]
            assert versions == list(range(1, r.version + 1))
            # Round one had exactly one winner at version 2 out of four racing threads.
            assert store.journal(r.id)[1].actor.startswith("thread-")
    finally:
        store.close()


def test_show_and_history(sqlite_url: str) -> None:
    assert tenure("migrate", "-d", sqlite_url).returncode == 0
    store = open_store(sqlite_url, builtin_kinds())
    r = store.create("image", {"name": "cli"}, actor="test")
    store.fire(r, "upload", actor="test")
    store.close()
    shown = json.loads(tenure("show", r.id, "-d", sqlite_url, "--json").stdout)
    assert (shown["state"], shown["version"]) == ("saving", 2)
    assert "claimToken" not in shown
    assert "claim_token" not in shown
    history = json.loads(tenure("history", r.id, "-d", sqlite_url, "--json").stdout)
    assert [(h["event"], h["toState"]) for h in history] == [("@create", "queued"), ("upload", "saving")]
    table = tenure("history", r.id, "-d", sqlite_url)
    assert "upload" in table.stdout
    assert "saving" in table.stdout


def test_show_unknown_id(sqlite_url: str) -> None:
    assert tenure("migrate", "-d", sqlite_url).returncode == 0
    result = tenure("show", "nope", "-d", sqlite_url)
    assert result.returncode == 1
    assert "no resource with id 'nope'" in result.stderr


def test_unmigrated_database_says_what_to_run(sqlite_url: str) -> None:
    Path(sqlite_url.removeprefix("sqlite:///")).touch()  # a database file, but empty
    result = tenure("show", "x", "-d", sqlite_url)
    assert result.returncode == 1
    assert f"schema version 0 but tenure needs version {latest_version('sqlite')}" in result.stderr
    assert "tenure migrate" in result.stderr


@pytest.mark.parametrize("args", [("ls",), ("show", "x"), ("history", "x"), ("runs", "list"), ("runs", "show", "x")])
def test_commands_on_a_missing_database_say_so_and_create_nothing(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = tenure(*args, cwd=tmp_path, env={"TENURE_SERVER": ""})
    assert result.returncode == 1
    assert "there is no database at tenure.db (no such file)" in result.stderr
    assert "'tenure migrate' makes one" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_generated_token_file_is_ignored_by_git() -> None:
    # Read from the file itself: the test holds in an exported tree too, with or without git.
    patterns = [line.strip() for line in (ROOT / ".gitignore").read_text().splitlines()]
    ignored = any(fnmatch.fnmatch("tenure.token", p) for p in patterns if p and not p.startswith(("#", "!")))
    assert ignored, "tenure.token (a secret tenure serve writes) is not in .gitignore"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://root@127.0.0.1/test", "unknown scheme 'mysql'"),
        ("sqlite://relative.db", "three slashes"),
        ("postgresql://postgres@127.0.0.1:1/nothing?connect_timeout=1", "127.0.0.1:1/nothing is unavailable"),
    ],
)
def test_bad_databases_get_one_clear_line(url: str, message: str) -> None:
    result = tenure("migrate", "-d", url)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert "error connecting" not in result.stderr


def test_version() -> None:
    result = tenure("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("tenure 0.")


def test_runs_list_show_and_resolve_a_failed_revert(store_url: str) -> None:
    from tenure.flow import FlowEngine, linear, task
    from tenure.flow.durable import StoreCheckpoints

    def refuse(result: object) -> None:
        raise RuntimeError("cannot undo")

    @task(provides="x", revert=refuse)
    def make() -> int:
        return 1

    @task
    def boom(x: int) -> None:
        raise ValueError("no")

    store = open_store(store_url, builtin_kinds(), check_schema=False, tables=builtin_tables())
    try:
        store.migrate()
        outcome = FlowEngine(linear("ops", make, boom), checkpoints=StoreCheckpoints(store)).run()
    finally:
        store.close()
    assert outcome.state.value == "revert_failed"

    listed = json.loads(tenure("runs", "list", "--state", "revert_failed", "-d", store_url, "--json").stdout)
    assert [r["id"] for r in listed] == [outcome.run_id]
    assert listed[0]["flow"] == "ops"
    shown = json.loads(tenure("runs", "show", outcome.run_id, "-d", store_url, "--json").stdout)
    assert {t["task"]: t["state"] for t in shown["tasks"]} == {"make": "revert_failure", "boom": "reverted"}
    assert [t["revert_failure"] for t in shown["tasks"] if t["task"] == "make"] == ["cannot undo"]
    table = tenure("runs", "list", "-d", store_url)
    assert outcome.run_id[:8] in table.stdout

    resolved = tenure("runs", "resolve", outcome.run_id, "-d", store_url)
    assert resolved.returncode == 0, resolved.stderr
    assert json.loads(tenure("runs", "list", "--state", "resolved", "-d", store_url, "--json").stdout)[0]["id"] == (
        outcome.run_id
    )
    again = tenure("runs", "resolve", outcome.run_id, "-d", store_url)
    assert again.returncode == 1
    assert "must be revert_failed to be resolved, got 'resolved'" in again.stderr
    missing = tenure("runs", "show", "nope", "-d", store_url)
    assert missing.returncode == 1
    assert "no flow run with id 'nope'" in missing.stderr


def _make_dry_run(target: str) -> str:
    """What ``make TARGET`` would run in a fresh clone (``-B``: as if nothing were installed yet).

    ``make`` is what the README's two commands and CI run, so it is there wherever the tests are.
    """
    result = subprocess.run(
        ["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_serve_installs_the_runtime_only() -> None:
    commands = _make_dry_run("serve")
    assert "pip install --quiet -e .\n" in commands
    assert "[dev" not in commands
    assert "bench]" not in commands
    assert "tenure serve --port 8080" in commands


@pytest.mark.parametrize("target", ["test", "lint", "types", "unit", "bench", "mutants"])
def test_make_checks_install_the_dev_and_bench_extras(target: str) -> None:
    assert "pip install --quiet -e '.[dev,bench]'" in _make_dry_run(target)


def test_the_command_line_starts_without_the_server_engine_or_drivers() -> None:
    """``tenure ls`` and friends load only what talking to a server needs: the rest waits for its command."""
    heavy = ("fastapi", "uvicorn", "psycopg", "psycopg_pool", "starlette", "tenure.engine", "tenure.store")
    probe = f"import sys\nfrom tenure.cli import main\nprint(sorted(m for m in {heavy!r} if m in sys.modules))\n"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_help_texts_name_the_stores_database_defaults() -> None:
    from tenure.cli import common
    from tenure.store import url

    assert (common.DATABASE_URL_ENV, common.DEFAULT_DATABASE_URL) == (url.DATABASE_URL_ENV, url.DEFAULT_DATABASE_URL)


def test_piped_output_keeps_whole_lines() -> None:
    """Without a terminal (and without COLUMNS), tables are as wide as their content, not cut to 80."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TENURE_DATABASE_URL")}
    result = subprocess.run(
        [sys.executable, "-m", "tenure", "kinds"],
        capture_output=True,
        text=True,
        env={**env, "NO_COLOR": "1"},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for kind in builtin_kinds():
        assert kind.description
        assert any(kind.description in line for line in result.stdout.splitlines()), result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) > 80


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (("runs", "list"), {"TENURE_SERVER": "http://127.0.0.1:1"}),
        (("runs", "show", "x", "--server", "http://127.0.0.1:1"), {}),
        (("runs", "resolve", "x", "--server", "http://127.0.0.1:1"), {}),
    ],
)
def test_runs_refuses_a_server_and_says_it_needs_a_database(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str]
) -> None:
    result = tenure(*args, cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert "tenure runs works on a database only, not on a server (http://127.0.0.1:1)" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [(), ("ls",), ("create",), ("desire",), ("serve",), ("runs", "list")])
def test_help_lists_flags_without_a_type(command: tuple[str, ...]) -> None:
    result = tenure(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "<bool>" not in result.stdout
    assert "--help" in result.stdout
