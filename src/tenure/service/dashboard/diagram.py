"""A kind's SVG diagram, marked for one page: the current state, the states and moves a resource
went through, the states that hold resources, and how many each holds.

The drawing is :func:`tenure.draw.to_svg`'s (cached per kind version: it is deterministic); marking
adds CSS classes to its state groups and edges, which carry ``data-state`` and ``data-source`` /
``data-target`` attributes, and a count badge (a small pill at the top right of the state's box,
with the exact number in its tooltip) to each state that holds resources. The names are compared
unescaped and the markup is otherwise kept as it is; the badge's text is a number.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Collection, Mapping

from markupsafe import Markup

from tenure.draw import to_svg
from tenure.machine import Kind

__all__ = ["marked_svg", "short_count"]

_STATE = re.compile(r'<g class="state" data-state="([^"]*)"')
_EDGE = re.compile(r'<path class="edge" data-source="([^"]*)" data-target="([^"]*)"')
#: A state's whole group (state groups hold no nested group) and its box.
_GROUP = re.compile(r'(<g class="[^"]*" data-state="([^"]*)"[^>]*>.*?)(</g>)', re.DOTALL)
_BOX = re.compile(r'<rect class="box" x="([0-9.]+)" y="([0-9.]+)" width="([0-9.]+)"')
#: The badge's height, and its width per digit and around them.
_BADGE_HEIGHT = 16.0
_DIGIT = 6.5
_PAD = 10.0


@functools.lru_cache(maxsize=128)
def _drawn(kind: Kind) -> str:
    return to_svg(kind)


def marked_svg(
    kind: Kind,
    *,
    current: str | None = None,
    visited: Collection[str] = (),
    moves: Collection[tuple[str, str]] = (),
    occupied: Collection[str] = (),
    counts: Mapping[str, int] | None = None,
    failing: Collection[str] = (),
) -> Markup:
    """The kind's diagram with classes: ``current``, ``visited``, ``occupied`` states; ``taken`` edges;
    and a badge with ``counts[state]`` on each state that holds resources (``failing`` states' in red)."""

    def state(match: re.Match[str]) -> str:
        name = html.unescape(match.group(1))
        classes = ["state"]
        if name == current:
            classes.append("current")
        if name in visited:
            classes.append("visited")
        if name in occupied:
            classes.append("occupied")
        return f'<g class="{" ".join(classes)}" data-state="{match.group(1)}"'

    def edge(match: re.Match[str]) -> str:
        pair = (html.unescape(match.group(1)), html.unescape(match.group(2)))
        taken = " taken" if pair in moves else ""
        return f'<path class="edge{taken}" data-source="{match.group(1)}" data-target="{match.group(2)}"'

    svg = _STATE.sub(state, _drawn(kind))
    if moves:
        svg = _EDGE.sub(edge, svg)
    if counts:
        svg = _GROUP.sub(lambda m: _badged(m, counts, failing), svg)
    # The drawing escapes every text and attribute it writes (tenure.draw.svg._esc).
    return Markup(svg)


def short_count(n: int) -> str:
    """A count in at most four characters (below a trillion), cut down, never rounded up: 7, 9999, 12k,
    340k, 2M, 2.1M, 45M, 1.2G. Below 10,000 it is exact; the badge's tooltip always is."""
    if n < 10_000:
        return str(n)
    if n < 1_000_000:
        return f"{n // 1000}k"
    unit, size = ("M", 1_000_000) if n < 1_000_000_000 else ("G", 1_000_000_000)
    if n >= 10 * size:
        return f"{n // size}{unit}"
    whole, tenth = divmod(n * 10 // size, 10)
    return f"{whole}{unit}" if tenth == 0 else f"{whole}.{tenth}{unit}"


def _badged(match: re.Match[str], counts: Mapping[str, int], failing: Collection[str]) -> str:
    """The state group of ``match`` with its count badge added last (drawn on top of the box)."""
    name = html.unescape(match.group(2))
    count = counts.get(name, 0)
    box = _BOX.search(match.group(1))
    if count <= 0 or box is None:
        return match.group(0)
    x, y, width = (float(v) for v in box.groups())
    text = short_count(count)
    wide = _PAD + _DIGIT * len(text)
    left, top = x + width - wide + 6, y - _BADGE_HEIGHT / 2
    red = name in failing
    fill = "#b91c1c" if red else "#111827"
    plural = "resource" if count == 1 else "resources"
    badge = (
        f'<g class="badge{" failing" if red else ""}" data-count="{count}">'
        f"<title>{count} {plural} in state {html.escape(name)}</title>"
        f'<rect x="{left:.1f}" y="{top:.1f}" width="{wide:.1f}" height="{_BADGE_HEIGHT:.0f}" rx="8" fill="{fill}" '
        'stroke="#ffffff" stroke-width="1.5"/>'
        f'<text x="{left + wide / 2:.1f}" y="{top + 11.5:.1f}" text-anchor="middle" font-size="10" '
        f'font-weight="bold" fill="#ffffff">{text}</text></g>'
    )
    return f"{match.group(1)}{badge}{match.group(3)}"
