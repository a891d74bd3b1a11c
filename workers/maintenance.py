"""Maintenance worker: turns each scheduler tick into SystemService.RunJob (once per period); a
tick a whole period late is dropped, not run."""

from __future__ import annotations

import logging
import time

import grpc
from google.protobuf.message import DecodeError
from smm.v1 import events_pb2
from smm.v1 import system_service_pb2 as pb
from smm.v1 import system_service_pb2_grpc as pb_grpc

from core.config import Settings
from core.events import Durable
from core.schedule import job
from workers.rpc import RpcContext
from workers.runner import Consumer, Event, Ok, Outcome, Permanent, Progress, outcome_of_rpc_error

TICKS = Durable("maintenance-schedule-tick", "SCHEDULE", "smm.schedule.>", ack_wait_s=300.0)
log = logging.getLogger(__name__)


def stale(tick: events_pb2.ScheduleTick, now_s: float) -> bool:
    """A tick a whole period late (queued while this worker was down or busy): the scheduler has
    published a later period's since, so running it would only repeat the job (the SCHEDULE stream
    keeps ticks for two days: thousands of order polls, an alert per hour missed)."""
    try:
        period_s = job(tick.job).period_s
    except KeyError:  # not a job this version knows: the server says so
        return False
    return now_s - tick.period_start >= 2 * period_s


def consumers(rpc: RpcContext, settings: Settings) -> list[Consumer]:
    stub = pb_grpc.SystemServiceStub(rpc.channel)

    async def handle(event: Event, progress: Progress) -> Outcome:
        try:
            tick = events_pb2.ScheduleTick.FromString(event.payload)
        except DecodeError:
            return Permanent("the tick is not a ScheduleTick")
        if stale(tick, time.time()):
            log.info("skipped the %s tick of %s: a period or more late", tick.job, tick.period_start)
            return Ok()
        request = pb.RunJobRequest(job=tick.job, period_start=tick.period_start, request_id=event.id)
        try:
            # Jobs may take minutes: the RPC's own deadline is the job's budget.
            await stub.RunJob(request, metadata=rpc.metadata, timeout=max(rpc.timeout_s, 240.0))
        except grpc.aio.AioRpcError as exc:
            return outcome_of_rpc_error(exc)
        return Ok()

    return [Consumer(TICKS, handle)]
