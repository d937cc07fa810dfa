"""The HTTP service: the resources API, callbacks, the watch stream and operations endpoints.

The service sits above the engine and the store and below nothing but the CLI: ``tenure serve``
runs it with uvicorn next to the workers.
"""

from __future__ import annotations

from tenure.service.app import create_app
from tenure.service.config import ClientToken, ConfigError, Principal, Scope, ServiceConfig

__all__ = ["ClientToken", "ConfigError", "Principal", "Scope", "ServiceConfig", "create_app"]
