"""Drawing a kind as text that Mermaid and Graphviz render."""

from __future__ import annotations

from tenure.draw._graph import edge_labels
from tenure.machine import Kind, Role

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


def _mermaid_ids(kind: Kind) -> dict[str, str]:
    # Mermaid identifiers cannot hold '.' or '-', so states are numbered; the name goes in the label.
    return {s.name: f"s{i}" for i, s in enumerate(kind.states)}


def to_mermaid(kind: Kind) -> str:
    """Render ``kind`` as a Mermaid ``stateDiagram-v2``; final states point to ``[*]``."""
    ids = _mermaid_ids(kind)
    lines = ["stateDiagram-v2", f"    %% kind {kind.name} v{kind.version}"]
    for s in kind.states:
        note = ", deprecated" if s.deprecated else ""
        lines.append(f'    state "{s.name} ({s.code}, {s.role.value}{note})" as {ids[s.name]}')
    lines.append(f"    [*] --> {ids[kind.initial.name]}")
    for (src, dst), events in edge_labels(kind).items():
        lines.append(f"    {ids[src]} --> {ids[dst]}: {', '.join(events)}")
    for s in kind.states:
        if s.role is Role.FINAL:
            lines.append(f"    {ids[s.name]} --> [*]")
    for role in Role:
        lines.append(f"    classDef {role.value} {_MERMAID_STYLE[role]}")
    for role in Role:
        members = [ids[s.name] for s in kind.states if s.role is role]
        if members:
            lines.append(f"    class {','.join(members)} {role.value}")
    return "\n".join(lines) + "\n"


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(kind: Kind) -> str:
    """Render ``kind`` as a Graphviz digraph, states coloured by role."""
    lines = [f"digraph {_dot_quote(kind.name)} {{", "    rankdir=LR;", '    node [fontname="Helvetica"];']
    # '@' cannot start a state name, so the start point never merges with a state.
    lines.append('    "@start" [shape=point, label=""];')
    for s in kind.states:
        label = f"{s.name}\\n{s.code} · {s.role.value}" + (" · deprecated" if s.deprecated else "")
        if s.deadline is not None:
            label += f"\\ndeadline {int(s.deadline.total_seconds())}s → {s.on_deadline}"
        lines.append(f'    {_dot_quote(s.name)} [label="{label}", {_DOT_STYLE[s.role]}];')
    lines.append(f'    "@start" -> {_dot_quote(kind.initial.name)};')
    for (src, dst), events in edge_labels(kind).items():
        lines.append(f"    {_dot_quote(src)} -> {_dot_quote(dst)} [label={_dot_quote(', '.join(events))}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
