"""Rolling the answers to a wait up into the event to fire (a pure function: no database)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tenure.engine.rollup import Decision, roll_up
from tenure.store.inbox import CallbackRow, CallbackStatus, WaitRow

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
RULES: Mapping[str, Any] = {"done": "ready", "failed": "broken", "retry": "again", "data_key": "defs"}
DONE, FAILED, RETRY = CallbackStatus.DONE, CallbackStatus.FAILED, CallbackStatus.RETRY


def wait_on(*keys: str, rules: Mapping[str, Any] = RULES) -> WaitRow:
    return WaitRow("hash", "r1", 4, "requested", keys, rules, NOW, None)


_seq = iter(range(1, 10**9))


def cb(
    key: str, status: CallbackStatus, data: Mapping[str, Any] | None = None, error: str | None = None
) -> CallbackRow:
    return CallbackRow(next(_seq), "hash", "r1", key, status, data or {}, error, NOW, None, None)


def entry(status: CallbackStatus, data: Mapping[str, Any] | None = None, error: str | None = None) -> dict[str, Any]:
    return {"status": status.value, "data": dict(data or {}), "error": error}


def test_no_answer_yet_keeps_waiting_for_every_key() -> None:
    d = roll_up(wait_on("a", "b"), [], {})
    assert d == Decision(None, {"defs": {}}, None, ("a", "b"))
    assert d.waiting


def test_missing_keys_keep_waiting_and_name_what_is_missing_in_wait_order() -> None:
    d = roll_up(wait_on("a", "b", "c"), [cb("b", DONE, {"url": "u"})], {})
    assert d.waiting
    assert d.event is None
    assert d.error is None
    assert d.missing == ("a", "c")
    assert d.data == {"defs": {"b": entry(DONE, {"url": "u"})}}


def test_all_done_fires_done_with_every_answer_under_the_data_key() -> None:
    d = roll_up(wait_on("a", "b"), [cb("a", DONE, {"x": 1}), cb("b", DONE, {"y": [1, 2]})], {})
    assert not d.waiting
    assert (d.event, d.error, d.missing) == ("ready", None, ())
    assert d.data == {"defs": {"a": entry(DONE, {"x": 1}), "b": entry(DONE, {"y": [1, 2]})}}


def test_any_failed_answer_fails_at_once_even_with_keys_missing() -> None:
    d = roll_up(wait_on("a", "b", "c"), [cb("a", DONE), cb("b", FAILED, error="quota exhausted")], {})
    assert d.event == "broken"
    assert d.error == "b: quota exhausted"
    assert d.missing == ("c",)
    assert d.data == {"defs": {"a": entry(DONE), "b": entry(FAILED, error="quota exhausted")}}


def test_failed_beats_retry() -> None:
    d = roll_up(wait_on("a", "b"), [cb("a", RETRY, error="busy"), cb("b", FAILED)], {})
    assert d.event == "broken"
    assert d.error == "b: failed"  # no error text: the status stands in for it


def test_every_failure_is_named_in_the_error() -> None:
    d = roll_up(wait_on("a", "b"), [cb("a", FAILED, error="x"), cb("b", FAILED, error="y")], {})
    assert d.error == "a: x; b: y"


def test_retry_waits_until_every_key_is_answered() -> None:
    d = roll_up(wait_on("a", "b"), [cb("a", RETRY, error="busy")], {})
    assert d.waiting
    assert d.missing == ("b",)


def test_retry_fires_the_retry_event_once_all_are_answered() -> None:
    d = roll_up(wait_on("a", "b"), [cb("a", RETRY, error="busy"), cb("b", DONE, {"id": 7})], {})
    assert (d.event, d.error, d.missing) == ("again", "a: busy", ())
    assert d.data == {"defs": {"a": entry(RETRY, error="busy"), "b": entry(DONE, {"id": 7})}}


@pytest.mark.parametrize("no_retry", [{"retry": None}, {}])
def test_retry_without_a_retry_event_fires_the_failure_event(no_retry: dict[str, Any]) -> None:
    rules = {"done": "ready", "failed": "broken", "data_key": "defs", **no_retry}
    d = roll_up(wait_on("a", rules=rules), [cb("a", RETRY)], {})
    assert (d.event, d.error) == ("broken", "a: retry")


def test_answers_to_keys_not_awaited_are_ignored() -> None:
    d = roll_up(wait_on("a"), [cb("zzz", FAILED, error="not mine"), cb("a", DONE, {"k": "v"})], {})
    assert (d.event, d.error, d.missing) == ("ready", None, ())
    assert d.data == {"defs": {"a": entry(DONE, {"k": "v"})}}


def test_only_unawaited_answers_keep_waiting() -> None:
    d = roll_up(wait_on("a"), [cb("b", DONE), cb("c", RETRY)], {})
    assert d.waiting
    assert d.missing == ("a",)
    assert d.data == {"defs": {}}


def test_existing_sub_state_fields_are_kept_and_answers_overwrite_theirs() -> None:
    current: dict[str, Any] = {
        "defs": {
            "a": {"status": "retry", "data": {"old": True}, "error": "busy", "attempts": 2, "region": "eu"},
            "b": {"status": "done", "data": {"id": 1}, "error": None, "region": "us"},
        },
        "other": "untouched",
    }
    d = roll_up(wait_on("a"), [cb("a", DONE, {"new": 1})], current)
    assert d.event == "ready"
    assert d.data == {
        "defs": {
            "a": {"status": "done", "data": {"new": 1}, "error": None, "attempts": 2, "region": "eu"},
            # a key not awaited this time keeps its progress from an earlier attempt
            "b": {"status": "done", "data": {"id": 1}, "error": None, "region": "us"},
        }
    }
    assert "other" not in d.data  # only the data key is returned; the store merges it in
    assert current["defs"]["a"]["status"] == "retry", "the current data must not be mutated"


@pytest.mark.parametrize("junk", [None, "text", 3, ["a"]])
def test_a_data_key_holding_no_mapping_is_replaced(junk: Any) -> None:
    d = roll_up(wait_on("a"), [cb("a", DONE)], {"defs": junk})
    assert d.data == {"defs": {"a": entry(DONE)}}


def test_a_sub_state_holding_no_mapping_is_replaced() -> None:
    d = roll_up(wait_on("a"), [cb("a", DONE)], {"defs": {"a": "garbage"}})
    assert d.data == {"defs": {"a": entry(DONE)}}


@pytest.mark.parametrize("rules_key", [{}, {"data_key": None}, {"data_key": ""}])
def test_the_default_data_key_is_callbacks(rules_key: dict[str, Any]) -> None:
    rules = {"done": "ready", "failed": "broken", **rules_key}
    d = roll_up(wait_on("a", rules=rules), [cb("a", DONE)], {})
    assert d.data == {"callbacks": {"a": entry(DONE)}}


def test_the_answers_data_is_copied() -> None:
    payload = {"x": 1}
    d = roll_up(wait_on("a"), [cb("a", DONE, payload)], {})
    d.data["defs"]["a"]["data"]["x"] = 2
    assert payload == {"x": 1}


# --- the rules as a property ---------------------------------------------------------------------

KEYS = ("a", "b", "c", "d")
STATUSES = st.sampled_from(list(CallbackStatus))


@given(
    awaited=st.lists(st.sampled_from(KEYS), min_size=1, max_size=4, unique=True),
    answers=st.dictionaries(st.sampled_from((*KEYS, "x", "y")), STATUSES, max_size=6),
    has_retry=st.booleans(),
)
def test_the_decision_follows_the_rules(
    awaited: Sequence[str], answers: Mapping[str, CallbackStatus], has_retry: bool
) -> None:
    rules = {"done": "ready", "failed": "broken", "retry": "again" if has_retry else None, "data_key": "defs"}
    rows = [cb(k, s, {"k": k}, None if s is DONE else f"{k} said {s.value}") for k, s in answers.items()]
    d = roll_up(wait_on(*awaited, rules=rules), rows, {})
    mine = {k: s for k, s in answers.items() if k in awaited}
    missing = tuple(k for k in awaited if k not in mine)
    assert d.missing == missing
    assert set(d.data["defs"]) == set(mine)
    if FAILED in mine.values():
        expected: str | None = "broken"
    elif missing:
        expected = None
    elif RETRY in mine.values():
        expected = "again" if has_retry else "broken"
    else:
        expected = "ready"
    assert d.event == expected
    if expected in (None, "ready"):
        assert d.error is None
    else:
        named = {part.split(": ")[0] for part in (d.error or "").split("; ")}
        culprits = FAILED if FAILED in mine.values() else RETRY
        assert named == {k for k, s in mine.items() if s is culprits}
