"""Drawing a kind as text that Mermaid and Graphviz render."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from tenure.machine.parts import Role

if TYPE_CHECKING:
    from tenure.machine.kind import Kind

__all__ = ["to_dot", "to_mermaid"]

_DOT_STYLE = {
    Role.WORK: 'shape=box, style="rounded,filled", fillcolor="#dbeafe"',
    Role.WAIT: 'shape=box, style="rounded,dashed,filled", fillcolor="#fef3c7"',
    Role.REST: 'shape=box, style="rounded,filled", fillcolor="#dcfce7"',
    Role.FINAL: 'shape=box, style="rounded,bold,filled", fillcolor="#e5e7eb", peripheries=2',
}


_MERMAID_STYLE = {
    Role.WORK: "fill:#dbeafe,stroke:#1d4ed8",
    Role.WAIT: "fill:#fef3c7,stroke:#b45309,stroke-dasharray:4 3",
    Role.REST: "fill:#dcfce7,stroke:#15803d",
    Role.FINAL: "fill:#e5e7eb,stroke:#374151,stroke-width:3px",
}


def _mermaid_id(name: str) -> str:
    # Mermaid identifiers cannot hold '.' or '-'; the readable name goes in the label.
    return "s_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


def _edge_labels(kind: Kind) -> dict[tuple[str, str], list[str]]:
    """(source, target) -> event names, so parallel edges collapse into one labelled arrow."""
    labels: dict[tuple[str, str], list[str]] = {}
    for state in kind.states:
        for event, t in kind.transitions_from(state.name).items():
            labels.setdefault((t.source, t.target), []).append(event + (" [guarded]" if t.guard else ""))
    return labels


def to_mermaid(kind: Kind) -> str:
    """Render ``kind`` as a Mermaid ``stateDiagram-v2``; final states point to ``[*]``."""
    lines = ["stateDiagram-v2", f"    %% kind {kind.name} v{kind.version}"]
    for s in kind.states:
        lines.append(f'    state "{s.name} ({s.code}, {s.role.value})" as {_mermaid_id(s.name)}')
    lines.append(f"    [*] --> {_mermaid_id(kind.initial.name)}")
    for (src, dst), events in _edge_labels(kind).items():
        lines.append(f"    {_mermaid_id(src)} --> {_mermaid_id(dst)}: {', '.join(events)}")
    for s in kind.states:
        if s.role is Role.FINAL:
            lines.append(f"    {_mermaid_id(s.name)} --> [*]")
    for role in Role:
        lines.append(f"    classDef {role.value} {_MERMAID_STYLE[role]}")
    for role in Role:
        members = [_mermaid_id(s.name) for s in kind.states if s.role is role]
        if members:
            lines.append(f"    class {','.join(members)} {role.value}")
    return "\n".join(lines) + "\n"


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(kind: Kind) -> str:
    """Render ``kind`` as a Graphviz digraph, states coloured by role."""
    lines = [f"digraph {_dot_quote(kind.name)} {{", "    rankdir=LR;", '    node [fontname="Helvetica"];']
    lines.append('    __start [shape=point, label=""];')
    for s in kind.states:
        label = f"{s.name}\\n{s.code} · {s.role.value}"
        if s.deadline is not None:
            label += f"\\ndeadline {int(s.deadline.total_seconds())}s → {s.on_deadline}"
        lines.append(f'    {_dot_quote(s.name)} [label="{label}", {_DOT_STYLE[s.role]}];')
    lines.append(f"    __start -> {_dot_quote(kind.initial.name)};")
    for (src, dst), events in _edge_labels(kind).items():
        lines.append(f"    {_dot_quote(src)} -> {_dot_quote(dst)} [label={_dot_quote(', '.join(events))}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
