"""A small mutation run over the invariant code: ``make mutants``.

Each mutation below breaks one invariant with a one-line change (the compare-and-swap on version, the
claim fence, the deadline sweep, the revert order, If-Match, the takeover budget, the idempotency key,
interest expiry) and names the tests that must notice. The run copies the project into a temporary
directory (the files git knows, tracked or not ignored), checks that every target is still in its file
exactly once, runs the named tests once unmutated, then applies the mutations one at a time to the
copy, runs their tests there and puts the file back. The working tree is never written to.

It prints one row per mutation (killed: some test failed; survived: every test passed) and exits
non-zero if any mutation survived, if a target is missing or ambiguous (the code moved: update the
list), or if the tests fail without any mutation.

    python tools/mutants.py                          # everything
    python tools/mutants.py --only cas-version-sqlite --only fence-postgres
    python tools/mutants.py --check                  # only check that every target is found
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SQLITE_SQL = "src/tenure/store/sql/sqlite.sql"
POSTGRES_SQL = "src/tenure/store/sql/postgres.sql"
FLOW_ENGINE = "src/tenure/flow/engine.py"
SERVICE_RESOURCES = "src/tenure/service/resources.py"
STORE_RESOURCES = "src/tenure/store/resources.py"
STORE_MODEL = "src/tenure/store/model.py"
STORE_USES = "src/tenure/store/uses.py"
STORE_SHARING = "src/tenure/store/sharing.py"
STORE_CLAIMS = "src/tenure/store/claims.py"

CLAIMS = "tests/integration/test_claims.py"
USES = "tests/integration/test_uses.py"
SHARING_ENGINE = "tests/integration/engine/test_sharing_engine.py"
CONTRACT = "tests/integration/test_store_contract.py"
RETRIES = "tests/integration/engine/test_worker_retries.py"
SERVICE = "tests/integration/service/test_resources.py"
RESUME = "tests/unit/flow/test_resume.py"
FAILURE = "tests/unit/flow/test_failure.py"

#: Each mutation's tests run with this much time per test at most (a hang fails the test: killed).
TEST_TIMEOUT = 120
#: And the whole pytest run of one mutation with this much (a hang past it counts as killed too).
RUN_TIMEOUT = 900


@dataclass(frozen=True)
class Mutation:
    """One named change: ``target`` (found exactly once in ``path``) becomes ``replacement``."""

    name: str
    path: str
    target: str
    replacement: str
    tests: tuple[str, ...]


def _in(variant: str, *tests: str) -> tuple[str, ...]:
    """The given test nodes, each in one parameter variant (``sqlite``, ``postgres``, ``sqlite-current``...)."""
    return tuple(f"{t}[{variant}]" for t in tests)


MUTATIONS: tuple[Mutation, ...] = (
    # 1. The compare-and-swap on version, in the one write block of each dialect.
    Mutation(
        "cas-version-sqlite",
        SQLITE_SQL,
        "WHERE id = ?14 AND version = ?15 AND",
        "WHERE id = ?14 AND ?15 = ?15 AND",
        _in("sqlite", f"{CONTRACT}::test_a_conflict_for_an_event_allowed_now_but_written_against_an_old_version"),
    ),
    Mutation(
        "cas-version-postgres",
        POSTGRES_SQL,
        "WHERE id = %(id)s AND version = %(expected_version)s AND",
        "WHERE id = %(id)s AND %(expected_version)s = %(expected_version)s AND",
        _in("postgres", f"{CONTRACT}::test_a_conflict_for_an_event_allowed_now_but_written_against_an_old_version"),
    ),
    # 2. The claim fence: a worker writes only while its claim holds.
    Mutation(
        "fence-sqlite",
        SQLITE_SQL,
        "(?17 IS NULL OR claim_token = ?17)",
        "(?17 IS NULL OR ?17 = ?17)",
        _in("sqlite", f"{CLAIMS}::test_fire_claimed_is_refused_after_a_takeover"),
    ),
    Mutation(
        "fence-postgres",
        POSTGRES_SQL,
        "(%(token)s::text IS NULL OR claim_token = %(token)s)",
        "(%(token)s::text IS NULL OR %(token)s = %(token)s)",
        _in("postgres", f"{CLAIMS}::test_fire_claimed_is_refused_after_a_takeover"),
    ),
    # 3. The deadline sweep: a wait whose deadline is exactly now is due.
    Mutation(
        "deadline-due-at-now-sqlite",
        SQLITE_SQL,
        "deadline <= ? AND",
        "deadline < ? AND",
        _in("sqlite", f"{CLAIMS}::test_expired_waits_lists_waits_past_their_deadline_earliest_first"),
    ),
    Mutation(
        "deadline-due-at-now-postgres",
        POSTGRES_SQL,
        "deadline <= %s AND",
        "deadline < %s AND",
        _in("postgres", f"{CLAIMS}::test_expired_waits_lists_waits_past_their_deadline_earliest_first"),
    ),
    # 4. The revert order: a task still marked running first, then the reverse of completion order.
    Mutation(
        "revert-running-first",
        FLOW_ENGINE,
        "key=lambda pair: (pair[0].state is TaskState.RUNNING, pair[0].seq)",
        "key=lambda pair: (False, pair[0].seq)",
        (f"{RESUME}::test_after_a_kill_a_task_still_running_is_reverted_first_then_the_rest_latest_first",),
    ),
    Mutation(
        "revert-latest-first",
        FLOW_ENGINE,
        "key=lambda pair: (pair[0].state is TaskState.RUNNING, pair[0].seq)",
        "key=lambda pair: (pair[0].state is TaskState.RUNNING, -pair[0].seq)",
        (f"{FAILURE}::test_revert_goes_in_reverse_completion_order_and_includes_the_failed_task",),
    ),
    # 5. If-Match compares strongly: a weak validator matches nothing, not even its own version.
    Mutation(
        "if-match-weak-as-strong",
        SERVICE_RESOURCES,
        "return _NEVER if match.group(1) else int(match.group(2))",
        "return int(match.group(2))",
        _in("sqlite-current", f"{SERVICE}::test_a_weak_if_match_never_matches_so_fire_is_412_and_nothing_is_written"),
    ),
    Mutation(
        "if-match-weak-as-star",
        SERVICE_RESOURCES,
        "return _NEVER if match.group(1) else int(match.group(2))",
        "return None if match.group(1) else int(match.group(2))",
        _in("sqlite-stale", f"{SERVICE}::test_a_weak_if_match_never_matches_so_fire_is_412_and_nothing_is_written"),
    ),
    # 6. If-Match with a stale strong version is refused, for events and for desired states.
    Mutation(
        "if-match-stale-event",
        SERVICE_RESOURCES,
        "store.fire(resource_id, body.event, expected_version=pinned,",
        "store.fire(resource_id, body.event, expected_version=None,",
        _in("sqlite", f"{SERVICE}::test_fire_with_a_stale_if_match_is_412_with_the_facts_and_the_current_etag"),
    ),
    Mutation(
        "if-match-stale-desired",
        SERVICE_RESOURCES,
        "resource_id, body.desired_state, expected_version=pinned, actor=caller.client, client=caller.client",
        "resource_id, body.desired_state, expected_version=None, actor=caller.client, client=caller.client",
        _in("sqlite", f"{SERVICE}::test_set_desired_state_with_a_stale_if_match_is_412"),
    ),
    # 7. The takeover budget: taking over a dead holder's claim counts its attempt.
    Mutation(
        "takeover-counts-sqlite",
        SQLITE_SQL,
        "attempts = attempts + ?",
        "attempts = attempts + 0 * ?",
        _in("sqlite", f"{RETRIES}::test_takeovers_count_against_the_retry_budget"),
    ),
    Mutation(
        "takeover-counts-postgres",
        POSTGRES_SQL,
        "CASE WHEN due.takeover THEN 1 ELSE 0 END",
        "CASE WHEN due.takeover THEN 0 ELSE 0 END",
        _in("postgres", f"{RETRIES}::test_takeovers_count_against_the_retry_budget"),
    ),
    # 8. An idempotency key replayed with another spec is refused.
    Mutation(
        "idempotency-spec",
        STORE_RESOURCES,
        "if dict(existing.spec) != dict(wanted.spec):",
        "if False:",
        _in("sqlite", f"{CONTRACT}::test_same_idempotency_key_with_another_spec_is_refused"),
    ),
    # 9. Sharing: an expired use no longer counts; a live one holds the teardown; a step's write is planned
    #    again when only uses changed under it.
    Mutation(
        "use-expiry",
        STORE_MODEL,
        "return self.expires_at > now",
        "return True",
        _in("sqlite", f"{USES}::test_an_expired_use_no_longer_counts_and_registering_again_starts_anew"),
    ),
    Mutation(
        "teardown-event-in-use",
        STORE_USES,
        "raise InUse(resource_id=resource.id, event=event, parties=sorted(live))",
        "return",
        _in("sqlite", f"{USES}::test_the_teardown_event_fired_while_a_use_is_live_is_refused_and_nothing_written"),
    ),
    Mutation(
        "teardown-wish-held",
        STORE_USES,
        "and any(u.expires_at > now for u in resource.in_use_by.values())",
        "and False",
        _in("sqlite", f"{USES}::test_a_teardown_wish_waits_for_live_parties_and_is_not_due"),
    ),
    Mutation(
        "last-release-starts-teardown",
        STORE_SHARING,
        "if sharing is None or not teardown_wished(kind, after) or held(kind, after, now):",
        "if True:",
        _in("sqlite", f"{USES}::test_the_last_release_starts_teardown_in_the_same_write"),
    ),
    Mutation(
        "use-owner",
        STORE_SHARING,
        "if use.client != client and not admin:",
        "if False:",
        _in("sqlite", f"{USES}::test_only_the_registering_client_or_an_admin_may_renew_or_release"),
    ),
    Mutation(
        "rebase-on-uses",
        STORE_CLAIMS,
        "_REBASES = 5",
        "_REBASES = 0",
        _in("sqlite", f"{SHARING_ENGINE}::test_a_use_registered_while_a_step_runs_does_not_cost_the_step_its_work"),
    ),
)


@dataclass(frozen=True)
class Outcome:
    mutation: Mutation
    result: str  # killed, survived, timeout (counts as killed) or error (pytest could not run the tests)
    seconds: float
    failed: tuple[str, ...]
    output: str


# --- the copy ----------------------------------------------------------------------------------------


def project_files(root: Path) -> list[str]:
    """The files to copy: those git knows (tracked, or untracked and not ignored) that exist."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        # Not a git checkout: the package, its tests and the files the tests read.
        names = [str(p.relative_to(root)) for top in ("src", "tests") for p in (root / top).rglob("*") if p.is_file()]
        return sorted(n for n in [*names, "pyproject.toml", "README.md"] if "__pycache__" not in n)
    known = {name for name in listed.decode().split("\0") if name}
    return sorted(n for n in known if (root / n).is_file())


