"""Where everything of an SVG drawing goes, in pure Python: a small layered (Sugiyama-style) layout.

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

Every step is deterministic, so the same kind always gets the same layout.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Literal

from tenure.draw._graph import edge_labels
from tenure.draw._metrics import LINE, NAME_SIZE, SMALL_SIZE, subtitle, text_width
from tenure.machine import Kind, State
from tenure.machine.validation import expand_sources

__all__ = ["LOOP", "Direction", "Group", "Layout", "Node", "Route"]

#: Which way the layers of states run.
Direction = Literal["TB", "LR"]

_BOX_PAD = 12.0
_BOX_H = 44.0
_BOX_MIN_W = 96.0
_LANE = 6.0  # room an edge needs where it passes a rank
_SEP_BOX = 28.0  # between a box and its neighbour in a rank
_SEP_LANE = 10.0  # between two lanes or labels
_GAP_MIN = 18.0  # between ranks
_GAP_MAX = 70.0
LOOP = 34.0  # how far a self-loop's control points stand out of its box


@dataclass(eq=False)
class Group:
    """One drawn edge: every event between one pair of states."""

    source: str
    target: str
    lines: list[str]
    tip: str
    width: float = field(init=False)
    height: float = field(init=False)

    def __post_init__(self) -> None:
        self.width = max(text_width(line, SMALL_SIZE) for line in self.lines) + 8
        self.height = len(self.lines) * LINE + 4


@dataclass(eq=False)
class Node:
    """Something that takes room in a rank: a state's box, an edge label, an edge's lane or the start dot."""

    seq: int
    rank: int
    what: Literal["state", "label", "lane", "start"]
    before: float  # room along the rank before the anchor (left in TB, above in LR)
    after: float
    thick: float  # room across the rank
    state: State | None = None
    group: Group | None = None
    box: tuple[float, float] = (0.0, 0.0)  # the drawn box's width and height
    up: list[Node] = field(default_factory=list)  # neighbours in the rank before
    down: list[Node] = field(default_factory=list)  # neighbours in the rank after
    pos: float = 0.0


@dataclass(eq=False)
class Route:
    """One drawn edge's chain of nodes through the ranks, from where it starts to the box it ends at."""

    group: Group | None  # None for the arrow from the start dot
    nodes: list[Node]


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


def _groups(kind: Kind) -> list[Group]:
    notes: dict[tuple[str, str], str] = {}
    for e in kind.events:
        if e.description:
            for src in expand_sources(e, kind.states):
                notes.setdefault((src, e.name), e.description)
    out = []
    for (src, dst), labels in edge_labels(kind).items():
        tip = [f"{src} → {dst}"]
        for label in labels:
            note = notes.get((src, label.removesuffix(" [guarded]")))
            tip.append(f"{label}: {note}" if note else label)
        out.append(Group(src, dst, labels, "\n".join(tip)))
    return out


class Layout:
    """Where everything goes, in (along, across) coordinates: along a rank, and across the ranks."""

    def __init__(self, kind: Kind, direction: Direction) -> None:
        self.tb = direction == "TB"
        self.layer = _layers(kind)
        self.ranks: list[list[Node]] = [[] for _ in range(2 * max(self.layer.values()) + 2)]
        self.routes: list[Route] = []
        self.loops: dict[str, Group] = {}
        self._seq = 0
        self._lanes: dict[tuple[str, int], Node] = {}
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

    def _node(self, rank: int, what: Literal["state", "label", "lane", "start"], *room: float) -> Node:
        before, after, thick = room
        node = Node(self._seq, rank, what, before, after, thick)
        self._seq += 1
        self.ranks[rank].append(node)
        return node

    def _state_node(self, s: State) -> Node:
        w = max(text_width(s.name, NAME_SIZE, bold=True), text_width(subtitle(s), SMALL_SIZE)) + 2 * _BOX_PAD
        w = max(_BOX_MIN_W, w)
        along, thick = self.room(w, _BOX_H)
        after = along / 2
        if (loop := self.loops.get(s.name)) is not None:
            label_along, label_thick = self.room(loop.width, loop.height)
            after += 0.75 * LOOP + 6 + label_along
            thick = max(thick, label_thick)
        node = self._node(2 * self.layer[s.name] + 1, "state", along / 2, after, thick)
        node.state, node.box = s, (w, _BOX_H)
        return node

    def _route(self, g: Group) -> None:
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

    def _chain(self, g: Group | None, nodes: list[Node]) -> None:
        for a, b in pairwise(nodes):
            for x, y in ((a, b), (b, a)):
                near = x.down if y.rank > x.rank else x.up
                if y not in near:
                    near.append(y)
        self.routes.append(Route(g, nodes))

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
        merged: list[Node] = []
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
        trunks: dict[str, list[Node]] = {}
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
    def _sep(a: Node, b: Node) -> float:
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
        """Room across rank ``r``: that of the thickest thing in it."""
        return max((n.thick for n in self.ranks[r]), default=0.0)

    def extent(self) -> tuple[float, float]:
        """(along, across) size of the drawing."""
        along = max(n.pos + n.after for rank in self.ranks for n in rank)
        return along, self.centres[-1] + self.thickness(len(self.ranks) - 1) / 2


# How hard two neighbours pull on each other: lanes hard on lanes, so that trunks run straight.
_PULL = {("lane", "lane"): 10.0, ("lane", "label"): 3.0, ("label", "lane"): 3.0}


def _align(
    rank: Sequence[Node],
    near: Callable[[Node], list[Node]],
    sep: Callable[[Node, Node], float],
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
