"""Every route of the edge's Sanic app is added here, with its error format named."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def add_route(app: Any, handler: Callable[..., Any], uri: str, **options: Any) -> None:
    """``app.add_route`` with ``error_format="json"``. Left to "auto", Sanic reads and parses each
    handler's source to guess a format, which was most of an edge's start-up (194 routes; every
    test starts an edge). The format is never read: ``JsonErrorHandler`` renders every error."""
    app.add_route(handler, uri, error_format="json", **options)
