"""What each scheduled job does. Every job in core.schedule.JOBS has an action here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from psycopg import AsyncConnection

from server.common.sqlfile import load

QUERIES = load(__file__)
OUTBOX_KEEP_DAYS = 7
# Longer than any client's retry horizon for a request_id (AIP-155 suggests at least hours).
REQUEST_ID_KEEP_DAYS = 30

JobAction = Callable[[AsyncConnection[Any]], Awaitable[str]]


async def purge_outbox(conn: AsyncConnection[Any]) -> str:
    events = await QUERIES.execute(conn, "purge_published_outbox", keep_days=OUTBOX_KEEP_DAYS)
    requests = await QUERIES.execute(conn, "purge_idempotent_requests", keep_days=REQUEST_ID_KEEP_DAYS)
    return f"purged {events} published outbox rows and {requests} old request ids"


async def purge_rate_limits(conn: AsyncConnection[Any]) -> str:
    windows = await QUERIES.execute(conn, "purge_rate_limit_windows")
    return f"purged {windows} old rate-limit windows"


ACTIONS: dict[str, JobAction] = {"outbox-purge": purge_outbox, "rate-limit-purge": purge_rate_limits}
