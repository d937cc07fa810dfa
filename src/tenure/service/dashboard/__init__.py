"""The web dashboard ``tenure serve`` serves at ``/ui``: resources, one resource, kinds, live.

Server-rendered HTML (Jinja2, autoescaped) with a small stylesheet and script shipped in this
package: no build step, nothing from a CDN. Browsers sign in with a client token once and hold a
session cookie (:mod:`.sessions`); with authentication off the pages open directly. The resource page's
buttons write through the same store calls, scopes and version checks as the API (:mod:`.actions`).
"""

from __future__ import annotations

from fastapi import APIRouter

from tenure.service.dashboard import actions, pages, sessions

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
router.include_router(sessions.router)
router.include_router(pages.router)
router.include_router(actions.router)
