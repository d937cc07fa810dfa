"""Drawing a kind as a standalone SVG document, laid out here in pure Python (no Graphviz, no I/O).

The layout is a small layered (Sugiyama-style) drawing:

* states go in layers by their shortest distance from the initial state, in declaration order inside
  a layer; layers run top to bottom (``"TB"``) or left to right (``"LR"``);
* between two layers of states lies a rank of edge labels, and every edge is a chain of nodes through
  the ranks it crosses: its label in the rank next to its source, thin lanes in the others. Lanes and
  labels take up room in their rank like boxes do, so an edge only runs through space kept for it and
  through the empty gaps between ranks, never through a box. Back edges therefore leave a box on the
  side facing the earlier layers and climb in lanes beside the boxes they pass; edges into one state
  share their lanes, so many back edges into it (``terminate`` from everywhere) make one trunk;
* the order of labels and lanes in a rank is chosen to cross few edges, then every node is moved
  towards its neighbours as far as the order and the spacing allow, which keeps chains straight.

Every step is deterministic, so the same kind always gives byte-identical SVG.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import pairwise
from typing import TYPE_CHECKING, Literal

from tenure.machine.draw import _edge_labels
from tenure.machine.parts import Role, State
from tenure.machine.validation import expand_sources

if TYPE_CHECKING:
    from tenure.machine.kind import Kind

__all__ = ["Direction", "to_svg"]

#: Which way the layers of states run.
Direction = Literal["TB", "LR"]

_FONT = "Helvetica, Arial, sans-serif"
# Advance widths of ' '..'~' in DejaVu Sans, in hundredths of an em. It is wider than Helvetica and
# Arial, so text measured with it fits whichever of them the viewer has.
# fmt: off
_WIDTHS = (
    32, 40, 46, 84, 64, 95, 78, 27, 39, 39, 50, 84, 32, 36, 32, 34, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 34, 34,
    84, 84, 84, 53, 100, 68, 69, 70, 77, 63, 58, 77, 75, 29, 29, 66, 56, 86, 75, 79, 60, 79, 69, 63, 61, 73, 68, 99,
    69, 61, 69, 39, 34, 39, 84, 50, 50, 61, 63, 55, 63, 62, 35, 63, 63, 28, 28, 58, 28, 97, 63, 61, 63, 63, 41, 52,
    39, 63, 59, 82, 59, 59, 52, 64, 34, 64, 84,
)
# fmt: on
_BOLD = 1.14  # DejaVu Sans Bold is this much wider on average

_NAME_SIZE = 13.0
_SMALL_SIZE = 11.0
_LINE = 13.0  # line height of edge labels
_BOX_PAD = 12.0
_BOX_H = 44.0
_BOX_MIN_W = 96.0
_LANE = 6.0  # room an edge needs where it passes a rank
_SEP_BOX = 28.0  # between a box and its neighbour in a rank
_SEP_LANE = 10.0  # between two lanes or labels
_GAP_MIN = 18.0  # between ranks
_GAP_MAX = 70.0
_LOOP = 34.0  # how far a self-loop's control points stand out of its box
_MARGIN = 20.0
_EDGE = "#475569"

# fill, stroke, dash pattern
_ROLE_STYLE: dict[Role, tuple[str, str, str]] = {
    Role.WORK: ("#dbeafe", "#1d4ed8", ""),
    Role.WAIT: ("#fef3c7", "#b45309", "5 3"),
    Role.REST: ("#dcfce7", "#15803d", ""),
    Role.FINAL: ("#e5e7eb", "#374151", ""),
}

# Characters XML 1.0 cannot hold at all, not even as character references.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _esc(text: str) -> str:
    """``text`` made safe for XML character data and double-quoted attribute values."""
    text = _NOT_XML.sub("\ufffd", text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _num(x: float) -> str:
    out = f"{x:.1f}".removesuffix(".0")
    return "0" if out == "-0" else out


def _text_width(text: str, size: float, *, bold: bool = False) -> float:
    em = sum(_WIDTHS[o - 32] if 32 <= (o := ord(c)) < 127 else 100 for c in text) / 100
    return em * size * (_BOLD if bold else 1.0)


def _duration(d: timedelta) -> str:
    """``d`` the short way round: 10m, 1h30m, 2d, 45s, 0.5s."""
    seconds = d.total_seconds()
    if seconds < 60 and seconds != int(seconds):
        return f"{seconds:g}s"
    rest = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts) or "0s"


def _wrap(text: str, width: float, size: float, max_lines: int) -> list[str]:
    """``text`` in lines at most ``width`` wide (by words), cut to ``max_lines`` with an ellipsis."""
    lines: list[str] = []
    for word in text.split():
        if lines and _text_width(f"{lines[-1]} {word}", size) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        elif len(lines) == max_lines:
            lines[-1] += " …"
            break
        else:
            lines.append(word)
    return [_fit(line, width, size) for line in lines]


def _fit(text: str, width: float, size: float) -> str:
    """``text``, cut short with an ellipsis if it is wider than ``width`` (a word longer than a line)."""
    if _text_width(text, size) <= width:
        return text
    keep, over = 0, len(text)  # the longest prefix that fits is at least keep and less than over
    while over - keep > 1:
        mid = (keep + over) // 2
        keep, over = (mid, over) if _text_width(text[:mid] + "…", size) <= width else (keep, mid)
    return text[:keep] + "…"


@dataclass(eq=False)
class _Group:
    """One drawn edge: every event between one pair of states."""

    source: str
    target: str
    lines: list[str]
    tip: str
    width: float = field(init=False)
    height: float = field(init=False)

    def __post_init__(self) -> None:
        self.width = max(_text_width(line, _SMALL_SIZE) for line in self.lines) + 8
        self.height = len(self.lines) * _LINE + 4


@dataclass(eq=False)
class _Node:
    """Something that takes room in a rank: a state's box, an edge label, an edge's lane or the start dot."""

    seq: int
    rank: int
    what: Literal["state", "label", "lane", "start"]
    before: float  # room along the rank before the anchor (left in TB, above in LR)
    after: float
    thick: float  # room across the rank
    state: State | None = None
    group: _Group | None = None
    box: tuple[float, float] = (0.0, 0.0)  # the drawn box's width and height
    up: list[_Node] = field(default_factory=list)  # neighbours in the rank before
    down: list[_Node] = field(default_factory=list)  # neighbours in the rank after
    pos: float = 0.0


@dataclass(eq=False)
class _Route:
    group: _Group | None  # None for the arrow from the start dot
    nodes: list[_Node]


def _layers(kind: Kind) -> dict[str, int]:
    """state -> shortest distance from the initial state (unreachable states, if any, go last)."""
    depth = {kind.initial.name: 0}
    queue = deque([kind.initial.name])
    while queue:
        name = queue.popleft()
        for t in kind.transitions_from(name).values():
            if t.target not in depth:
                depth[t.target] = depth[name] + 1
                queue.append(t.target)
    last = max(depth.values()) + 1
    return {s.name: depth.get(s.name, last) for s in kind.states}


def _groups(kind: Kind) -> list[_Group]:
    notes: dict[tuple[str, str], str] = {}
    for e in kind.events:
        if e.description:
            for src in expand_sources(e, kind.states):
                notes.setdefault((src, e.name), e.description)
    out = []
    for (src, dst), labels in _edge_labels(kind).items():
        tip = [f"{src} → {dst}"]
        for label in labels:
            note = notes.get((src, label.removesuffix(" [guarded]")))
            tip.append(f"{label}: {note}" if note else label)
        out.append(_Group(src, dst, labels, "\n".join(tip)))
    return out


class _Layout:
    """Where everything goes, in (along, across) coordinates: along a rank, and across the ranks."""

    def __init__(self, kind: Kind, direction: Direction) -> None:
        self.tb = direction == "TB"
        self.layer = _layers(kind)
        self.ranks: list[list[_Node]] = [[] for _ in range(2 * max(self.layer.values()) + 2)]
        self.routes: list[_Route] = []
        self.loops: dict[str, _Group] = {}
        self._seq = 0
        self._lanes: dict[tuple[str, int], _Node] = {}
        groups = _groups(kind)
        for g in groups:
            if g.source == g.target:
                self.loops[g.source] = g
        self.initial = kind.initial.name
        self.boxes = {s.name: self._state_node(s) for s in kind.states}
        self.start = self._node(0, "start", 5, 5, 10)
        self._chain(None, [self.start, self.boxes[kind.initial.name]])
        for g in groups:
            if g.source != g.target:
                self._route(g)
        self._order()
        self._place()
        self.ports = self._ports()
        self.centres = self._centres()

    # --- nodes and chains ----------------------------------------------------------------------

    def room(self, w: float, h: float) -> tuple[float, float]:
        """(room along a rank, room across it) of something ``w`` wide and ``h`` high."""
        return (w, h) if self.tb else (h, w)

    def _node(self, rank: int, what: Literal["state", "label", "lane", "start"], *room: float) -> _Node:
        before, after, thick = room
        node = _Node(self._seq, rank, what, before, after, thick)
        self._seq += 1
        self.ranks[rank].append(node)
        return node

    def _state_node(self, s: State) -> _Node:
        w = max(_text_width(s.name, _NAME_SIZE, bold=True), _text_width(_subtitle(s), _SMALL_SIZE)) + 2 * _BOX_PAD
        w = max(_BOX_MIN_W, w)
        along, thick = self.room(w, _BOX_H)
        after = along / 2
        if (loop := self.loops.get(s.name)) is not None:
            label_along, label_thick = self.room(loop.width, loop.height)
            after += 0.75 * _LOOP + 6 + label_along
            thick = max(thick, label_thick)
        node = self._node(2 * self.layer[s.name] + 1, "state", along / 2, after, thick)
        node.state, node.box = s, (w, _BOX_H)
        return node

    def _route(self, g: _Group) -> None:
        u, v = self.boxes[g.source], self.boxes[g.target]
        label_along, label_thick = self.room(g.width, g.height)
        label = self._node(
            u.rank - 1 if u.rank >= v.rank else u.rank + 1, "label", *(label_along / 2,) * 2, label_thick
        )
        label.group = g
        chain = [u, label]
        step = 1 if v.rank > u.rank else -1
        for rank in range(label.rank + step, v.rank, step):
            # Edges into one state share their lanes (one trunk instead of a bundle of parallel lines).
            lane = self._lanes.get((g.target, rank))
            if lane is None:
                lane = self._lanes[g.target, rank] = self._node(rank, "lane", _LANE / 2, _LANE / 2, 0)
            chain.append(lane)
        self._chain(g, [*chain, v])

    def _chain(self, g: _Group | None, nodes: list[_Node]) -> None:
        for a, b in pairwise(nodes):
            for x, y in ((a, b), (b, a)):
                near = x.down if y.rank > x.rank else x.up
                if y not in near:
                    near.append(y)
        self.routes.append(_Route(g, nodes))

    # --- order inside each rank ----------------------------------------------------------------

    def _order(self) -> None:
        """Labels and lanes go where they cross fewest edges; states keep their declaration order."""
        best = [list(r) for r in self.ranks]
        fewest = self._crossings()
        for sweep in range(8):
            down = sweep % 2 == 0
            indices = range(1, len(self.ranks)) if down else range(len(self.ranks) - 2, -1, -1)
            for r in indices:
                self._reorder(r, r - 1 if down else r + 1)
            if (crossings := self._crossings()) < fewest:
                best, fewest = [list(r) for r in self.ranks], crossings
        self.ranks = best

    def _reorder(self, r: int, ref: int) -> None:
        """Sort rank ``r`` by the mean position of each node's neighbours in rank ``ref`` (states stay put)."""
        rank, other = self.ranks[r], self.ranks[ref]
        where = {n.seq: i for i, n in enumerate(other)}
        scale = len(other) / len(rank) if rank else 1.0
        bary: dict[int, float] = {}
        for i, n in enumerate(rank):
            near = n.up if ref < r else n.down
            if near:
                bary[n.seq] = sum(where[m.seq] for m in near) / len(near)
            else:
                bary[n.seq] = (i + 0.5) * scale - 0.5
        fixed = [n for n in rank if n.what in ("state", "start")]
        free = sorted((n for n in rank if n.what not in ("state", "start")), key=lambda n: (bary[n.seq], n.seq))
        merged: list[_Node] = []
        while fixed and free:
            merged.append(free.pop(0) if bary[free[0].seq] < bary[fixed[0].seq] else fixed.pop(0))
        self.ranks[r] = merged + fixed + free

    def _crossings(self) -> int:
        count = 0
        for upper, lower in pairwise(self.ranks):
            where = {n.seq: i for i, n in enumerate(lower)}
            pairs = sorted((i, where[m.seq]) for i, n in enumerate(upper) for m in n.down)
            count += sum(1 for k, (a, b) in enumerate(pairs) for c, d in pairs[k + 1 :] if c > a and d < b)
        return count

    # --- positions along each rank -------------------------------------------------------------

    def _place(self) -> None:
        for rank in self.ranks:
            x = 0.0
            for i, n in enumerate(rank):
                x += n.before
                n.pos = x
                x += n.after + (self._sep(n, rank[i + 1]) if i + 1 < len(rank) else 0)
        # A rough placement first: each rank in turn moves towards the one before it, down and back up.
        for _ in range(12):
            for rank in self.ranks[1:]:
                _align(rank, lambda n: n.up, self._sep)
            for rank in reversed(self.ranks[:-1]):
                _align(rank, lambda n: n.down, self._sep)
        trunks: dict[str, list[_Node]] = {}
        for (target, _), lane in self._lanes.items():
            trunks.setdefault(target, []).append(lane)
        # Then each trunk moves as one straight line towards what it connects, and the other nodes of
        # every rank make way for it and move towards their own neighbours.
        for _ in range(40):
            for lanes in trunks.values():
                near = [m.pos for n in lanes for m in n.up + n.down if m.what != "lane"]
                if near:
                    x = sum(near) / len(near)
                    for n in lanes:
                        n.pos = x
            for rank in self.ranks:
                _align(rank, lambda n: n.up + n.down, self._sep, pinned=True)
        # Nothing else shares rank 0 (the initial state is alone in its layer), so the dot can sit right over it.
        self.start.pos = self.boxes[self.initial].pos
        left = min(n.pos - n.before for rank in self.ranks for n in rank)
        for rank in self.ranks:
            for n in rank:
                n.pos -= left

    @staticmethod
    def _sep(a: _Node, b: _Node) -> float:
        return _SEP_BOX if "state" in (a.what, b.what) else _SEP_LANE

    def _ports(self) -> dict[tuple[int, int], float]:
        """(route, 0 for its source or 1 for its target) -> where along the box side it attaches.

        Edges leaving one side of a box are spread over it in the order of the nodes they go to,
        so that they do not cross where they meet the box.
        """
        sides: dict[tuple[int, int], dict[int, list[tuple[int, int]]]] = {}
        nodes = {n.seq: n for rank in self.ranks for n in rank}
        for i, route in enumerate(self.routes):
            for end, (node, near) in enumerate(((route.nodes[0], route.nodes[1]), (route.nodes[-1], route.nodes[-2]))):
                # Edges that reach the box through one node (a shared lane) share their port too.
                sides.setdefault((node.seq, near.rank - node.rank), {}).setdefault(near.seq, []).append((i, end))
        ports: dict[tuple[int, int], float] = {}
        for (seq, _), by_near in sides.items():
            node = nodes[seq]
            span = 0.8 * self.room(*node.box)[0]
            order = sorted(by_near, key=lambda k: (nodes[k].pos, k))
            for k, near_seq in enumerate(order):
                for key in by_near[near_seq]:
                    ports[key] = node.pos - span / 2 + span * (k + 0.5) / len(order)
        return ports

    # --- positions across the ranks ------------------------------------------------------------

    def _centres(self) -> list[float]:
        """The middle of every rank across the drawing; steep gaps where edges travel far along."""
        reach = [0.0] * len(self.ranks)
        for i, route in enumerate(self.routes):
            points = [self.ports[i, 0], *(n.pos for n in route.nodes[1:-1]), self.ports[i, 1]]
            for n, a, m, b in zip(route.nodes, points, route.nodes[1:], points[1:], strict=False):
                gap = min(n.rank, m.rank)
                reach[gap] = max(reach[gap], abs(a - b))
        centres = []
        edge = 0.0
        for r in range(len(self.ranks)):
            thick = self.thickness(r)
            centres.append(edge + thick / 2)
            edge += thick + min(_GAP_MAX, max(_GAP_MIN, (0.25 if self.tb else 0.35) * reach[r]))
        return centres

    def thickness(self, r: int) -> float:
        return max((n.thick for n in self.ranks[r]), default=0.0)

    def extent(self) -> tuple[float, float]:
        """(along, across) size of the drawing."""
        along = max(n.pos + n.after for rank in self.ranks for n in rank)
        return along, self.centres[-1] + self.thickness(len(self.ranks) - 1) / 2


