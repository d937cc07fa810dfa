"""The README's quickstart, run as written: `tenure serve`, then its CLI and curl blocks in a shell.

A new user copies these blocks into a second terminal; if they stop working, this test says so. The
only changes made to the text are the port (a free one instead of 8080) and the path of the
virtualenv (this interpreter's).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
VENV = Path(sys.prefix)

pytestmark = pytest.mark.timeout(180)


def block(tag: str) -> str:
    found = re.search(rf"<!-- quickstart: {tag} -->\n```sh\n(.*?)```", README.read_text(), re.S)
    assert found, f"README.md has no '<!-- quickstart: {tag} -->' block"
    return found.group(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    (tmp_path / ".venv").symlink_to(VENV)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENURE_")}
    server = subprocess.Popen(
        [str(VENV / "bin" / "tenure"), "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            server.kill()
            pytest.fail(f"tenure serve did not become ready:\n{server.communicate()[0]}")
        yield tmp_path, port
    finally:
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=60)
        assert server.returncode == 0, f"tenure serve did not stop cleanly on SIGTERM:\n{out}"


def run(text: str, where: Path, port: int) -> str:
    script = text.replace("8080", str(port))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENURE_")}
    done = subprocess.run(
        ["bash", "-eu", "-c", script],
        check=False,
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, (
        f"the block failed ({done.returncode}):\n{script}\n--- out\n{done.stdout}\n--- err\n{done.stderr}"
    )
    return done.stdout


def test_the_quickstart_works_as_written(served: tuple[Path, int]) -> None:
    where, port = served

    cli = run(block("cli"), where, port)
    assert "deprovisioned" in cli
    assert "transfer" in cli

    out = run(block("curl"), where, port)
    assert re.search(r'(?im)^etag: "\d+"', out)
    assert "urn:tenure:problem:precondition-failed" in out
    assert "urn:tenure:problem:transition-not-allowed" in out
    assert '"desiredState":"deprovisioned"' in out
    assert "event: change" in out
    assert re.search(r'(?m)^tenure_resources\{kind="transfer",role="final",state="deprovisioned"\} 2\.0$', out)
