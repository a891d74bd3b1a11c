"""The scheduler: publishes one ``smm.schedule.<job>`` tick per job period.

Every tick carries ``Nats-Msg-Id = <job>:<period start>``; the SCHEDULE stream's duplicate window
spans the longest period, so any number of scheduler copies fire each job once per period. The
server's ``job_runs`` key is the second line of defence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from nats.aio.client import Client as NATS
from smm.v1 import events_pb2

from core.events import EVENT_ID, MSG_ID, Namespace, ensure_streams
from core.schedule import JOBS, Job

log = logging.getLogger(__name__)


def tick_id(job: Job, period_start: int) -> str:
    return f"{job.name}:{period_start}"


class Scheduler:
    def __init__(
        self,
        nc: NATS,
        ns: Namespace,
        jobs: tuple[Job, ...] = JOBS,
        *,
        clock: Callable[[], float] = time.time,
        interval_s: float = 1.0,
    ) -> None:
        self._js = nc.jetstream()
        self._ns = ns
        self._jobs = jobs
        self._clock = clock
        self._interval_s = interval_s
        self._fired: dict[str, int] = {}

    async def run(self, stop: asyncio.Event) -> None:
        await ensure_streams(self._js, self._ns)
        while not stop.is_set():
            await self.tick()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await stop.wait()

    async def tick(self) -> int:
        """Publish the current period of every job not yet published by this copy."""
        now = self._clock()
        published = 0
        for job in self._jobs:
            start = job.period_start(now)
            if self._fired.get(job.name) == start:
                continue
            message_id = tick_id(job, start)
            payload = events_pb2.ScheduleTick(job=job.name, period_start=start).SerializeToString()
            try:
                await self._js.publish(
                    self._ns.subject(f"smm.schedule.{job.name}"),
                    payload,
                    headers={MSG_ID: message_id, EVENT_ID: message_id},
                )
            except Exception as exc:  # NATS down: try again on the next tick
                log.warning("could not publish %s: %s", message_id, type(exc).__name__)
                continue
            self._fired[job.name] = start
            published += 1
        return published
