"""The event that tells the notifiers an account's security changed (password, address, 2FA)."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from smm.v1 import events_pb2

from server.common.outbox import add_event

PASSWORD_CHANGED = events_pb2.SECURITY_CHANGE_PASSWORD_CHANGED
PASSWORD_RESET = events_pb2.SECURITY_CHANGE_PASSWORD_RESET
EMAIL_CHANGED = events_pb2.SECURITY_CHANGE_EMAIL_CHANGED
TWO_FACTOR_ENABLED = events_pb2.SECURITY_CHANGE_TWO_FACTOR_ENABLED
TWO_FACTOR_DISABLED = events_pb2.SECURITY_CHANGE_TWO_FACTOR_DISABLED


async def security_changed(
    conn: AsyncConnection[Any], user_id: int, change: events_pb2.SecurityChange.ValueType
) -> None:
    """In the caller's transaction: the change and whose account, nothing secret."""
    await add_event(
        conn, "smm.accounts.security.changed", events_pb2.SecurityChanged(user_id=user_id, change=change)
    )
