"""The audit trail seam: services append security and admin events in their own transaction.

Who, from where and in which request come from the call's context; the caller names the action,
the target and, for changes, the values before and after. Secrets never go in (the callers pass
only what an auditor may read).
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from server.common import auth
from server.common.interceptors import current_request

INSERT_AUDIT = """
INSERT INTO audit_events (action, actor, target, client_ip, user_agent, request_id, before, after)
VALUES (%(action)s, %(actor)s, %(target)s, %(client_ip)s, %(user_agent)s, %(request_id)s,
        %(before)s, %(after)s)
"""


async def record(
    conn: AsyncConnection[Any],
    action: str,
    *,
    target: str = "",
    actor: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    info = current_request.get()
    await conn.execute(
        INSERT_AUDIT,
        {
            "action": action,
            "actor": actor or auth.principal().actor,
            "target": target,
            "client_ip": info.client_ip,
            "user_agent": info.user_agent,
            "request_id": info.request_id,
            "before": Jsonb(before) if before is not None else None,
            "after": Jsonb(after) if after is not None else None,
        },
    )
