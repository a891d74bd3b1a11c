"""Provider-sync worker: each queued sync run -> ProvidersService.RunSync (once per run)."""

from __future__ import annotations

import grpc
from google.protobuf.message import DecodeError
from smm.v1 import events_pb2
from smm.v1 import providers_service_pb2 as pb
from smm.v1 import providers_service_pb2_grpc as pb_grpc

from core.config import Settings
from core.events import Durable
from workers.rpc import RpcContext
from workers.runner import Consumer, Event, Ok, Outcome, Permanent, Progress, outcome_of_rpc_error

SYNC_REQUESTED = Durable(
    "provider-sync-requested", "PROVIDERS", "smm.providers.sync.requested", ack_wait_s=600.0
)
# A sync of thousands of services takes seconds; the RPC's own deadline is its budget.
SYNC_DEADLINE_S = 540.0


def consumers(rpc: RpcContext, settings: Settings) -> list[Consumer]:
    stub = pb_grpc.ProvidersServiceStub(rpc.channel)

    async def handle(event: Event, progress: Progress) -> Outcome:
        try:
            requested = events_pb2.ProviderSyncRequested.FromString(event.payload)
        except DecodeError:
            return Permanent("the event is not a ProviderSyncRequested")
        request = pb.RunSyncRequest(id=requested.sync_run_id, request_id=event.id)
        try:
            await stub.RunSync(request, metadata=rpc.metadata, timeout=SYNC_DEADLINE_S)
        except grpc.aio.AioRpcError as exc:
            return outcome_of_rpc_error(exc)
        return Ok()

    return [Consumer(SYNC_REQUESTED, handle)]