# How hard two neighbours pull on each other: lanes hard on lanes, so that trunks run straight.
_PULL = {("lane", "lane"): 10.0, ("lane", "label"): 3.0, ("label", "lane"): 3.0}


def _align(
    rank: Sequence[_Node],
    near: Callable[[_Node], list[_Node]],
    sep: Callable[[_Node, _Node], float],
    *,
    pinned: bool = False,
) -> None:
    """Move the nodes of ``rank`` as close to their neighbours as order and spacing allow (least squares).

    ``pinned``: lanes stay where they are unless there is no room (the others make way for them).

    With ``gap`` the least distance from the first node, the nodes may go anywhere where
    ``pos - gap`` never decreases along the rank: an isotonic regression, solved by pooling
    adjacent violators.
    """
    offsets, targets, weights = [], [], []
    gap = 0.0
    for i, n in enumerate(rank):
        if i:
            gap += rank[i - 1].after + sep(rank[i - 1], n) + n.before
        pulls = (
            [(n.pos, 1e4)]
            if pinned and n.what == "lane"
            else [(m.pos, _PULL.get((n.what, m.what), 1.0)) for m in near(n)]
        )
        weight = sum(w for _, w in pulls)
        want = sum(p * w for p, w in pulls) / weight if pulls else n.pos
        weight = weight or 1e-3
        offsets.append(gap)
        targets.append(want - gap)
        weights.append(weight)
    blocks: list[tuple[float, float, int]] = []  # value, weight, count
    for t, w in zip(targets, weights, strict=True):
        value, weight, count = t, w, 1
        while blocks and blocks[-1][0] > value:
            v0, w0, c0 = blocks.pop()
            value, weight, count = (v0 * w0 + value * weight) / (w0 + weight), w0 + weight, c0 + count
        blocks.append((value, weight, count))
    i = 0
    for value, _, count in blocks:
        for _ in range(count):
            rank[i].pos = value + offsets[i]
            i += 1


