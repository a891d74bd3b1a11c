"""The outbox relay: publishes committed outbox rows to JetStream, at least once.

Runs as tasks in the server process (which owns the database). Each batch is one short
transaction: lock pending rows with ``FOR UPDATE SKIP LOCKED`` (so several server copies relay
in parallel without double work), publish each with ``Nats-Msg-Id`` = its event id (JetStream
drops a re-publish inside the duplicate window; the batch goes out in order, and its acks are
awaited together), then mark them published. A crash between the
publish and the commit re-publishes the rows later; the dedup window and the consumers' idempotent
RPCs make that harmless. LISTEN/NOTIFY wakes the relay at commit time; a short poll is the
safety net. A write that commits as one autocommit statement (an order) wakes the relays of its
own process directly instead (``outbox.committed``), without a NOTIFY.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import psycopg
from nats.aio.client import Client as NATS
from opentelemetry import trace

from core.events import EVENT_ID, MSG_ID, Namespace, ensure_streams
from core.tracing import extract, inject, tracer
from server.common import outbox
from server.common.db import Pool
from server.common.outbox import NOTIFY_CHANNEL

log = logging.getLogger(__name__)
_tracer = tracer("smm.relay")

LOCK_PENDING = """
SELECT id, event_id, subject, payload, headers
FROM outbox_events
WHERE published_at IS NULL
ORDER BY id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""
MARK_PUBLISHED = "UPDATE outbox_events SET published_at = now() WHERE id = ANY(%(ids)s)"
PUBLISH_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class PendingEvent:
    id: int
    event_id: str
    subject: str
    payload: bytes
    headers: dict[str, str]


class Relay:
    def __init__(
        self,
        pool: Pool,
        nc: NATS,
        ns: Namespace,
        *,
        conninfo: str,
        batch: int = 200,
        poll_s: float = 1.0,
        gather_s: float = 0.005,
    ) -> None:
        self._pool = pool
        self._conninfo = conninfo
        self._nc = nc
        self._js = nc.jetstream()
        self._ns = ns
        self._batch = batch
        self._poll_s = poll_s
        self._gather_s = gather_s
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._streams_ready = False
        self.published = 0

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    async def ping(self, timeout_s: float) -> None:
        """A round trip to NATS. A NATS that hangs, or a network that drops its packets, leaves the
        socket open (``connected``) for minutes, until the client's own pings give up."""
        if not self._nc.is_connected:
            raise ConnectionError("NATS is not connected")
        await self._nc.flush(timeout=timeout_s)  # type: ignore[arg-type]  # typed int, takes a float

    def stop(self) -> None:
        """Finish the batch in hand, then return from ``run`` (no cancellation mid-transaction)."""
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Relay until ``stop``; never gives up on NATS or database outages."""
        listener = asyncio.create_task(self._listen(), name="outbox-listen")
        unregister = outbox.register_relay(self._wake.set)
        try:
            while not self._stopping.is_set():
                # Cleared before the batch, so a wake-up that comes during it is not lost.
                self._wake.clear()
                try:
                    moved = await self.relay_once()
                except Exception as exc:  # NATS or PostgreSQL down: keep the rows, try again
                    log.warning("outbox relay paused: %s", type(exc).__name__)
                    self._streams_ready = False
                    moved = 0
                if moved < self._batch and not self._stopping.is_set():
                    # asyncio.timeout, not wait_for: 3.11's wait_for can swallow our cancellation.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._poll_s):
                            await self._wake.wait()
                    # Under load a wake-up comes with every commit: let a few rows gather, so a
                    # batch (four statements) carries many rows rather than one.
                    await asyncio.sleep(self._gather_s)
        finally:
            unregister()
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)

    async def relay_once(self) -> int:
        """Publish one batch; return how many rows it published."""
        if not self.connected:
            raise ConnectionError("NATS is not connected")
        if not self._streams_ready:
            await ensure_streams(self._js, self._ns)
            self._streams_ready = True
        async with self._pool.connection() as conn, conn.transaction():
            async with conn.cursor() as cur:
                await cur.execute(LOCK_PENDING, {"limit": self._batch})
                rows = [PendingEvent(r[0], str(r[1]), r[2], bytes(r[3]), r[4]) for r in await cur.fetchall()]
            await self._publish_all(rows)
            if rows:
                await conn.execute(MARK_PUBLISHED, {"ids": [e.id for e in rows]})
        self.published += len(rows)
        return len(rows)

    async def _publish_all(self, events: list[PendingEvent]) -> None:
        """Publish the batch in order without waiting for each ack in turn (one write to NATS for
        the lot, where a round trip per event cost a write and a wake-up each), then wait for
        every ack; any failure fails the batch, whose rows stay pending."""
        acks: list[asyncio.Future[Any]] = []
        try:
            for event in events:
                acks.append(await self._publish(event))
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                outcomes = await asyncio.gather(*acks, return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
        finally:
            for ack in acks:
                ack.cancel()  # those still waiting (a failure, a timeout): free their slots

    async def _publish(self, event: PendingEvent) -> asyncio.Future[Any]:
        parent = extract(event.headers)
        with _tracer.start_as_current_span(
            f"publish {event.subject}", context=parent, kind=trace.SpanKind.PRODUCER
        ) as span:
            span.set_attribute("messaging.system", "nats")
            span.set_attribute("messaging.destination.name", event.subject)
            span.set_attribute("messaging.message.id", event.event_id)
            headers: dict[str, Any] = {MSG_ID: event.event_id, EVENT_ID: event.event_id}

            inject(headers)
            return await self._js.publish_async(
                self._ns.subject(event.subject), event.payload, headers=headers, wait_stall=PUBLISH_TIMEOUT_S
            )

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    async for _ in conn.notifies():
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the poll keeps relaying while LISTEN reconnects
                log.debug("outbox LISTEN connection lost: %s", exc)
                await asyncio.sleep(self._poll_s)
