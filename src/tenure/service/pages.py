"""The byte budget of a page: what one answer of a list may carry, whatever its ``limit`` says."""

from __future__ import annotations

from pydantic import BaseModel

__all__ = ["PAGE_BYTES", "PageBudget"]

#: The most JSON one page of a list carries: a page that would grow past it ends early, with its ``next``.
PAGE_BYTES = 4 * 1024 * 1024


class PageBudget:
    """How much of a page's byte budget (``PAGE_BYTES`` of JSON) is used: an item that would take the
    page past it does not fit, unless it is the first (a single big item still comes, alone)."""

    __slots__ = ("used",)

    def __init__(self) -> None:
        self.used = 0

    def fits(self, item: BaseModel) -> bool:
        size = len(item.model_dump_json())
        if self.used and self.used + size > PAGE_BYTES:
            return False
        self.used += size
        return True
