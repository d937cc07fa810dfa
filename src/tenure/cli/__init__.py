"""The ``tenure`` command line: migrate, kinds, draw, show, history and a demo."""

from __future__ import annotations

from tenure.cli.app import app, main

__all__ = ["app", "main"]