def _subtitle(s: State) -> str:
    text = f"{s.code} · {s.role.value}"
    return text + f" · ⏱ {_duration(s.deadline)}" if s.deadline is not None else text


# --- the document ------------------------------------------------------------------------------


def to_svg(kind: Kind, *, direction: Direction = "TB") -> str:
    """Render ``kind`` as a standalone SVG document.

    There is no XML declaration, so the text can be inlined in HTML as it is; served on its own it is
    ``image/svg+xml`` in UTF-8. ``direction`` is the way the layers run: ``"TB"`` (top to bottom)
    keeps long kinds about as wide as they are high, ``"LR"`` suits short ones.
    """
    lay = _Layout(kind, direction)
    along, across = lay.extent()
    dw, dh = (along, across) if lay.tb else (across, along)
    head = f"{kind.name} v{kind.version}"
    roles = [r for r in Role if kind.states_with_role(r)]
    legend_w = sum(_text_width(r.value, _SMALL_SIZE) + 40 for r in roles) + _text_width("initial", _SMALL_SIZE) + 24
    inner = max(dw, _text_width(head, 15, bold=True), legend_w, 360.0)
    desc = _wrap(kind.description, inner, 12, 4) if kind.description.strip() else []
    inner = max([inner, *(_text_width(line, 12) for line in desc)])
    width = inner + 2 * _MARGIN
    head_h = 24 + 16 * len(desc) + 16
    height = _MARGIN + head_h + dh + 24 + 16 + _MARGIN
    ox, oy = _MARGIN + (inner - dw) / 2, _MARGIN + head_h

    def pt(a: float, r: float) -> str:
        x, y = (a, r) if lay.tb else (r, a)
        return f"{_num(ox + x)},{_num(oy + y)}"

    def centre(a: float, r: float) -> tuple[float, float]:
        return (ox + a, oy + r) if lay.tb else (ox + r, oy + a)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_num(width)}" height="{_num(height)}" '
        f'viewBox="0 0 {_num(width)} {_num(height)}" font-family="{_FONT}" font-size="{_num(_SMALL_SIZE)}">',
        f"<title>{_esc(head)}</title>",
    ]
    if kind.description:
        out.append(f"<desc>{_esc(kind.description)}</desc>")
    out += [
        "<defs>",
        '<marker id="tenure-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        f'orient="auto"><path d="M0,1 L10,5 L0,9 z" fill="{_EDGE}"/></marker>',
        "</defs>",
        f'<rect class="background" width="{_num(width)}" height="{_num(height)}" fill="#ffffff"/>',
        '<g class="heading">',
        f'<text x="{_num(_MARGIN)}" y="{_num(_MARGIN + 15)}" font-size="15" font-weight="bold" fill="#111827">'
        f"{_esc(kind.name)} <tspan font-weight="
        f'"normal" fill="#6b7280">v{kind.version}</tspan></text>',
    ]
    for k, line in enumerate(desc):
        out.append(
            f'<text x="{_num(_MARGIN)}" y="{_num(_MARGIN + 36 + 16 * k)}" font-size="12" fill="#4b5563">'
            f"{_esc(line)}</text>"
        )
    out.append("</g>")
    out += _edges(lay, pt, centre)
    out += _states(lay, centre)
    out += _legend(roles, _MARGIN, oy + dh + 24)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _edges(
    lay: _Layout, pt: Callable[[float, float], str], centre: Callable[[float, float], tuple[float, float]]
) -> list[str]:
    paths = [f'<g class="edges" fill="none" stroke="{_EDGE}" stroke-width="1.3">']
    labels = ['<g class="edge-labels">']
    drawn: set[int] = set()  # lanes some edge already runs through
    for i, route in enumerate(lay.routes):
        nodes = route.nodes
        a0, (r0, band0) = lay.ports[i, 0], _surface(lay, nodes[0], nodes[1].rank)
        a1, (r1, band1) = lay.ports[i, 1], _surface(lay, nodes[-1], nodes[-2].rank)
        # Straight out of the box to the edge of its rank: edges bend only in the gaps between ranks.
        d = f"M{pt(a0, r0)}" + (f" L{pt(a0, band0)}" if band0 != r0 else "")
        prev = (a0, band0)
        for before, n, after in zip(nodes, nodes[1:-1], nodes[2:], strict=False):
            step = 1 if n.rank > before.rank else -1
            half, mid = lay.thickness(n.rank) / 2, lay.centres[n.rank]
            entry = (n.pos, mid - step * half)
            if n.seq in drawn:
                # The rest of the way is a trunk that an edge into the same state has drawn already.
                d += _curve(pt, prev, entry)
                break
            if n.what == "lane":
                drawn.add(n.seq)
            if (after.rank > n.rank) == (step > 0):
                leave = (n.pos, mid + step * half)
                d += _curve(pt, prev, entry) + f" L{pt(*leave)}"
            else:
                # An edge between two states of one layer turns round inside its label.
                leave = entry
                d += _curve(pt, prev, entry) + f" L{pt(n.pos, mid)} L{pt(*leave)}"
            prev = leave
            if n.group is not None:
                labels.append(_label(n.group, *centre(n.pos, mid)))
        else:
            d += _curve(pt, prev, (a1, band1)) + (f" L{pt(a1, r1)}" if band1 != r1 else "")
            paths.append(_path(route.group, d))
            continue
        paths.append(_path(route.group, d, arrow=False))
    for name, g in lay.loops.items():
        node = lay.boxes[name]
        edge = node.pos + lay.room(*node.box)[0] / 2
        r = lay.centres[node.rank]
        d = f"M{pt(edge, r - 9)} C{pt(edge + _LOOP, r - 24)} {pt(edge + _LOOP, r + 24)} {pt(edge, r + 9)}"
        paths.append(_path(g, d))
        labels.append(_label(g, *centre(edge + 0.75 * _LOOP + 6 + lay.room(g.width, g.height)[0] / 2, r)))
    start = lay.start
    cx, cy = centre(start.pos, lay.centres[start.rank])
    paths.append(f'<circle class="start" cx="{_num(cx)}" cy="{_num(cy)}" r="5" fill="#111827" stroke="none"/>')
    return [*paths, "</g>", *labels, "</g>"]


