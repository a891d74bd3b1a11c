"""Scheduled job runs (once per period) and analytics event counts (once per event id)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from core.schedule import JOBS
from core.schedule import job as scheduled_job
from server.common import idempotency
from server.common.db import Pool
from server.common.errors import InvalidArgument
from server.common.sqlfile import load
from server.system.jobs import ACTIONS, JobAction
from server.system.retention import Policy, Retention

QUERIES = load(__file__)
# The Unix times a period may start at: from the epoch to the end of year 9999 (PostgreSQL's
# to_timestamp overflows well past it, and no schedule needs more).
LATEST_PERIOD_START = 253_402_300_799


@dataclass(frozen=True)
class JobRunRow:
    job: str
    period_start: int
    result: str
    finish_time: datetime


@dataclass(frozen=True)
class EventCountRow:
    day: str
    subject: str
    count: int


@dataclass(frozen=True)
class AuditRow:
    id: int
    create_time: datetime
    action: str
    actor: str
    target: str
    client_ip: str
    user_agent: str
    request_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class SystemLogic:
    def __init__(
        self,
        pool: Pool,
        extra_actions: Mapping[str, JobAction] | None = None,
        retention: Policy | None = None,
    ) -> None:
        """``extra_actions``: jobs whose work belongs to another service, wired in server/main.py;
        ``retention``: how long the purge jobs keep operational rows (the settings)."""
        self._pool = pool
        purges = Retention(pool, retention)
        self._actions = {
            **ACTIONS,
            "outbox-purge": purges.purge_outbox,
            "retention-purge": purges.purge,
            **(extra_actions or {}),
        }
        missing = sorted({job.name for job in JOBS} - set(self._actions))
        if missing:  # fail at start-up, not at the first tick
            raise ValueError(f"scheduled jobs without an action: {', '.join(missing)}")

    async def run_job(self, name: str, period_start: int) -> tuple[JobRunRow, bool]:
        try:
            job = scheduled_job(name)
        except KeyError:
            raise InvalidArgument.for_field("job", f"unknown job {name!r}") from None
        if not 0 <= period_start <= LATEST_PERIOD_START:
            raise InvalidArgument.for_field(
                "period_start", "must be a Unix time between 1970 and the end of 9999"
            )
        start = period_start or job.period_start(time.time())
        if start % job.period_s:
            raise InvalidArgument.for_field("period_start", f"must be a multiple of {job.period_s}")
        async with self._pool.connection() as conn, conn.transaction():
            claimed = await QUERIES.scalar(conn, "claim_job_run", job=name, period_start=start)
            if claimed is not None:
                result = await self._actions[name](conn)
                await QUERIES.execute(conn, "finish_job_run", job=name, period_start=start, result=result)
            row = await QUERIES.one(conn, "get_job_run", JobRunRow, job=name, period_start=start)
        assert row is not None
        return row, claimed is not None

    async def record_event(
        self, key: idempotency.RequestKey, subject: str, occurred: datetime | None
    ) -> bool:
        day: date = (occurred or datetime.now(UTC)).astimezone(UTC).date()
        async with self._pool.connection() as conn, conn.transaction():
            if await idempotency.claim(conn, key) is not None:
                return False
            await QUERIES.execute(conn, "count_event", day=day, subject=subject)
            await idempotency.remember(conn, key, b"1")
        return True

    async def event_counts(self, days: int) -> list[EventCountRow]:
        async with self._pool.connection() as conn:
            return await QUERIES.all(conn, "list_event_counts", EventCountRow, days=days)

    async def audit_events(
        self, *, action: str, actor: str, target: str, before_id: int, limit: int
    ) -> list[AuditRow]:
        async with self._pool.connection() as conn:
            return await QUERIES.all(
                conn,
                "list_audit_events",
                AuditRow,
                action=action,
                actor=actor,
                target=target,
                before_id=before_id,
                limit=limit,
            )
