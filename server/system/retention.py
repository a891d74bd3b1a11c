"""Retention: the purge jobs that keep operational tables from growing for ever.

Each table is purged in batches of ``Policy.batch`` rows, oldest first, each batch a statement of
its own on a connection of its own (autocommit), so a first run on a table grown for years never
holds one huge transaction (its locks, the WAL it writes at once, a migration's DDL queued behind
it). A table gets at most ``TABLE_BUDGET_S`` of a run; what is left goes at the next run. What is
kept for ever (the ledger, orders and their timelines, the audit trail, suppressions) is listed
in docs/DEPLOYMENT.md, "Retention".
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from core.config import Settings
from core.schedule import JOBS
from server.common.db import Pool
from server.common.sqlfile import load

QUERIES = load(__file__)
# Published outbox rows: NATS holds an event 7 days (core.events.Stream.max_age_s).
OUTBOX_KEEP_DAYS = 7
# One row per job period (the 30 s order poll writes 2,880 a day); SCHEDULE keeps ticks 2 days.
JOB_RUNS_KEEP_DAYS = 30
# Sessions, email links and phone codes past their expiry: nothing reads them (only live ones
# sign in or confirm anything); a week to look into a complaint.
EXPIRED_CREDENTIALS_KEEP_DAYS = 7
# API key usage days: ListApiKeyUsage shows up to 366 (server/accounts/rpc.py, MAX_USAGE_DAYS).
API_KEY_USAGE_KEEP_DAYS = 400
TABLE_BUDGET_S = 20.0

_Connect = Callable[[], AbstractAsyncContextManager[AsyncConnection[Any]]]


@dataclass(frozen=True)
class Policy:
    request_ids_days: int = 30
    provider_log_days: int = 90
    messages_days: int = 90
    batch: int = 5000

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            request_ids_days=settings.retain_request_ids_days,
            provider_log_days=settings.retain_provider_log_days,
            messages_days=settings.retain_messages_days,
            batch=settings.retention_batch,
        )


@dataclass(frozen=True)
class _Batch:
    deleted: int
    last_id: int
    more: bool


@dataclass
class _Purged:
    table: str
    rows: int = 0
    batches: int = 0

    def __str__(self) -> str:
        return f"{self.table} {self.rows} ({self.batches} batch{'es' if self.batches != 1 else ''})"


class Retention:
    def __init__(self, pool: Pool, policy: Policy | None = None) -> None:
        self._pool = pool
        self._policy = policy or Policy()

    async def purge_outbox(self, conn: AsyncConnection[Any]) -> str:
        """The ``outbox-purge`` job: published outbox rows and old request ids."""
        async with self._own(conn) as own:
            done = [
                await self._walk(own, "outbox_events", "purge_outbox_batch", OUTBOX_KEEP_DAYS),
                await self._count(
                    own,
                    "idempotent_requests",
                    "purge_idempotent_requests_batch",
                    self._policy.request_ids_days,
                ),
            ]
        return "purged " + ", ".join(map(str, done))

    async def purge(self, conn: AsyncConnection[Any]) -> str:
        """The ``retention-purge`` job: every other operational table."""
        p = self._policy
        async with self._own(conn) as own:
            done = [
                await self._walk(
                    own, "provider_exchanges", "purge_provider_exchanges_batch", p.provider_log_days
                ),
                await self._walk(own, "email_messages", "purge_email_messages_batch", p.messages_days),
                await self._walk(own, "sms_messages", "purge_sms_messages_batch", p.messages_days),
                await self._count(own, "sessions", "purge_sessions_batch", EXPIRED_CREDENTIALS_KEEP_DAYS),
                await self._count(
                    own, "account_tokens", "purge_account_tokens_batch", EXPIRED_CREDENTIALS_KEEP_DAYS
                ),
                await self._count(
                    own, "phone_codes", "purge_phone_codes_batch", EXPIRED_CREDENTIALS_KEEP_DAYS
                ),
                await self._count(
                    own, "api_key_usage_days", "purge_api_key_usage_batch", API_KEY_USAGE_KEEP_DAYS
                ),
            ]
            runs = _Purged("job_runs")
            for job in JOBS:
                found = await self._count(
                    own, "job_runs", "purge_job_runs_batch", JOB_RUNS_KEEP_DAYS, job=job.name
                )
                runs.rows += found.rows
                runs.batches += found.batches
            done.append(runs)
        return "purged " + ", ".join(map(str, done))

    @asynccontextmanager
    async def _own(self, conn: AsyncConnection[Any]) -> AsyncIterator[_Connect]:
        """A connection outside the job's claim transaction, so each batch commits on its own. A
        pool of one connection (the job holds it) purges in the job's transaction instead."""
        if self._pool.max_size < 2:
            yield lambda: _same(conn)
        else:
            yield self._pool.connection

    async def _walk(self, own: _Connect, table: str, query: str, keep_days: int) -> _Purged:
        """An append-only table, by its id from the oldest row on."""
        purged, after, deadline = _Purged(table), 0, time.monotonic() + TABLE_BUDGET_S
        while True:
            async with own() as conn:
                batch = await QUERIES.one(
                    conn, query, _Batch, after_id=after, keep_days=keep_days, batch=self._policy.batch
                )
            assert batch is not None
            purged.rows += batch.deleted
            purged.batches += 1
            after = batch.last_id
            if not batch.more or time.monotonic() > deadline:
                return purged

    async def _count(self, own: _Connect, table: str, query: str, keep_days: int, **params: Any) -> _Purged:
        """A table with an index on its age: batches until one comes back short."""
        purged, deadline = _Purged(table), time.monotonic() + TABLE_BUDGET_S
        while True:
            async with own() as conn:
                deleted = int(
                    await QUERIES.scalar(conn, query, keep_days=keep_days, batch=self._policy.batch, **params)
                )
            purged.rows += deleted
            purged.batches += 1
            if deleted < self._policy.batch or time.monotonic() > deadline:
                return purged


@asynccontextmanager
async def _same(conn: AsyncConnection[Any]) -> AsyncIterator[AsyncConnection[Any]]:
    yield conn
