"""How long a ``tenure`` command takes, wall time, as a user runs it against a running server.

Run ``.venv/bin/python bench/cli.py`` (``--runs N`` for more or fewer runs per command). It starts a
real ``tenure serve`` (API only, ``--workers 0``, auth on, ``--kinds bench_kinds``, a SQLite database in a temporary
directory) on a free port of 127.0.0.1, creates one resource, then times each command as a fresh
subprocess of the installed ``tenure`` script, the way a shell runs it:

* ``tenure ls``, ``tenure show ID``, ``tenure event ID EVENT`` (on a resource of the two-state kind
  ``bench_kinds.toggle``, alternating ``turn_on`` and ``turn_off``), ``tenure ls --json``,
  ``tenure --help``;
* ``python -c pass`` with the same interpreter: the floor, what starting Python alone costs.

Each command runs ``--runs`` times after one warm-up run, which also writes the bytecode cache as a
user's Python would (``PYTHONDONTWRITEBYTECODE`` is dropped from the commands' environment); the median
and the 90th percentile are printed in milliseconds. A command that exits non-zero stops the run with
exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from benchkit import free_port

BIN = Path(sys.executable).parent
#: This folder, for the server's ``--kinds bench_kinds`` (the two-state ``toggle``: off <-> on).
HERE = Path(__file__).resolve().parent
#: The event that leads on from each state of ``toggle``, so that events can be fired forever.
NEXT = {"off": "turn_on", "on": "turn_off"}


def _tenure() -> str:
    found = BIN / "tenure"
    if found.exists():
        return str(found)
    which = shutil.which("tenure")
    if which is None:
        sys.exit("no tenure script next to this interpreter or on PATH: pip install -e . first")
    return which


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    # As a user runs it: Python keeps the bytecode it compiles (the warm-up run writes it), even
    # where this benchmark's own environment says not to.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("TENURE_") and k != "PYTHONDONTWRITEBYTECODE"}
    return {**inherited, "NO_COLOR": "1", **(extra or {})}


@contextmanager
def _server(directory: Path) -> Iterator[str]:
    port = free_port()
    command = [_tenure(), "serve", "--port", str(port), "--workers", "0", "--kinds", "bench_kinds"]
    command += ["--database", f"sqlite:///{directory / 'tenure.db'}", "--token-file", str(directory / "tenure.token")]
    log = directory / "serve.log"
    with log.open("w") as out:
        env = _env({"PYTHONPATH": os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)})
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=directory, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                sys.exit(f"the server stopped:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                sys.exit(f"the server did not become ready:\n{log.read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _run(args: Sequence[str], *, cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return elapsed, done.stdout


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _time(name: str, make_args: Callable[[int], Sequence[str]], runs: int, *, cwd: Path, env: dict[str, str]) -> None:
    _run(make_args(-1), cwd=cwd, env=env)  # warm-up: the file system cache, .pyc files
    seconds = [_run(make_args(i), cwd=cwd, env=env)[0] for i in range(runs)]
    median = statistics.median(seconds) * 1000
    p90 = _percentile(seconds, 0.9) * 1000
    print(f"{name:<28} {median:8.0f} {p90:8.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="timed runs per command (default 15)")
    options = parser.parse_args()
    runs = max(1, options.runs)
    tenure = _tenure()
    with tempfile.TemporaryDirectory(prefix="tenure-bench-cli-") as scratch:
        directory = Path(scratch)
        with _server(directory) as url:
            env = _env({"TENURE_SERVER": url})
            _, out = _run([tenure, "create", "toggle", "--json"], cwd=directory, env=env)
            made = json.loads(out)
            resource, state = made["id"], {"now": made["state"]}

            def event_args(i: int) -> list[str]:
                name = NEXT[state["now"]]
                state["now"] = "on" if state["now"] == "off" else "off"
                return [tenure, "event", resource, name]

            print(f"tenure CLI wall time against {url} (SQLite), {runs} runs each after a warm-up")
            print(f"{'command':<28} {'median':>8} {'p90':>8}   (ms)")
            _time("python -c pass (floor)", lambda i: [sys.executable, "-c", "pass"], runs, cwd=directory, env=env)
            _time("tenure --help", lambda i: [tenure, "--help"], runs, cwd=directory, env=env)
            _time("tenure ls", lambda i: [tenure, "ls"], runs, cwd=directory, env=env)
            _time("tenure ls --json", lambda i: [tenure, "ls", "--json"], runs, cwd=directory, env=env)
            _time("tenure show ID", lambda i: [tenure, "show", resource], runs, cwd=directory, env=env)
            _time("tenure event ID EVENT", event_args, runs, cwd=directory, env=env)


if __name__ == "__main__":
    main()
