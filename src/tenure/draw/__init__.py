"""Drawing a kind's state graph: as Mermaid or Graphviz DOT text, or as a standalone SVG document.

Drawing sits on top of :mod:`tenure.machine` and only reads a kind, so the state machine itself knows
nothing of how it is drawn. Every function gives the same text for the same kind.

>>> from tenure.draw import to_dot, to_mermaid, to_svg
>>> from tenure.machine import Event, Kind, State
>>> lamp = Kind("lamp", states=[State("off", 0), State("on", 1)], initial="off",
...             events=[Event("switch_on", "off", "on"), Event("switch_off", "on", "off")])
>>> print(to_mermaid(lamp), end="")
stateDiagram-v2
    %% kind lamp v1
    state "off (0, rest)" as s0
    state "on (1, rest)" as s1
    [*] --> s0
    s0 --> s1: switch_on
    s1 --> s0: switch_off
    classDef work fill:#dbeafe,stroke:#1d4ed8
    classDef wait fill:#fef3c7,stroke:#b45309,stroke-dasharray:4 3
    classDef rest fill:#dcfce7,stroke:#15803d
    classDef final fill:#e5e7eb,stroke:#374151,stroke-width:3px
    class s0,s1 rest
>>> to_dot(lamp).startswith('digraph "lamp" {')
True
>>> svg = to_svg(lamp)
>>> svg.startswith("<svg "), "<title>lamp v1</title>" in svg, svg == to_svg(lamp)
(True, True, True)
>>> to_svg(lamp, direction="LR") != svg
True
"""

from __future__ import annotations

from tenure.draw.svg import Direction, to_svg
from tenure.draw.text import to_dot, to_mermaid

__all__ = ["Direction", "to_dot", "to_mermaid", "to_svg"]
