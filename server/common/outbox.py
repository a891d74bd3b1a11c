"""Writes events to the transactional outbox, on the caller's connection and transaction."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from core.tracing import inject

INSERT_EVENT = """
INSERT INTO outbox_events (subject, payload, headers)
VALUES (%(subject)s, %(payload)s, %(headers)s)
RETURNING event_id
"""
NOTIFY_CHANNEL = "smm_outbox"


async def add_event(conn: AsyncConnection[Any], subject: str, payload: Message) -> str:
    """Queue ``payload`` for ``subject``; it is published only if the transaction commits."""
    if not subject.startswith("smm."):
        raise ValueError(f"event subjects start with 'smm.': {subject}")
    headers = dict(inject({}))  # the trace context, so the worker's span joins this trace
    async with conn.cursor() as cur:
        await cur.execute(
            INSERT_EVENT,
            {"subject": subject, "payload": payload.SerializeToString(), "headers": Jsonb(headers)},
        )
        row = await cur.fetchone()
        # Wakes relays at commit time; NOTIFY is transactional, so nothing fires on rollback.
        await cur.execute(f"NOTIFY {NOTIFY_CHANNEL}")
    assert row is not None
    return str(row[0])
