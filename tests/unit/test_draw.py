"""Drawing a kind as Mermaid and Graphviz text, checked by parsing the lines rather than snapshots."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from tenure.draw import to_dot, to_mermaid
from tenure.kinds.image import image
from tenure.machine import ANY, Event, Kind, Role, State


def always(_subject: object) -> bool:
    return True


@pytest.fixture(scope="module")
def kind() -> Kind:
    return Kind(
        "pipe-line.v2",
        version=7,
        initial="new",
        states=[
            State("new", 10),
            State("run.step-1", 20, Role.WORK),
            State("run_wait", 30, Role.WAIT, deadline=timedelta(minutes=2), on_deadline="expire"),
            State("ok", 40),
            State("done", 90, Role.FINAL),
            State("failed", 99, Role.FINAL),
        ],
        events=[
            Event("start", "new", "run.step-1"),
            Event("kick", "new", "run.step-1"),
            Event("ask", "run.step-1", "run_wait"),
            Event("answer", "run_wait", "ok"),
            Event("expire", "run_wait", "run.step-1"),
            Event("poke", "ok", "ok"),
            Event("finish", "ok", "done", guard=always),
            Event("fail", ANY, "failed"),
        ],
    )


def expected_edges(kind: Kind) -> dict[tuple[str, str], set[str]]:
    """(source, target) -> labels, straight from the compiled graph."""
    out: dict[tuple[str, str], set[str]] = {}
    for s in kind.states:
        for event, t in kind.transitions_from(s.name).items():
            out.setdefault((t.source, t.target), set()).add(event + (" [guarded]" if t.guard else ""))
    return out


# --- Mermaid -------------------------------------------------------------------------------------

MERMAID_STATE = re.compile(r'^ {4}state "(?P<name>\S+) \((?P<code>\d+), (?P<role>\w+)\)" as (?P<id>\S+)$')
MERMAID_EDGE = re.compile(r"^ {4}(?P<src>\S+) --> (?P<dst>\S+): (?P<labels>.+)$")
MERMAID_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class Mermaid:
    header: str
    states: dict[str, tuple[int, str, str]] = field(default_factory=dict)  # name -> (code, role, id)
    starts: list[str] = field(default_factory=list)
    edges: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # ids
    ends: list[str] = field(default_factory=list)
    class_defs: dict[str, str] = field(default_factory=dict)
    classes: dict[str, str] = field(default_factory=dict)  # id -> class
    comments: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)


def parse_mermaid(text: str) -> Mermaid:
    assert text.endswith("\n")
    lines = text.splitlines()
    out = Mermaid(header=lines[0])
    for line in lines[1:]:
        if m := MERMAID_STATE.match(line):
            out.states[m["name"]] = (int(m["code"]), m["role"], m["id"])
            out.ids.append(m["id"])
        elif m := re.match(r"^ {4}\[\*\] --> (\S+)$", line):
            out.starts.append(m[1])
        elif m := re.match(r"^ {4}(\S+) --> \[\*\]$", line):
            out.ends.append(m[1])
        elif m := MERMAID_EDGE.match(line):
            key = (m["src"], m["dst"])
            assert key not in out.edges, f"parallel edges must collapse into one arrow: {line!r}"
            out.edges[key] = set(m["labels"].split(", "))
        elif m := re.match(r"^ {4}classDef (\w+) (.+)$", line):
            out.class_defs[m[1]] = m[2]
        elif m := re.match(r"^ {4}class (\S+) (\w+)$", line):
            for member in m[1].split(","):
                assert member not in out.classes, f"{member} is in two classes"
                out.classes[member] = m[2]
        elif line.startswith("    %%"):
            out.comments.append(line)
        else:
            pytest.fail(f"unexpected Mermaid line {line!r}")
    return out


def test_mermaid_header(kind: Kind) -> None:
    m = parse_mermaid(to_mermaid(kind))
    assert m.header == "stateDiagram-v2"
    assert m.comments == ["    %% kind pipe-line.v2 v7"]


def test_mermaid_has_every_state_with_code_and_role(kind: Kind) -> None:
    m = parse_mermaid(to_mermaid(kind))
    assert set(m.states) == {s.name for s in kind.states}
    for s in kind.states:
        code, role, _ = m.states[s.name]
        assert (code, role) == (s.code, s.role.value)


def test_mermaid_ids_are_valid_identifiers(kind: Kind) -> None:
    m = parse_mermaid(to_mermaid(kind))
    for _, _, ident in m.states.values():
        assert MERMAID_ID.match(ident), ident


def test_mermaid_start_and_end(kind: Kind) -> None:
    m = parse_mermaid(to_mermaid(kind))
    ids = {name: ident for name, (_, _, ident) in m.states.items()}
    assert m.starts == [ids["new"]]
    assert sorted(m.ends) == sorted([ids["done"], ids["failed"]])


def test_mermaid_has_every_edge_with_its_event_labels(kind: Kind) -> None:
    m = parse_mermaid(to_mermaid(kind))
    ids = {name: ident for name, (_, _, ident) in m.states.items()}
    expected = {(ids[src], ids[dst]): labels for (src, dst), labels in expected_edges(kind).items()}
    assert m.edges == expected
    # spot checks: parallel events share one arrow, self-loops are drawn, guards are marked
    assert m.edges[(ids["new"], ids["run.step-1"])] == {"start", "kick"}
    assert m.edges[(ids["ok"], ids["ok"])] == {"poke"}
    assert m.edges[(ids["ok"], ids["done"])] == {"finish [guarded]"}


def test_mermaid_classes_by_role(kind: Kind) -> None:
    m = parse_mermaid(to_mermaid(kind))
    assert set(m.class_defs) == {r.value for r in Role}
    assert all("fill:" in style for style in m.class_defs.values())
    assert "stroke-dasharray" in m.class_defs["wait"]
    for _, role, ident in m.states.values():
        assert m.classes[ident] == role
    assert set(m.classes) == set(m.ids)


def test_mermaid_classes_only_for_used_roles() -> None:
    kind = Kind("tiny", states=[State("a", 1), State("z", 2, Role.FINAL)], events=[Event("e", "a", "z")], initial="a")
    m = parse_mermaid(to_mermaid(kind))
    assert set(m.classes.values()) == {"rest", "final"}


def test_mermaid_ids_are_unique_even_when_names_differ_only_in_punctuation() -> None:
    # 'a.b', 'a-b' and 'a_b' are three valid, distinct state names; they must be three distinct nodes.
    kind = Kind(
        "clash",
        initial="a.b",
        states=[State("a.b", 1), State("a-b", 2), State("a_b", 3, Role.FINAL)],
        events=[Event("x", "a.b", "a-b"), Event("y", "a-b", "a_b")],
    )
    ids = [m["id"] for line in to_mermaid(kind).splitlines() if (m := MERMAID_STATE.match(line))]
    assert len(ids) == 3
    assert len(set(ids)) == 3, f"state ids collide: {ids}"


# --- Graphviz ------------------------------------------------------------------------------------

DOT_NODE = re.compile(r'^ {4}"(?P<name>[^"]+)" \[label="(?P<label>[^"]*)", (?P<attrs>.*)\];$')
DOT_EDGE = re.compile(r'^ {4}"(?P<src>[^"]+)" -> "(?P<dst>[^"]+)" \[label="(?P<labels>[^"]*)"\];$')


@dataclass
class Dot:
    header: str
    nodes: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (label, attrs)
    start_nodes: list[str] = field(default_factory=list)
    start_edges: list[tuple[str, str]] = field(default_factory=list)
    edges: dict[tuple[str, str], set[str]] = field(default_factory=dict)


def _unquote(ident: str) -> str:
    return ident[1:-1] if ident.startswith('"') and ident.endswith('"') else ident


def parse_dot(text: str) -> Dot:
    assert text.endswith("}\n")
    lines = text.splitlines()
    out = Dot(header=lines[0])
    for line in lines[1:-1]:
        if m := DOT_NODE.match(line):
            assert m["name"] not in out.nodes
            out.nodes[m["name"]] = (m["label"], m["attrs"])
        elif m := DOT_EDGE.match(line):
            out.edges[(m["src"], m["dst"])] = set(m["labels"].split(", "))
        elif m := re.match(r"^ {4}(\S+) \[shape=point.*\];$", line):
            out.start_nodes.append(_unquote(m[1]))
        elif m := re.match(r"^ {4}(\S+) -> (\S+);$", line):
            out.start_edges.append((_unquote(m[1]), _unquote(m[2])))
        elif line.strip() in {"rankdir=LR;", 'node [fontname="Helvetica"];'}:
            continue
        else:
            pytest.fail(f"unexpected DOT line {line!r}")
    return out


def test_dot_is_a_digraph(kind: Kind) -> None:
    text = to_dot(kind)
    d = parse_dot(text)
    assert d.header == 'digraph "pipe-line.v2" {'
    assert text.splitlines()[-1] == "}"


def test_dot_has_every_state(kind: Kind) -> None:
    d = parse_dot(to_dot(kind))
    assert set(d.nodes) == {s.name for s in kind.states}
    for s in kind.states:
        label, attrs = d.nodes[s.name]
        assert label.startswith(f"{s.name}\\n{s.code} · {s.role.value}")
        assert "shape=box" in attrs
    assert "peripheries=2" in d.nodes["done"][1]
    assert "dashed" in d.nodes["run_wait"][1]
    assert "deadline 120s → expire" in d.nodes["run_wait"][0]
    assert "deadline" not in d.nodes["ok"][0]


def test_dot_has_start_and_every_edge(kind: Kind) -> None:
    d = parse_dot(to_dot(kind))
    assert len(d.start_nodes) == 1
    assert d.start_edges == [(d.start_nodes[0], "new")]
    assert d.edges == expected_edges(kind)


def test_dot_quoting_escapes_quotes_and_backslashes() -> None:
    from tenure.draw.text import _dot_quote

    assert _dot_quote('say "hi"\\') == '"say \\"hi\\"\\\\"'
    assert _dot_quote("plain") == '"plain"'


def test_dot_start_node_does_not_collide_with_a_state() -> None:
    # '__start' is a valid state name; it must not be merged with the synthetic start point.
    kind = Kind(
        "k",
        initial="__start",
        states=[State("__start", 1), State("z", 2, Role.FINAL)],
        events=[Event("go", "__start", "z")],
    )
    d = parse_dot(to_dot(kind))
    assert d.start_nodes
    assert d.start_nodes[0] not in d.nodes, "the start point and state '__start' are the same DOT node"


def test_image_kind_draws_every_state() -> None:
    m = parse_mermaid(to_mermaid(image))
    d = parse_dot(to_dot(image))
    names = {s.name for s in image.states}
    assert set(m.states) == names
    assert set(d.nodes) == names
    assert d.edges == expected_edges(image)


def test_package_functions_are_the_text_module_functions(kind: Kind) -> None:
    from tenure.draw import text

    assert to_mermaid is text.to_mermaid
    assert to_dot is text.to_dot
    # Drawing only reads the kind: the same kind gives the same text every time.
    assert to_mermaid(kind) == text.to_mermaid(kind)
    assert to_dot(kind) == text.to_dot(kind)


DOT_BINARY = shutil.which("dot")

if DOT_BINARY is not None:  # Graphviz is optional; the render check exists only where it is installed.

    @pytest.mark.parametrize("which", ["sample", "image"])
    def test_dot_renders_with_graphviz(kind: Kind, which: str) -> None:
        source = to_dot(kind) if which == "sample" else to_dot(image)
        assert DOT_BINARY is not None
        result = subprocess.run(
            [DOT_BINARY, "-Tsvg"], input=source.encode(), capture_output=True, timeout=20, check=False
        )
        assert result.returncode == 0, result.stderr.decode()
        assert b"<svg" in result.stdout


def _edges_by_name(kind: Kind) -> Mapping[str, set[str]]:
    out: dict[str, set[str]] = {}
    for (src, dst), labels in expected_edges(kind).items():
        out.setdefault(src, set()).update(f"{label}->{dst}" for label in labels)
    return out


def test_expected_edges_helper_covers_every_transition(kind: Kind) -> None:
    # Guard against a helper that silently drops edges: it must account for every (state, event).
    total = sum(len(kind.allowed_events(s.name)) for s in kind.states)
    assert sum(len(v) for v in _edges_by_name(kind).values()) == total
