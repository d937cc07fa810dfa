"""Drawing a kind as a standalone SVG document, in pure Python (no Graphviz, no I/O).

The layout (where every box, label and edge goes) is :mod:`tenure.draw._layout`'s; this module turns
it into SVG text: boxes styled by role, curved edges with their labels, a heading and a legend. Every
step is deterministic, so the same kind always gives byte-identical SVG.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from tenure.draw._layout import LOOP, Direction, Group, Layout, Node
from tenure.draw._metrics import FONT, LINE, NAME_SIZE, SMALL_SIZE, duration, subtitle, text_width, wrap
from tenure.machine import Kind, Role, State

__all__ = ["Direction", "to_svg"]

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


# --- the document ------------------------------------------------------------------------------


def to_svg(kind: Kind, *, direction: Direction = "TB") -> str:
    """Render ``kind`` as a standalone SVG document.

    There is no XML declaration, so the text can be inlined in HTML as it is; served on its own it is
    ``image/svg+xml`` in UTF-8. ``direction`` is the way the layers run: ``"TB"`` (top to bottom)
    keeps long kinds about as wide as they are high, ``"LR"`` suits short ones.
    """
    lay = Layout(kind, direction)
    along, across = lay.extent()
    dw, dh = (along, across) if lay.tb else (across, along)
    head = f"{kind.name} v{kind.version}"
    roles = [r for r in Role if kind.states_with_role(r)]
    legend_w = sum(text_width(r.value, SMALL_SIZE) + 40 for r in roles) + text_width("initial", SMALL_SIZE) + 24
    inner = max(dw, text_width(head, 15, bold=True), legend_w, 360.0)
    desc = wrap(kind.description, inner, 12, 4) if kind.description.strip() else []
    inner = max([inner, *(text_width(line, 12) for line in desc)])
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
        f'viewBox="0 0 {_num(width)} {_num(height)}" font-family="{FONT}" font-size="{_num(SMALL_SIZE)}">',
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
    lay: Layout, pt: Callable[[float, float], str], centre: Callable[[float, float], tuple[float, float]]
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
        d = f"M{pt(edge, r - 9)} C{pt(edge + LOOP, r - 24)} {pt(edge + LOOP, r + 24)} {pt(edge, r + 9)}"
        paths.append(_path(g, d))
        labels.append(_label(g, *centre(edge + 0.75 * LOOP + 6 + lay.room(g.width, g.height)[0] / 2, r)))
    start = lay.start
    cx, cy = centre(start.pos, lay.centres[start.rank])
    paths.append(f'<circle class="start" cx="{_num(cx)}" cy="{_num(cy)}" r="5" fill="#111827" stroke="none"/>')
    return [*paths, "</g>", *labels, "</g>"]


def _surface(lay: Layout, node: Node, towards: int) -> tuple[float, float]:
    """Where ``node``'s box, and its rank, end on the side facing rank ``towards`` (across the ranks)."""
    side = 1 if towards > node.rank else -1
    centre = lay.centres[node.rank]
    return centre + side * lay.room(*node.box)[1] / 2, centre + side * lay.thickness(node.rank) / 2


def _curve(pt: Callable[[float, float], str], a: tuple[float, float], b: tuple[float, float]) -> str:
    """A cubic from ``a`` to ``b`` that leaves and arrives straight across the ranks."""
    mid = (a[1] + b[1]) / 2
    return f" C{pt(a[0], mid)} {pt(b[0], mid)} {pt(*b)}"


def _path(g: Group | None, d: str, *, arrow: bool = True) -> str:
    marker = ' marker-end="url(#tenure-arrow)"' if arrow else ""
    if g is None:
        return f'<path class="edge start" d="{d}"{marker}/>'
    return (
        f'<path class="edge" data-source="{_esc(g.source)}" data-target="{_esc(g.target)}" d="{d}"{marker}>'
        f"<title>{_esc(g.tip)}</title></path>"
    )


def _label(g: Group, cx: float, cy: float) -> str:
    top = cy - g.height / 2
    lines = "".join(
        f'<tspan x="{_num(cx)}" y="{_num(top + 2 + LINE * k + LINE / 2 + 0.35 * SMALL_SIZE)}">{_esc(line)}</tspan>'
        for k, line in enumerate(g.lines)
    )
    return (
        f'<g class="edge-label" data-source="{_esc(g.source)}" data-target="{_esc(g.target)}">'
        f"<title>{_esc(g.tip)}</title>"
        f'<rect x="{_num(cx - g.width / 2)}" y="{_num(top)}" width="{_num(g.width)}" height="{_num(g.height)}" '
        f'rx="3" fill="#ffffff" fill-opacity="0.9"/>'
        f'<text text-anchor="middle" fill="#334155">{lines}</text></g>'
    )


def _states(lay: Layout, centre: Callable[[float, float], tuple[float, float]]) -> list[str]:
    out = ['<g class="states">']
    for name, node in lay.boxes.items():
        s = node.state
        assert s is not None
        w, h = node.box
        cx, cy = centre(node.pos, lay.centres[node.rank])
        x, y = cx - w / 2, cy - h / 2
        fill, stroke, dash = _ROLE_STYLE[s.role]
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        head = f"{name} ({s.code}, {s.role.value}{', deprecated' if s.deprecated else ''})"
        tip = "\n".join(p for p in (head, s.description, _deadline_tip(s)) if p)
        # A deprecated state is kept for the resources still in it: drawn faded.
        faded = ' opacity="0.55" data-deprecated="true"' if s.deprecated else ""
        out += [
            f'<g class="state" data-state="{_esc(name)}" data-role="{s.role.value}" data-code="{s.code}"{faded}>',
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
            f'<text x="{_num(cx)}" y="{_num(y + 19)}" text-anchor="middle" font-size="{_num(NAME_SIZE)}" '
            f'font-weight="bold" fill="#111827">{_esc(name)}</text>',
            f'<text x="{_num(cx)}" y="{_num(y + 35)}" text-anchor="middle" fill="#4b5563">{_esc(subtitle(s))}</text>',
            "</g>",
        ]
    out.append("</g>")
    return out


def _deadline_tip(s: State) -> str:
    if s.deadline is None:
        return ""
    return f"deadline {duration(s.deadline)}, then {s.on_deadline}"


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
        x += text_width(role.value, SMALL_SIZE) + 40
    out.append(f'<circle cx="{_num(x + 7)}" cy="{_num(y + 7)}" r="5" fill="#111827"/>')
    out.append(f'<text x="{_num(x + 18)}" y="{_num(y + 11)}" fill="#4b5563">initial</text>')
    out.append("</g>")
    return out
