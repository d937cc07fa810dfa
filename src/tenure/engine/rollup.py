"""Rolling the answers to a wait up into what happens to the resource.

Pure functions over a wait and its callbacks, so every rule is testable without a database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tenure.store.inbox import CallbackRow, CallbackStatus, WaitRow

__all__ = ["Decision", "roll_up"]


@dataclass(frozen=True, slots=True)
class Decision:
    """Fire ``event`` (with ``data`` merged and ``error`` recorded), or keep waiting if ``event`` is None."""

    event: str | None
    data: Mapping[str, Any]
    error: str | None
    #: The awaited keys nobody has answered yet.
    missing: tuple[str, ...]

    @property
    def waiting(self) -> bool:
        return self.event is None


def roll_up(wait: WaitRow, callbacks: Sequence[CallbackRow], current: Mapping[str, Any]) -> Decision:
    """What the answers so far mean for a resource waiting on ``wait``.

    Any ``failed`` answer fails the wait at once (no point waiting for the rest). Otherwise the wait
    is decided when every key is answered: ``done`` from all of them fires the done event, and any
    ``retry`` fires the retry event (the failure event when the wait has none). The answers are
    merged into ``current[data_key]`` (a mapping of key to sub-state), so progress on the keys that
    succeeded is kept for a retry.

    >>> from datetime import datetime, UTC
    >>> now = datetime.now(UTC)
    >>> rules = {"done": "ok", "failed": "bad", "data_key": "defs"}
    >>> w = WaitRow("h", "r1", 3, "requested", ("a", "b"), rules, now, None)
    >>> cb = CallbackRow(1, "h", "r1", "a", CallbackStatus.DONE, {"url": "u"}, None, now, None, None)
    >>> roll_up(w, [cb], {}).missing
    ('b',)
    >>> roll_up(w, [cb, CallbackRow(2, "h", "r1", "b", CallbackStatus.DONE, {}, None, now, None, None)], {}).event
    'ok'
    """
    rules = wait.rules
    data_key = str(rules.get("data_key") or "callbacks")
    answers = {cb.key: cb for cb in callbacks if cb.key in wait.keys}
    existing = current.get(data_key)
    merged: dict[str, Any] = dict(existing) if isinstance(existing, Mapping) else {}
    for key, cb in answers.items():
        before = merged.get(key)
        entry = dict(before) if isinstance(before, Mapping) else {}
        entry.update({"status": cb.status.value, "data": dict(cb.data), "error": cb.error})
        merged[key] = entry
    data = {data_key: merged}
    missing = tuple(k for k in wait.keys if k not in answers)
    failed = [cb for cb in answers.values() if cb.status is CallbackStatus.FAILED]
    if failed:
        return Decision(rules["failed"], data, _errors(failed), missing)
    if missing:
        return Decision(None, data, None, missing)
    retry = [cb for cb in answers.values() if cb.status is CallbackStatus.RETRY]
    if retry:
        return Decision(rules.get("retry") or rules["failed"], data, _errors(retry), ())
    return Decision(rules["done"], data, None, ())


def _errors(callbacks: Sequence[CallbackRow]) -> str:
    return "; ".join(f"{cb.key}: {cb.error or cb.status.value}" for cb in callbacks)