def copy_project(root: Path, into: Path) -> None:
    for name in project_files(root):
        target = into / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target)


def pytest_env(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(copy / "src"), str(copy)])
    env["TENURE_REQUIRE_POSTGRES"] = "1"
    # No bytecode caches: a restored file must never be run from the mutant's cached bytecode.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def check_imports_from(copy: Path) -> str | None:
    """Why the tests would not run against the copy's package (None when they would)."""
    probe = subprocess.run(
        [sys.executable, "-c", "import tenure; print(tenure.__file__)"],
        cwd=copy,
        env=pytest_env(copy),
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"cannot import tenure from the copy:\n{probe.stderr}"
    where = Path(probe.stdout.strip()).resolve()
    if not where.is_relative_to(copy.resolve()):
        return f"tenure is imported from {where}, not from the copy: the mutations would not be tested"
    return None


# --- the mutations ---------------------------------------------------------------------------------


def target_problems(copy: Path, mutations: Iterable[Mutation]) -> list[str]:
    """What is wrong with the list against the code: every target must be found exactly once."""
    problems = []
    for m in mutations:
        if "\n" in m.target or "\n" in m.replacement or m.target == m.replacement or not m.tests:
            problems.append(f"{m.name}: a mutation changes one line into another, and names its tests")
            continue
        file = copy / m.path
        if not file.is_file():
            problems.append(f"{m.name}: {m.path} does not exist")
            continue
        found = file.read_text(encoding="utf-8").count(m.target)
        if found != 1:
            where = "not found" if found == 0 else f"found {found} times"
            problems.append(f"{m.name}: the target {m.target!r} is {where} in {m.path}")
    return problems


def run_pytest(copy: Path, tests: Sequence[str], *, workers: int) -> tuple[int | None, str]:
    """pytest's exit status on the tests in the copy (None if it ran out of time), and its output."""
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", f"--timeout={TEST_TIMEOUT}"]
    if workers > 1:
        command += ["-n", str(workers)]
    try:
        done = subprocess.run(
            [*command, *tests],
            cwd=copy,
            env=pytest_env(copy),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        return None, output
    return done.returncode, done.stdout + done.stderr


def failed_tests(output: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(re.findall(r"^(?:FAILED|ERROR) (\S+)", output, flags=re.MULTILINE)))


def apply_and_test(copy: Path, m: Mutation) -> Outcome:
    file = copy / m.path
    original = file.read_text(encoding="utf-8")
    started = time.monotonic()
    try:
        file.write_text(original.replace(m.target, m.replacement, 1), encoding="utf-8")
        status, output = run_pytest(copy, m.tests, workers=1)
    finally:
        file.write_text(original, encoding="utf-8")
    seconds = time.monotonic() - started
    # pytest exits 1 when a test failed; 0 when all passed; anything else means it could not run them.
    result = {0: "survived", 1: "killed", None: "timeout"}.get(status, "error")
    return Outcome(m, result, seconds, failed_tests(output), output)


# --- the report ------------------------------------------------------------------------------------


def table(outcomes: Sequence[Outcome]) -> str:
    header = ("mutation", "file", "change", "tests", "result", "seconds")
    rows = [
        (
            o.mutation.name,
            o.mutation.path,
            f"`{o.mutation.target}` -> `{o.mutation.replacement}`",
            " ".join(o.mutation.tests),
            o.result,
            f"{o.seconds:.1f}",
        )
        for o in outcomes
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def tail(output: str, lines: int = 40) -> str:
    return "\n".join(output.rstrip().splitlines()[-lines:])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this mutation (repeatable)")
    parser.add_argument("--check", action="store_true", help="only check that every target is found exactly once")
    args = parser.parse_args(argv)

    known = {m.name for m in MUTATIONS}
    unknown = sorted(set(args.only or ()) - known)
    if unknown:
        parser.error(f"unknown mutation(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]

    with tempfile.TemporaryDirectory(prefix="tenure-mutants-") as tmp:
        copy = Path(tmp) / "project"
        copy_project(ROOT, copy)

        problems = target_problems(copy, chosen)
        if problems:
            print("The mutation list no longer matches the code (update tools/mutants.py):", file=sys.stderr)
            for p in problems:
                print(f"  {p}", file=sys.stderr)
            return 2
        if args.check:
            print(f"all {len(chosen)} targets found exactly once")
            return 0

        wrong = check_imports_from(copy)
        if wrong is not None:
            print(wrong, file=sys.stderr)
            return 2

        everything = list(dict.fromkeys(t for m in chosen for t in m.tests))
        print(f"baseline: {len(everything)} test nodes on the unmutated copy", flush=True)
        status, output = run_pytest(copy, everything, workers=2)
        if status != 0:
            print(tail(output), file=sys.stderr)
            print("the tests fail without any mutation: fix them before checking mutations", file=sys.stderr)
            return 2

        outcomes = []
        for m in chosen:
            outcome = apply_and_test(copy, m)
            outcomes.append(outcome)
            print(f"{m.name}: {outcome.result} ({outcome.seconds:.1f}s)", flush=True)

    print()
    print(table(outcomes))
    print()
    for o in outcomes:
        if o.result in ("killed", "timeout"):
            print(f"{o.mutation.name} killed by {', '.join(o.failed) or 'a test that ran out of time'}")
    bad = [o for o in outcomes if o.result in ("survived", "error")]
    for o in bad:
        print(f"\n--- {o.mutation.name}: {o.result}; the end of pytest's output:\n{tail(o.output)}", file=sys.stderr)
    killed = len(outcomes) - len(bad)
    print(f"\n{killed} of {len(outcomes)} mutations killed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
