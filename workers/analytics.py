"""Analytics worker: counts every domain event once (SystemService.RecordEvent)."""

from __future__ import annotations

import grpc
from smm.v1 import system_service_pb2 as pb
from smm.v1 import system_service_pb2_grpc as pb_grpc

from core.config import Settings
from core.events import Durable
from workers.rpc import RpcContext
from workers.runner import Consumer, Event, Ok, Outcome, Progress, outcome_of_rpc_error

COUNTED_STREAMS = ("CATALOG", "ACCOUNTS", "PROVIDERS", "ORDERS", "WALLET")


def consumers(rpc: RpcContext, settings: Settings) -> list[Consumer]:
    stub = pb_grpc.SystemServiceStub(rpc.channel)

    async def handle(event: Event, progress: Progress) -> Outcome:
        request = pb.RecordEventRequest(request_id=event.id, subject=event.subject)
        try:
            await stub.RecordEvent(request, metadata=rpc.metadata, timeout=rpc.timeout_s)
        except grpc.aio.AioRpcError as exc:
            return outcome_of_rpc_error(exc)
        return Ok()

    return [
        Consumer(Durable(f"analytics-{stream.lower()}", stream, f"smm.{stream.lower()}.>"), handle)
        for stream in COUNTED_STREAMS
    ]
