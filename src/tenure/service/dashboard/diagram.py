"""A kind's SVG diagram, marked for one page: the current state, the states and moves a resource
went through, the states that hold resources.

The drawing is :func:`tenure.draw.to_svg`'s (cached per kind version: it is deterministic); marking
adds CSS classes to its state groups and edges, which carry ``data-state`` and ``data-source`` /
``data-target`` attributes. The names are compared unescaped and the markup is otherwise kept as it is.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Collection

from markupsafe import Markup

from tenure.draw import to_svg
from tenure.machine import Kind

__all__ = ["marked_svg"]

_STATE = re.compile(r'<g class="state" data-state="([^"]*)"')
_EDGE = re.compile(r'<path class="edge" data-source="([^"]*)" data-target="([^"]*)"')


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
) -> Markup:
    """The kind's diagram with classes: ``current``, ``visited``, ``occupied`` states; ``taken`` edges."""

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
    # The drawing escapes every text and attribute it writes (tenure.draw.svg._esc).
    return Markup(svg)
