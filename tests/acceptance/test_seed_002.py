"""Seed 002's scenario through the HTTP API of a real ``tenure serve`` with its workers.

Client 1 creates a deployment without saying whether it is sharable (the provider's default: it
is), the workers deploy it; client 2 sees it deployed and sharable and registers as a party; client
1 asks for the teardown and gets 2xx at once, yet the deployment stays deployed, saying whom it
waits for; client 2 leaves, and the workers undeploy it. The journal tells who did what. Each client
has its own token, so the uses and the journal name them apart.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.test_cli_service import free_port

TOKENS = {"client-1": "client-one-token-0123456789", "client-2": "client-two-token-0123456789"}
PARTY = "tag:client2.example.org,2026:build/7"
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
#: What the server's environment must not inherit from the developer's shell.
_SCRUBBED = ("TENURE_DATABASE_URL", "TENURE_SERVER", "TENURE_TOKEN", "TENURE_AUTH", "TENURE_CONFIG", "TENURE_TOKENS")


@dataclass
class Server:
    url: str
    log: Path

    def client(self, name: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKENS[name]}"}, timeout=15)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("seed002")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env["TENURE_TOKENS"] = ";".join(f"{client}:{token}:write" for client, token in TOKENS.items())
    log = directory / "serve.log"
    command = [sys.executable, "-m", "tenure", "serve", "--port", str(port)]
    command += ["--database", f"sqlite:///{directory / 'tenure.db'}", "--workers", "1", "--lease", "5"]
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=directory, env=env)
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
        yield Server(url, log)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def wait_for(http: httpx.Client, rid: str, state: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = http.get(f"/v1/resources/{rid}")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        if body["state"] == state:
            return body
        assert time.monotonic() < deadline, f"still {body['state']} after {timeout}s, not {state}"
        time.sleep(0.1)


def test_the_deployment_is_torn_down_only_after_the_last_party_leaves(server: Server) -> None:
    with server.client("client-1") as one, server.client("client-2") as two:
        # Client 1 creates a deployment, saying nothing about sharing: the provider's default applies.
        made = one.post("/v1/resources", json={"kind": "deployment", "spec": {"name": "shop", "image": "shop:3"}})
        assert made.status_code == 201, made.text
        rid = made.json()["id"]
        assert made.json()["sharable"] is True
        wait_for(one, rid, "deployed")

        # Client 2 sees that it is deployed, not torn down and sharable, and registers as a party.
        seen = two.get(f"/v1/resources/{rid}").json()
        assert (seen["state"], seen["desiredState"], seen["sharable"]) == ("deployed", None, True)
        assert seen["data"]["deployment"]["endpoint"] == "https://shop.apps.example/"
        used = two.patch(f"/v1/resources/{rid}", json={"inUseBy": {PARTY: {"ttlSeconds": 600}}}, headers=MERGE_PATCH)
        assert used.status_code == 200, used.text
        assert used.json()["inUseBy"][PARTY]["client"] == "client-2"

        # Client 1 is finished: 2xx at once, and the deployment stays up, saying whom it waits for.
        done = one.put(f"/v1/resources/{rid}/desired-state", json={"desiredState": "undeployed"})
        assert done.status_code == 202, done.text
        assert done.json()["teardown"] == {"pending": True, "waitingFor": [PARTY]}
        time.sleep(1.5)  # the workers have had every chance to act
        held = one.get(f"/v1/resources/{rid}").json()
        assert (held["state"], held["desiredState"]) == ("deployed", "undeployed")
        assert held["teardown"]["waitingFor"] == [PARTY]

        # Client 2 finishes and deregisters: the provider tears the deployment down.
        left = two.patch(f"/v1/resources/{rid}", json={"inUseBy": {PARTY: None}}, headers=MERGE_PATCH)
        assert left.status_code == 200, left.text
        gone = wait_for(one, rid, "undeployed")
        assert gone["inUseBy"] == {}
        assert gone["observedGeneration"] == gone["generation"]

        journal = one.get(f"/v1/resources/{rid}/journal").json()["items"]
    story = [(e["event"], e["actor"], e["toState"]) for e in journal]
    worker = story[1][1]
    assert story == [
        ("@create", "client-1", "deploying"),
        ("deployed", worker, "deployed"),
        ("@use", "client-2", "deployed"),
        ("@desired", "client-1", "deployed"),
        ("undeploy", "client-2", "undeploying"),
        ("undeployed", worker, "undeployed"),
    ]
    assert journal[2]["detail"]["uses"] == {PARTY: "registered"}
    assert journal[4]["detail"]["uses"] == {PARTY: "released"}
    assert "Traceback" not in server.log.read_text()
