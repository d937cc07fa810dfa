"""Notifications: where the flows send them, and the task that reports a failed flow."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from tenure.flow import Failure, Task, TaskContext

__all__ = ["Notification", "Notifier", "NotifyFailure"]


@dataclass(frozen=True, slots=True)
class Notification:
    """One notification: an event type (``volume.create.end``, ...) and a JSON-ready payload."""

    event_type: str
    payload: Mapping[str, Any]


class Notifier(Protocol):
    """Where the flows send notifications (a message bus in Cinder)."""

    def notify(self, event_type: str, payload: Mapping[str, Any]) -> None: ...


class NotifyFailure(Task):
    """Change status & notify, run only when the flow failed (the step's failure event changes status)."""

    on_failure_only = True

    def __init__(self, notifier: Notifier, event_type: str, *, name: str) -> None:
        super().__init__(name)
        self.notifier = notifier
        self.event_type = event_type

    def execute(self, resource_id: str, flow_failures: Mapping[str, Failure], context: TaskContext) -> None:
        self.notifier.notify(
            self.event_type,
            {
                "volume_id": resource_id,
                "reason": _failures_text(flow_failures),
                "message_id": context.idempotency_key,
            },
        )


def _failures_text(flow_failures: Mapping[str, Failure]) -> str:
    return "; ".join(f"{name}: {failure}" for name, failure in flow_failures.items()) or "unknown failure"
