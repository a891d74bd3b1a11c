"""Maintenance worker: turns each scheduler tick into SystemService.RunJob (once per period)."""

from __future__ import annotations

import grpc
from google.protobuf.message import DecodeError
from smm.v1 import events_pb2
from smm.v1 import system_service_pb2 as pb
from smm.v1 import system_service_pb2_grpc as pb_grpc

from core.config import Settings
from core.events import Durable
from workers.rpc import RpcContext
from workers.runner import Consumer, Event, Ok, Outcome, Permanent, Progress, outcome_of_rpc_error

TICKS = Durable("maintenance-schedule-tick", "SCHEDULE", "smm.schedule.>", ack_wait_s=300.0)


def consumers(rpc: RpcContext, settings: Settings) -> list[Consumer]:
    stub = pb_grpc.SystemServiceStub(rpc.channel)

    async def handle(event: Event, progress: Progress) -> Outcome:
        try:
            tick = events_pb2.ScheduleTick.FromString(event.payload)
        except DecodeError:
            return Permanent("the tick is not a ScheduleTick")
        request = pb.RunJobRequest(job=tick.job, period_start=tick.period_start, request_id=event.id)
        try:
            # Jobs may take minutes: the RPC's own deadline is the job's budget.
            await stub.RunJob(request, metadata=rpc.metadata, timeout=max(rpc.timeout_s, 240.0))
        except grpc.aio.AioRpcError as exc:
            return outcome_of_rpc_error(exc)
        return Ok()

    return [Consumer(TICKS, handle)]
