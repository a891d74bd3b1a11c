"""The event loop every long-running process runs on: uvloop's.

Measured on the order path (issue #6): a pooled psycopg query cost about 136 us of the client's
CPU on asyncio's default loop and 75 us on uvloop (its reader/writer registration, which psycopg
does around every wait, is far cheaper). grpc.aio runs on it unchanged (its completion queue has
a poller of its own). Sanic picks uvloop by itself for the edge.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on a uvloop event loop."""
    return uvloop.run(main)
