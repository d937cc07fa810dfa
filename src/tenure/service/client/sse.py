"""Server-Sent Events: the text of an event stream read into events, whatever the chunking.

The watch stream is read with it; it knows nothing of tenure, only the WHATWG parsing rules.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ServerEvent", "SseParser"]


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """One Server-Sent Event as it came off the wire."""

    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None


class SseParser:
    """Turns the text of an event stream into events, incrementally (the WHATWG parsing rules).

    Lines end in CR LF, LF or CR, also when a chunk boundary splits them; ``:`` starts a comment;
    ``data`` lines are joined with newlines; an event without data is not dispatched, but its ``id``
    still counts (see :attr:`last_id`).

    >>> p = SseParser()
    >>> p.feed("id: 7\\nevent: change\\ndata: {}\\n") + p.feed("\\n")
    [ServerEvent(event='change', data='{}', id='7', retry=None)]
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._pending_cr = False
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._retry: int | None = None
        #: The last ``id`` the stream set, whether or not its event was dispatched.
        self.last_id: str | None = None

    def feed(self, text: str) -> list[ServerEvent]:
        """The events that ``text`` completes (most chunks complete none or one)."""
        if self._pending_cr and text.startswith("\n"):
            text = text[1:]  # the LF of a CR LF split across chunks
        self._pending_cr = False
        self._buffer += text
        out: list[ServerEvent] = []
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                break
            line, sep_len = self._buffer[:cut], 1
            if self._buffer[cut] == "\r":
                if cut + 1 == len(self._buffer):
                    self._pending_cr = True
                elif self._buffer[cut + 1] == "\n":
                    sep_len = 2
            self._buffer = self._buffer[cut + sep_len :]
            event = self._line(line)
            if event is not None:
                out.append(event)
        return out

    def _line(self, line: str) -> ServerEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self._id = value
                self.last_id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> ServerEvent | None:
        event = ServerEvent(self._event or "message", "\n".join(self._data), self._id, self._retry)
        had_data = bool(self._data)
        self._event, self._data, self._retry = "", [], None
        # The id persists between events (it is the stream's last event id), the rest does not.
        return event if had_data else None


def _line_end(text: str) -> int | None:
    cr, lf = text.find("\r"), text.find("\n")
    ends = [i for i in (cr, lf) if i >= 0]
    return min(ends) if ends else None
