"""The sharing commands (use, renew, release, parties, teardown --force) as a user runs them.

Against a real ``tenure serve`` subprocess (auth on, its generated admin token in its directory,
one worker that deploys) and against its database directly; every command is a subprocess.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.acceptance.test_cli_service import Served, clean, serve, tenure, together

PARTY = "tag:example.org,2026:ci/42"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from serve(tmp_path_factory.mktemp("sharing"))


def deployed(served: Served, name: str) -> str:
    on = ("--server", served.url)
    made = tenure("create", "deployment", f'{{"name": "{name}", "image": "nginx:1"}}', "--json", *on, cwd=served.dir)
    rid: str = made.json()["id"]
    assert tenure("wait", rid, "--state", "deployed", "--timeout", "30", *on, cwd=served.dir).returncode == 0
    return rid


def test_use_renew_parties_and_release_against_a_server(served: Served) -> None:
    on = ("--server", served.url)
    rid = deployed(served, "cli-web")
    used = tenure("use", rid, PARTY, "--ttl", "600", *on, cwd=served.dir)
    clean(used)
    assert used.returncode == 0, used.stderr
    assert f"registered {PARTY} on {rid} until " in used.stdout
    assert "(client local-admin)" in used.stdout
    renewed = tenure("renew", rid, PARTY, "--ttl", "1200", "--json", *on, cwd=served.dir).json()
    assert (renewed["party"], renewed["client"]) == (PARTY, "local-admin")

    listed, table = together(("parties", rid, "--json", *on), ("parties", rid, *on), cwd=served.dir)
    clean(listed, table)
    assert [p["party"] for p in listed.json()] == [PARTY]
    assert listed.json()[0]["expiresAt"] == renewed["expiresAt"]
    assert PARTY in table.stdout

    over = tenure("use", rid, "urn:example:greedy", "--ttl", "999999", *on, cwd=served.dir)
    clean(over)
    assert over.returncode == 1
    assert "at most 86400" in over.stderr

    released = tenure("release", rid, PARTY, *on, cwd=served.dir)
    assert released.returncode == 0, released.stderr
    assert f"released {PARTY} from {rid}" in released.stdout
    again = tenure("release", rid, PARTY, *on, cwd=served.dir)
    clean(again)
    assert again.returncode == 1
    assert "does not use resource" in again.stderr
    assert tenure("parties", rid, "--json", *on, cwd=served.dir).json() == []


def test_teardown_needs_force_and_records_the_parties(served: Served) -> None:
    on = ("--server", served.url)
    rid = deployed(served, "cli-forced")
    assert tenure("use", rid, PARTY, *on, cwd=served.dir).returncode == 0
    unforced = tenure("teardown", rid, *on, cwd=served.dir)
    assert unforced.returncode == 2
    assert "--force" in unforced.stderr
    forced = tenure("teardown", rid, "--force", "--reason", "rotation", "--json", *on, cwd=served.dir).json()
    assert (forced["desiredState"], forced["inUseBy"]) == ("undeployed", {})
    waited = tenure("wait", rid, "--state", "undeployed", "--timeout", "30", *on, cwd=served.dir)
    assert waited.returncode == 0, waited.stderr
    history = tenure("history", rid, "--json", *on, cwd=served.dir).json()
    entry = next(e for e in history if e["detail"].get("forced"))
    assert entry["detail"]["reason"] == "rotation"
    assert list(entry["detail"]["parties"]) == [PARTY]


def test_use_parties_and_release_on_the_database_directly(served: Served) -> None:
    rid = deployed(served, "cli-local")
    db = ("--database", served.database)
    used = tenure("use", rid, "urn:example:local", "--json", *db, cwd=served.dir).json()
    assert used["client"] == "cli"
    assert [p["party"] for p in tenure("parties", rid, "--json", *db, cwd=served.dir).json()] == ["urn:example:local"]
    shown = tenure("show", rid, "--json", "--server", served.url, cwd=served.dir).json()
    assert set(shown["inUseBy"]) == {"urn:example:local"}
    assert tenure("release", rid, "urn:example:local", *db, cwd=served.dir).returncode == 0
    assert tenure("parties", rid, "--json", *db, cwd=served.dir).json() == []
