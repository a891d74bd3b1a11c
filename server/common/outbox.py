"""Writes events to the transactional outbox, on the caller's connection and transaction.

Relays learn of new rows three ways: ``add_event`` sends ``NOTIFY smm_outbox`` with the caller's
transaction (transactional: nothing fires on rollback); a caller whose write is one autocommit
statement knows the moment it committed and calls ``committed()``, which wakes the relays of
this process without a NOTIFY (the order path: every NOTIFY-ing commit takes one cluster-wide
lock in PostgreSQL, so one per order serialised the commits); and each relay polls anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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

# The wake-ups of the relays running in this process (server/common/relay.py registers them).
_local_relays: set[Callable[[], None]] = set()


@dataclass(frozen=True)
class EventValues:
    """One outbox row's values, for a caller that inserts it in a statement of its own."""

    subject: str
    payload: bytes
    headers: Jsonb


def event_values(subject: str, payload: Message) -> EventValues:
    if not subject.startswith("smm."):
        raise ValueError(f"event subjects start with 'smm.': {subject}")
    headers = dict(inject({}))  # the trace context, so the worker's span joins this trace
    return EventValues(subject, payload.SerializeToString(), Jsonb(headers))


async def add_event(conn: AsyncConnection[Any], subject: str, payload: Message) -> str:
    """Queue ``payload`` for ``subject``; it is published only if the transaction commits."""
    values = event_values(subject, payload)
    async with conn.cursor() as cur:
        await cur.execute(
            INSERT_EVENT, {"subject": values.subject, "payload": values.payload, "headers": values.headers}
        )
        row = await cur.fetchone()
        # Wakes relays at commit time; NOTIFY is transactional, so nothing fires on rollback.
        await cur.execute(f"NOTIFY {NOTIFY_CHANNEL}")
    assert row is not None
    return str(row[0])


def committed() -> None:
    """An outbox row has just committed (outside ``add_event``): wake this process's relays."""
    for wake in _local_relays:
        wake()


def register_relay(wake: Callable[[], None]) -> Callable[[], None]:
    """Have ``committed()`` call ``wake``; returns the function that undoes it."""
    _local_relays.add(wake)
    return lambda: _local_relays.discard(wake)
