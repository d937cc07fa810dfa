"""The text of an SVG drawing and the room it takes: the font, its sizes and the width of a line.

There is no font to measure with (no I/O, no dependencies), so widths come from a table of advance
widths; layout and rendering both measure with it, so every box fits the text drawn in it.
"""

from __future__ import annotations

from datetime import timedelta

from tenure.machine import State

__all__ = ["FONT", "LINE", "NAME_SIZE", "SMALL_SIZE", "duration", "fit", "subtitle", "text_width", "wrap"]

FONT = "Helvetica, Arial, sans-serif"
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

NAME_SIZE = 13.0  # state names, in bold
SMALL_SIZE = 11.0  # everything else but the heading
LINE = 13.0  # line height of edge labels


def text_width(text: str, size: float, *, bold: bool = False) -> float:
    """How wide ``text`` is drawn at font size ``size``; characters outside ASCII count as a full em."""
    em = sum(_WIDTHS[o - 32] if 32 <= (o := ord(c)) < 127 else 100 for c in text) / 100
    return em * size * (_BOLD if bold else 1.0)


def duration(d: timedelta) -> str:
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


def wrap(text: str, width: float, size: float, max_lines: int) -> list[str]:
    """``text`` in lines at most ``width`` wide (by words), cut to ``max_lines`` with an ellipsis."""
    lines: list[str] = []
    for word in text.split():
        if lines and text_width(f"{lines[-1]} {word}", size) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        elif len(lines) == max_lines:
            lines[-1] += " …"
            break
        else:
            lines.append(word)
    return [fit(line, width, size) for line in lines]


def fit(text: str, width: float, size: float) -> str:
    """``text``, cut short with an ellipsis if it is wider than ``width`` (a word longer than a line)."""
    if text_width(text, size) <= width:
        return text
    keep, over = 0, len(text)  # the longest prefix that fits is at least keep and less than over
    while over - keep > 1:
        mid = (keep + over) // 2
        keep, over = (mid, over) if text_width(text[:mid] + "…", size) <= width else (keep, mid)
    return text[:keep] + "…"


def subtitle(s: State) -> str:
    """The second line of a state's box: its code, its role and its deadline if it has one."""
    text = f"{s.code} · {s.role.value}"
    return text + f" · ⏱ {duration(s.deadline)}" if s.deadline is not None else text
