"""What each scheduled job does. Every job in core.schedule.JOBS has an action here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from psycopg import AsyncConnection

from server.common.sqlfile import load

QUERIES = load(__file__)

JobAction = Callable[[AsyncConnection[Any]], Awaitable[str]]


async def purge_rate_limits(conn: AsyncConnection[Any]) -> str:
    windows = await QUERIES.execute(conn, "purge_rate_limit_windows")
    return f"purged {windows} old rate-limit windows"


# outbox-purge and retention-purge purge in batches on connections of their own: server/system/retention.py.
ACTIONS: dict[str, JobAction] = {"rate-limit-purge": purge_rate_limits}