def _surface(lay: _Layout, node: _Node, towards: int) -> tuple[float, float]:
    """Where ``node``'s box, and its rank, end on the side facing rank ``towards`` (across the ranks)."""
    side = 1 if towards > node.rank else -1
    centre = lay.centres[node.rank]
    return centre + side * lay.room(*node.box)[1] / 2, centre + side * lay.thickness(node.rank) / 2


def _curve(pt: Callable[[float, float], str], a: tuple[float, float], b: tuple[float, float]) -> str:
    """A cubic from ``a`` to ``b`` that leaves and arrives straight across the ranks."""
    mid = (a[1] + b[1]) / 2
    return f" C{pt(a[0], mid)} {pt(b[0], mid)} {pt(*b)}"


def _path(g: _Group | None, d: str, *, arrow: bool = True) -> str:
    marker = ' marker-end="url(#tenure-arrow)"' if arrow else ""
    if g is None:
        return f'<path class="edge start" d="{d}"{marker}/>'
    return (
        f'<path class="edge" data-source="{_esc(g.source)}" data-target="{_esc(g.target)}" d="{d}"{marker}>'
        f"<title>{_esc(g.tip)}</title></path>"
    )


def _label(g: _Group, cx: float, cy: float) -> str:
    top = cy - g.height / 2
    lines = "".join(
        f'<tspan x="{_num(cx)}" y="{_num(top + 2 + _LINE * k + _LINE / 2 + 0.35 * _SMALL_SIZE)}">{_esc(line)}</tspan>'
        for k, line in enumerate(g.lines)
    )
    return (
        f'<g class="edge-label" data-source="{_esc(g.source)}" data-target="{_esc(g.target)}">'
        f"<title>{_esc(g.tip)}</title>"
        f'<rect x="{_num(cx - g.width / 2)}" y="{_num(top)}" width="{_num(g.width)}" height="{_num(g.height)}" '
        f'rx="3" fill="#ffffff" fill-opacity="0.9"/>'
        f'<text text-anchor="middle" fill="#334155">{lines}</text></g>'
    )


