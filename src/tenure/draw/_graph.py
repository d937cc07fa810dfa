"""What every drawing shows of a kind's graph: its edges, with the events between two states together."""

from __future__ import annotations

from tenure.machine import Kind

__all__ = ["edge_labels"]


def edge_labels(kind: Kind) -> dict[tuple[str, str], list[str]]:
    """(source, target) -> event names, so parallel edges collapse into one labelled arrow.

    Guarded events are marked ``" [guarded]"``; the order is the kind's declaration order, so the same
    kind always gives the same drawing.
    """
    labels: dict[tuple[str, str], list[str]] = {}
    for state in kind.states:
        for event, t in kind.transitions_from(state.name).items():
            labels.setdefault((t.source, t.target), []).append(event + (" [guarded]" if t.guard else ""))
    return labels
