"""A fake external provisioner, run as its own process by the HTTP provisioner tests (stdlib only).

It listens on 127.0.0.1 (port 0: the system picks one) and prints the port as the first line of its
standard output. Every POST is a provisioning request of :mod:`tenure.engine.http`; what it does is
chosen by the definition's spec: ``spec["<action>_mode"]`` if present (``provision_mode``,
``deprovision_mode``, ``start_mode``), else ``spec["mode"]``, else ``ok``:

* ``ok``: answer 202, call back ``done`` after ``--delay`` seconds;
* ``twice``: like ``ok``, then send the very same callback again (a duplicate);
* ``never``: answer 202 and never call back;
* ``fail``: answer 202, call back ``failed``;
* ``sync``: answer 200 ``{"status": "done", "data": {...}}`` at once, no callback;
* ``error500``: answer 500; ``reject``: answer 400 (the body quotes the token: a careless service);
* ``late``: answer 202 and call back after ``--late-delay`` seconds on the first attempt (past the
  deadline the tests set), like ``ok`` on later ones.

Each request and callback is appended as one JSON object to the log file (``--log`` or the
``FAKE_PROVISIONER_LOG`` environment variable). Tokens are never logged, only a short hash of them.

    python fake_provisioner.py --log /tmp/fake.jsonl [--delay 0.2] [--late-delay 3.5]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODES = ("ok", "twice", "never", "fail", "sync", "error500", "reject", "late")


class Fake:
    """What the server knows: its settings, the log file, and the idempotency keys seen so far."""

    def __init__(self, log_path: str, delay: float, late_delay: float) -> None:
        self.log_path = log_path
        self.delay = delay
        self.late_delay = late_delay
        self.seen: set[str] = set()
        self.lock = threading.Lock()

    def log(self, **entry: Any) -> None:
        entry["at"] = time.time()
        with self.lock, open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")

    def call_back(self, request: dict[str, Any], status: str, data: dict[str, Any], error: str | None) -> None:
        callback = request["callback"]
        body = {"resource_id": request["resource_id"], "token": callback["token"], "key": callback["key"]}
        body.update(status=status, data=data)
        if error is not None:
            body["error"] = error
        post = urllib.request.Request(
            callback["url"], json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(post, timeout=10) as response:
                code, answer = response.status, response.read()
        except urllib.error.HTTPError as exc:
            code, answer = exc.code, exc.read()
        except OSError as exc:
            code, answer = 0, str(exc).encode()
        try:
            receipt = json.loads(answer)
        except ValueError:
            receipt = answer.decode("utf-8", "replace")
        self.log(
            event="callback",
            action=request["action"],
            resource_id=request["resource_id"],
            key=callback["key"],
            attempt=request["attempt"],
            token_sha=_short_hash(callback["token"]),
            status=status,
            http_status=code,
            receipt=receipt,
        )


def _short_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def mode_of(request: dict[str, Any]) -> str:
    spec = request.get("definition", {}).get("spec") or {}
    return str(spec.get(f"{request.get('action')}_mode", spec.get("mode", "ok")))


def make_handler(fake: Fake) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # the JSON-lines log says what happened

        def answer(self, code: int, body: dict[str, Any] | None = None) -> None:
            payload = b"" if body is None else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_POST(self) -> None:
            try:
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                token = request["callback"]["token"]
                resource_id, key, action = request["resource_id"], request["key"], request["action"]
            except (ValueError, KeyError, TypeError) as exc:
                fake.log(event="bad_request", error=repr(exc))
                self.answer(400, {"error": f"bad request: {exc!r}"})
                return
            mode = mode_of(request)
            idem = request.get("idempotency_key")
            with fake.lock:
                repeat = idem in fake.seen
                fake.seen.add(idem)
            data = {"name": f"{resource_id}/{key}", "action": action, "mode": mode}
            code = {"sync": 200, "error500": 500, "reject": 400}.get(mode, 202 if mode in MODES else 400)
            fake.log(
                event="request",
                action=action,
                resource_id=resource_id,
                key=key,
                attempt=request.get("attempt"),
                idempotency_key=idem,
                idempotency_header=self.headers.get("Idempotency-Key"),
                token_sha=_short_hash(token),
                mode=mode,
                repeat=repeat,
                http_status=code,
            )
            if mode == "sync":
                self.answer(200, {"status": "done", "data": data})
            elif mode == "error500":
                self.answer(500, {"error": "the fake provisioner is broken on purpose"})
            elif mode == "reject":
                self.answer(400, {"error": f"definition refused on purpose (token was {token})"})
            elif mode not in MODES:
                self.answer(400, {"error": f"unknown mode {mode!r}"})
            else:
                self.answer(202)
                self.schedule(mode, request, data)

        def schedule(self, mode: str, request: dict[str, Any], data: dict[str, Any]) -> None:
            if mode == "never":
                return
            delay = fake.late_delay if mode == "late" and request.get("attempt") == 1 else fake.delay
            status, error = ("failed", "the fake provisioner failed on purpose") if mode == "fail" else ("done", None)

            def later() -> None:
                fake.call_back(request, status, data, error)
                if mode == "twice":
                    time.sleep(fake.delay / 2)
                    fake.call_back(request, status, data, error)

            timer = threading.Timer(delay, later)
            timer.daemon = True
            timer.start()

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fake external provisioner for the tests.")
    parser.add_argument("--log", default=os.environ.get("FAKE_PROVISIONER_LOG"), help="the JSON-lines log file")
    parser.add_argument("--delay", type=float, default=0.2, help="seconds before a callback")
    parser.add_argument("--late-delay", type=float, default=3.5, help="seconds before a late callback")
    args = parser.parse_args(argv)
    if not args.log:
        parser.error("give the log file with --log or FAKE_PROVISIONER_LOG")
    fake = Fake(args.log, args.delay, args.late_delay)
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(fake))
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    fake.log(event="listening", port=server.server_address[1], pid=os.getpid())
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