def _states(lay: _Layout, centre: Callable[[float, float], tuple[float, float]]) -> list[str]:
    out = ['<g class="states">']
    for name, node in lay.boxes.items():
        s = node.state
        assert s is not None
        w, h = node.box
        cx, cy = centre(node.pos, lay.centres[node.rank])
        x, y = cx - w / 2, cy - h / 2
        fill, stroke, dash = _ROLE_STYLE[s.role]
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        tip = "\n".join(p for p in (f"{name} ({s.code}, {s.role.value})", s.description, _deadline_tip(s)) if p)
        out += [
            f'<g class="state" data-state="{_esc(name)}" data-role="{s.role.value}" data-code="{s.code}">',
            f"<title>{_esc(tip)}</title>",
            f'<rect class="box" x="{_num(x)}" y="{_num(y)}" width="{_num(w)}" height="{_num(h)}" rx="8" '
            f'fill="{fill}" stroke="{stroke}" stroke-width="1.5"{dashes}/>',
        ]
        if s.role is Role.FINAL:
            out.append(
                f'<rect class="inner" x="{_num(x + 3.5)}" y="{_num(y + 3.5)}" width="{_num(w - 7)}" '
                f'height="{_num(h - 7)}" rx="5" fill="none" stroke="{stroke}" stroke-width="1.2"/>'
            )
        out += [
            f'<text x="{_num(cx)}" y="{_num(y + 19)}" text-anchor="middle" font-size="{_num(_NAME_SIZE)}" '
            f'font-weight="bold" fill="#111827">{_esc(name)}</text>',
            f'<text x="{_num(cx)}" y="{_num(y + 35)}" text-anchor="middle" fill="#4b5563">{_esc(_subtitle(s))}</text>',
            "</g>",
        ]
    out.append("</g>")
    return out


