"""The HTTP service: the resources API, callbacks, the watch stream and operations endpoints.

The service sits above the engine and the store and below nothing but the CLI: ``tenure serve``
runs it with uvicorn next to the workers. The web framework is imported only when the app is asked
for, so that the client and the command line start fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tenure.service.config import ClientToken, ConfigError, Principal, Scope, ServiceConfig

if TYPE_CHECKING:
    from tenure.service.app import create_app

__all__ = ["ClientToken", "ConfigError", "Principal", "Scope", "ServiceConfig", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from tenure.service.app import create_app

        return create_app
    raise AttributeError(f"module 'tenure.service' has no attribute {name!r}")
