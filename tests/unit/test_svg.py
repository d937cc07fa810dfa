"""Drawing a kind as SVG: checked by parsing the document and measuring what it draws, not by snapshots."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from itertools import combinations
from typing import get_args

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tenure.draw import Direction, to_svg
from tenure.draw._metrics import duration
from tenure.kinds import builtin_kinds
from tenure.kinds.transfer import transfer
from tenure.machine import ANY, Event, Kind, Role, State

NS = {"svg": "http://www.w3.org/2000/svg"}
SVG = "{http://www.w3.org/2000/svg}"
DIRECTIONS: tuple[Direction, ...] = get_args(Direction)


def always(_subject: object) -> bool:
    return True


def sample_kind(description: str = "A sample.") -> Kind:
    """Parallel events, a self-loop, a guard, an edge inside a layer and back edges of several lengths."""
    return Kind(
        "pipe-line.v2",
        version=7,
        initial="new",
        description=description,
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
            Event("restart", "ok", "new"),
            Event("finish", "ok", "done", guard=always),
            Event("fail", ANY, "failed"),
        ],
    )


KINDS = {k.name: k for k in (*builtin_kinds(), sample_kind())}


def expected_edges(kind: Kind) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for s in kind.states:
        for event, t in kind.transitions_from(s.name).items():
            out.setdefault((t.source, t.target), set()).add(event + (" [guarded]" if t.guard else ""))
    return out


def bfs_layers(kind: Kind) -> dict[str, int]:
    depth = {kind.initial.name: 0}
    queue = deque([kind.initial.name])
    while queue:
        name = queue.popleft()
        for event in kind.allowed_events(name):
            target = kind.target(name, event)
            if target not in depth:
                depth[target] = depth[name] + 1
                queue.append(target)
    return depth


@dataclass(frozen=True)
class Box:
    x: float
    y: float
    w: float
    h: float

    def overlaps(self, other: Box) -> bool:
        return (
            self.x < other.x + other.w
            and other.x < self.x + self.w
            and self.y < other.y + other.h
            and other.y < self.y + self.h
        )

    def contains(self, x: float, y: float, inset: float = 0.0) -> bool:
        return self.x + inset < x < self.x + self.w - inset and self.y + inset < y < self.y + self.h - inset

    def on_border(self, x: float, y: float, tol: float = 0.2) -> bool:
        inside = self.x - tol <= x <= self.x + self.w + tol and self.y - tol <= y <= self.y + self.h + tol
        return inside and not self.contains(x, y, inset=tol)

    @property
    def centre(self) -> tuple[float, float]:
        return self.x + self.w / 2, self.y + self.h / 2


def rect_box(el: ET.Element) -> Box:
    return Box(*(float(el.attrib[a]) for a in ("x", "y", "width", "height")))


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def groups(root: ET.Element, cls: str) -> list[ET.Element]:
    return [el for el in root.iter() if cls in el.attrib.get("class", "").split()]


def state_boxes(root: ET.Element) -> dict[str, Box]:
    out = {}
    for g in groups(root, "state"):
        rects = [r for r in g.findall("svg:rect", NS) if r.attrib.get("class") == "box"]
        assert len(rects) == 1, g.attrib
        out[g.attrib["data-state"]] = rect_box(rects[0])
    return out


def path_points(d: str, steps: int = 24) -> list[tuple[float, float]]:
    """Points along an SVG path made of M, L and C commands (absolute), cubics sampled."""
    points: list[tuple[float, float]] = []
    for command, args in re.findall(r"([MLC])([^MLC]*)", d):
        nums = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", args)]
        pairs = list(zip(nums[::2], nums[1::2], strict=True))
        if command in "ML":
            points += pairs
            continue
        (x0, y0), ((x1, y1), (x2, y2), (x3, y3)) = points[-1], pairs
        for k in range(1, steps + 1):
            t = k / steps
            a, b, c, e = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3
            points.append((a * x0 + b * x1 + c * x2 + e * x3, a * y0 + b * y1 + c * y2 + e * y3))
    return points


# --- the document --------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("name", KINDS)
def test_is_a_standalone_svg_document(name: str, direction: Direction) -> None:
    kind = KINDS[name]
    svg = to_svg(kind, direction=direction)
    root = parse(svg)
    width, height = float(root.attrib["width"]), float(root.attrib["height"])
    assert root.attrib["viewBox"] == f"0 0 {root.attrib['width']} {root.attrib['height']}"
    assert 0 < width < 3000
    assert 0 < height < 3000
    title = root.find("svg:title", NS)
    assert title is not None
    assert title.text == f"{kind.name} v{kind.version}"
    # Everything drawn lies inside the document.
    for el in root.iter(f"{SVG}rect"):
        box = rect_box(el) if "x" in el.attrib else Box(0, 0, float(el.attrib["width"]), float(el.attrib["height"]))
        assert box.x >= 0, el.attrib
        assert box.y >= 0, el.attrib
        assert box.x + box.w <= width, el.attrib
        assert box.y + box.h <= height, el.attrib


def test_top_to_bottom_is_the_default_direction() -> None:
    kind = sample_kind()
    assert to_svg(kind) == to_svg(kind, direction="TB")
    assert to_svg(kind, direction="LR") == to_svg(kind, direction="LR")
    assert to_svg(kind) != to_svg(kind, direction="LR")


def test_transfer_diagram_keeps_a_sensible_width() -> None:
    # Its 19 states in 9 layers: top to bottom keeps it about as wide as it is high.
    root = parse(to_svg(transfer))
    width, height = float(root.attrib["width"]), float(root.attrib["height"])
    assert width <= 1600
    assert width < 1.25 * height


# --- states --------------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("name", KINDS)
def test_one_box_per_state_with_name_code_and_role(name: str, direction: Direction) -> None:
    kind = KINDS[name]
    root = parse(to_svg(kind, direction=direction))
    states = groups(root, "state")
    assert [g.attrib["data-state"] for g in states] == [s.name for s in kind.states]
    for g, s in zip(states, kind.states, strict=True):
        assert g.attrib["data-role"] == s.role.value
        assert g.attrib["data-code"] == str(s.code)
        texts = ["".join(t.itertext()) for t in g.findall("svg:text", NS)]
        assert texts[0] == s.name
        assert texts[1].startswith(f"{s.code} · {s.role.value}")
        inner = [r for r in g.findall("svg:rect", NS) if r.attrib.get("class") == "inner"]
        assert len(inner) == (1 if s.role is Role.FINAL else 0), "final states have a doubled border"
        box = next(r for r in g.findall("svg:rect", NS) if r.attrib.get("class") == "box")
        assert ("stroke-dasharray" in box.attrib) == (s.role is Role.WAIT)


def test_roles_are_told_apart_by_fill_and_border() -> None:
    root = parse(to_svg(sample_kind()))
    looks: dict[str, set[tuple[str, str]]] = {}
    for g in groups(root, "state"):
        box = next(r for r in g.findall("svg:rect", NS) if r.attrib.get("class") == "box")
        looks.setdefault(g.attrib["data-role"], set()).add((box.attrib["fill"], box.attrib["stroke"]))
    assert all(len(v) == 1 for v in looks.values()), "one look per role"
    assert len({next(iter(v)) for v in looks.values()}) == len(looks) == len(Role)


def test_wait_states_show_their_deadline() -> None:
    root = parse(to_svg(transfer))
    for g in groups(root, "state"):
        subtitle = "".join(g.findall("svg:text", NS)[1].itertext())
        if g.attrib["data-role"] == "wait":
            assert subtitle.endswith(" · ⏱ 10m"), subtitle
        else:
            assert "⏱" not in subtitle


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(minutes=10), "10m"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(days=1), "1d"),
        (timedelta(days=2, hours=3), "2d3h"),
        (timedelta(seconds=45), "45s"),
        (timedelta(milliseconds=500), "0.5s"),
    ],
)
def test_deadlines_are_short(delta: timedelta, text: str) -> None:
    assert duration(delta) == text


def test_initial_state_is_marked() -> None:
    for direction in DIRECTIONS:
        kind = sample_kind()
        root = parse(to_svg(kind, direction=direction))
        (dot,) = [el for el in groups(root, "start") if el.tag == f"{SVG}circle"]
        (arrow,) = [p for p in groups(root, "edge") if "start" in p.attrib["class"].split()]
        points = path_points(arrow.attrib["d"])
        assert points[0] == (float(dot.attrib["cx"]), float(dot.attrib["cy"]))
        assert state_boxes(root)["new"].on_border(*points[-1])


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("name", KINDS)
def test_layers_follow_bfs_distance_in_declaration_order(name: str, direction: Direction) -> None:
    kind = KINDS[name]
    boxes = state_boxes(parse(to_svg(kind, direction=direction)))
    layers = bfs_layers(kind)
    across = 1 if direction == "TB" else 0  # the axis layers follow
    by_layer: dict[int, list[tuple[float, float]]] = {}
    for s in kind.states:
        centre = boxes[s.name].centre
        by_layer.setdefault(layers[s.name], []).append((centre[across], centre[1 - across]))
    for members in by_layer.values():
        assert max(c for c, _ in members) - min(c for c, _ in members) < 0.2, "one layer, one line"
        along = [a for _, a in members]
        assert along == sorted(along), "declaration order inside a layer"
    lines = [by_layer[d][0][0] for d in sorted(by_layer)]
    assert lines == sorted(lines)
    assert len(set(lines)) == len(lines)


def test_transfer_layers() -> None:
    layers = bfs_layers(transfer)
    assert layers["initial"] == 0
    assert layers["terminating"] == 1, "terminate leaves the initial state"
    assert max(layers.values()) == 8


# --- no overlaps ---------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("name", KINDS)
def test_boxes_and_labels_do_not_overlap(name: str, direction: Direction) -> None:
    root = parse(to_svg(KINDS[name], direction=direction))
    boxes = list(state_boxes(root).items())
    labels = [(f"label {g.attrib['data-source']}->{g.attrib['data-target']}", g) for g in groups(root, "edge-label")]
    things = boxes + [(name, rect_box(g[1])) for name, g in labels]
    for (a, box_a), (b, box_b) in combinations(things, 2):
        assert not box_a.overlaps(box_b), f"{a} overlaps {b}"


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("name", KINDS)
def test_edges_do_not_run_through_boxes(name: str, direction: Direction) -> None:
    root = parse(to_svg(KINDS[name], direction=direction))
    boxes = state_boxes(root)
    for path in groups(root, "edge"):
        for x, y in path_points(path.attrib["d"]):
            for state, box in boxes.items():
                assert not box.contains(x, y, inset=1.0), f"{path.attrib} runs through {state} at {x:.1f},{y:.1f}"


# --- edges ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("name", KINDS)
def test_one_labelled_edge_per_pair_of_states(name: str, direction: Direction) -> None:
    kind = KINDS[name]
    root = parse(to_svg(kind, direction=direction))
    labels: dict[tuple[str, str], set[str]] = {}
    for g in groups(root, "edge-label"):
        key = (g.attrib["data-source"], g.attrib["data-target"])
        assert key not in labels, f"two labels for {key}"
        labels[key] = {"".join(t.itertext()) for t in g.iter(f"{SVG}tspan")}
    assert labels == expected_edges(kind)
    paths = [
        (p.attrib["data-source"], p.attrib["data-target"]) for p in groups(root, "edge") if "data-source" in p.attrib
    ]
    assert sorted(paths) == sorted(expected_edges(kind)), "one path per pair of states"


def test_parallel_events_self_loops_and_guards() -> None:
    root = parse(to_svg(sample_kind()))
    labels = {
        (g.attrib["data-source"], g.attrib["data-target"]): [t.text for t in g.iter(f"{SVG}tspan")]
        for g in groups(root, "edge-label")
    }
    assert labels["new", "run.step-1"] == ["start", "kick"]
    assert labels["ok", "ok"] == ["poke"]
    assert labels["ok", "done"] == ["finish [guarded]"]


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("name", KINDS)
def test_arrows_end_on_their_target_box(name: str, direction: Direction) -> None:
    root = parse(to_svg(KINDS[name], direction=direction))
    boxes = state_boxes(root)
    into: dict[str, int] = {}
    for path in groups(root, "edge"):
        if "data-target" not in path.attrib:
            continue
        points = path_points(path.attrib["d"])
        assert boxes[path.attrib["data-source"]].on_border(*points[0]), path.attrib
        if "marker-end" in path.attrib:
            assert boxes[path.attrib["data-target"]].on_border(*points[-1]), path.attrib
            into[path.attrib["data-target"]] = into.get(path.attrib["data-target"], 0) + 1
    # Every state with an edge into it gets at least one arrowhead (edges into one state may share a trunk).
    assert set(into) == {dst for (_, dst) in expected_edges(KINDS[name])}


def test_back_edges_into_one_state_share_a_trunk() -> None:
    # Twelve states can terminate a transfer; their edges merge before they reach 'terminating'.
    root = parse(to_svg(transfer))
    into = [p for p in groups(root, "edge") if p.attrib.get("data-target") == "terminating"]
    assert len(into) == len(transfer.sources("terminate"))
    arrows = [p for p in into if "marker-end" in p.attrib]
    assert len(arrows) < len(into) / 2


# --- safety and determinism ----------------------------------------------------------------------

HOSTILE = 'x</desc><script>alert("hi")</script> & <![CDATA[ ]]> \x00\x1b end'


def test_text_is_escaped() -> None:
    kind = Kind(
        "evil",
        description=HOSTILE,
        initial="a",
        states=[State("a", 1, description=HOSTILE), State("z", 2, Role.FINAL, description=HOSTILE)],
        events=[Event("go", "a", "z", description=HOSTILE)],
    )
    for direction in DIRECTIONS:
        svg = to_svg(kind, direction=direction)
        assert "<script" not in svg
        assert "\x00" not in svg
        root = parse(svg)
        assert not [el for el in root.iter() if el.tag.endswith("script")]
        cleaned = HOSTILE.replace("\x00", "\ufffd").replace("\x1b", "\ufffd")
        desc = root.find("svg:desc", NS)
        assert desc is not None
        assert desc.text == cleaned
        tips = ["".join(t.itertext()) for t in root.iter(f"{SVG}title")]
        assert any(cleaned in tip for tip in tips[1:]), "state and event descriptions appear in tooltips"


def test_long_descriptions_are_wrapped_and_cut() -> None:
    kind = sample_kind(description="word " * 2000)
    root = parse(to_svg(kind))
    heading = groups(root, "heading")[0]
    lines = ["".join(t.itertext()) for t in heading.findall("svg:text", NS)][1:]
    assert 1 < len(lines) <= 4
    assert lines[-1].endswith("…")
    assert float(root.attrib["width"]) < 1000


@pytest.mark.parametrize("name", KINDS)
def test_deterministic(name: str) -> None:
    kind = KINDS[name]
    assert to_svg(kind) == to_svg(kind)
    if name == "pipe-line.v2":
        assert to_svg(sample_kind()) == to_svg(kind), "a kind declared again draws the same"


def test_deterministic_across_processes() -> None:
    code = (
        "import sys; from tenure.draw import to_svg; from tenure.kinds.transfer import transfer; "
        "sys.stdout.write(to_svg(transfer))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONIOENCODING": "utf-8"},
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout.decode()
        for seed in ("1", "2")
    }
    assert outputs == {to_svg(transfer)}


# --- random kinds --------------------------------------------------------------------------------


@st.composite
def random_kinds(draw: st.DrawFn) -> Kind:
    """Valid kinds of up to 10 states with random edges: self-loops, cycles and an event from ANY state."""
    n = draw(st.integers(min_value=1, max_value=10))
    n_final = draw(st.integers(min_value=0, max_value=n - 1)) if n > 1 else 0
    # Names of different lengths give boxes of different sizes (in LR, ranks wider than some of their boxes).
    names = [f"s{i}" + "_" * draw(st.integers(min_value=0, max_value=24)) for i in range(n)]
    non_final = names[: n - n_final]
    pairs: list[tuple[str, str]] = []
    for i in range(1, n):  # a spanning tree from s0 through non-final parents
        pairs.append((draw(st.sampled_from(non_final[: max(1, min(i, len(non_final)))])), names[i]))
    for src in non_final:
        if not any(a == src for a, _ in pairs):
            pairs.append((src, draw(st.sampled_from(names))))
    pairs += draw(st.lists(st.tuples(st.sampled_from(non_final), st.sampled_from(names)), max_size=12))
    events = [Event(f"e{i}", src, dst, guard=always if i % 5 == 4 else None) for i, (src, dst) in enumerate(pairs)]
    if draw(st.booleans()):
        events.append(Event("abort", ANY, draw(st.sampled_from(names))))
    states = [
        State(name, i, Role.FINAL if name not in non_final else draw(st.sampled_from([Role.WORK, Role.REST])))
        for i, name in enumerate(names)
    ]
    return Kind("random", states=states, events=events, initial=names[0])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_kinds(), st.sampled_from(DIRECTIONS))
def test_random_kinds_draw_cleanly(kind: Kind, direction: Direction) -> None:
    svg = to_svg(kind, direction=direction)
    root = parse(svg)
    boxes = state_boxes(root)
    assert list(boxes) == [s.name for s in kind.states]
    labels = [rect_box(g[1]) for g in groups(root, "edge-label")]
    assert len(labels) == len(expected_edges(kind))
    for a, b in combinations([*boxes.values(), *labels], 2):
        assert not a.overlaps(b)
    for path in groups(root, "edge"):
        points = path_points(path.attrib["d"])
        for x, y in points:
            assert not any(box.contains(x, y, inset=1.0) for box in boxes.values())
        if "marker-end" in path.attrib and "data-target" in path.attrib:
            assert boxes[path.attrib["data-target"]].on_border(*points[-1])
    assert svg == to_svg(kind, direction=direction)