def _deadline_tip(s: State) -> str:
    if s.deadline is None:
        return ""
    return f"deadline {_duration(s.deadline)}, then {s.on_deadline}"


def _legend(roles: list[Role], x: float, y: float) -> list[str]:
    out = ['<g class="legend">']
    for role in roles:
        fill, stroke, dash = _ROLE_STYLE[role]
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(
            f'<rect x="{_num(x)}" y="{_num(y)}" width="22" height="14" rx="4" fill="{fill}" stroke="{stroke}" '
            f'stroke-width="1.5"{dashes}/>'
        )
        if role is Role.FINAL:
            out.append(
                f'<rect x="{_num(x + 3)}" y="{_num(y + 3)}" width="16" height="8" rx="2" fill="none" '
                f'stroke="{stroke}" stroke-width="1"/>'
            )
        out.append(f'<text x="{_num(x + 28)}" y="{_num(y + 11)}" fill="#4b5563">{role.value}</text>')
        x += _text_width(role.value, _SMALL_SIZE) + 40
    out.append(f'<circle cx="{_num(x + 7)}" cy="{_num(y + 7)}" r="5" fill="#111827"/>')
    out.append(f'<text x="{_num(x + 18)}" y="{_num(y + 11)}" fill="#4b5563">initial</text>')
    out.append("</g>")
    return out
