"""Dispatch worker: each new order -> OrdersService.SubmitOrder; each poll tick -> PollOrders.

No domain logic: the server decides what to send where and records it before calling a provider.
An UNAVAILABLE answer (the provider could not be reached, nothing was sent) is retried with
back-off; the RPC is idempotent on the order's state, so a redelivered event sends nothing twice.
A redelivery that finds the order being sent takes it for a send its earlier delivery left
interrupted (review); a first delivery cannot have left one, so it leaves the order to whoever is
sending it (``resend``: the poll tick's pass of stalled orders, or a duplicate event's call).

An order event given up on after those retries (the database, the gRPC server or the provider
away for longer than about 13 minutes) is not left for staff to replay: ``dispatch-dead-orders``
reads its dead letter and tries again every 10 minutes for a week (``resend``: an order another
call is sending meanwhile, the poll tick's, is left alone), so the order goes out once the outage
is over. A letter dead for another reason (the event or order is wrong: the same every time) is
left to staff; the letter itself stays listed (``smm dlq list``) either way.
"""

from __future__ import annotations

import grpc
from google.protobuf.message import DecodeError
from smm.v1 import events_pb2
from smm.v1 import orders_service_pb2 as pb
from smm.v1 import orders_service_pb2_grpc as pb_grpc

from core.config import Settings
from core.events import DLQ_REASON, Durable
from workers.rpc import RpcContext
from workers.runner import GAVE_UP, Consumer, Event, Ok, Outcome, Permanent, Progress, outcome_of_rpc_error

ORDER_CREATED = Durable("dispatch-order-created", "ORDERS", "smm.orders.order.created", ack_wait_s=120.0)
POLL_REQUESTED = Durable("dispatch-poll-requested", "ORDERS", "smm.orders.poll.requested", ack_wait_s=300.0)
ORDER_DEAD_LETTERS = Durable(
    "dispatch-dead-orders",
    "DLQ",
    f"smm.dlq.{ORDER_CREATED.name}",
    max_deliver=7 * 24 * 6,
    ack_wait_s=120.0,
    backoff_s=(600.0,),
    # Created on a deployment that already has letters: only the last hour's (older ones staff
    # have had the alerts of, and may have handled on purpose).
    start_window_s=3600.0,
)
# A provider call has its own timeout; the RPC's deadline covers it and the bookkeeping.
SUBMIT_DEADLINE_S = 90.0
POLL_DEADLINE_S = 240.0


def consumers(rpc: RpcContext, settings: Settings) -> list[Consumer]:
    stub = pb_grpc.OrdersServiceStub(rpc.channel)

    async def submit(event: Event, progress: Progress) -> Outcome:
        try:
            created = events_pb2.OrderCreated.FromString(event.payload)
        except DecodeError:
            return Permanent("the event is not an OrderCreated")
        # Only a redelivery can follow a call of its own that died mid-send (review); a first
        # delivery meeting an order being sent (the poll tick's pass, a duplicate event) leaves it.
        request = pb.SubmitOrderRequest(id=created.order_id, request_id=event.id, resend=event.delivery == 1)
        try:
            await stub.SubmitOrder(request, metadata=rpc.metadata, timeout=SUBMIT_DEADLINE_S)
        except grpc.aio.AioRpcError as exc:
            return outcome_of_rpc_error(exc)
        return Ok()

    async def submit_dead_letter(event: Event, progress: Progress) -> Outcome:
        if not event.headers.get(DLQ_REASON, "").startswith(GAVE_UP):
            return Ok()  # refused for good: the letter waits for staff
        try:
            created = events_pb2.OrderCreated.FromString(event.payload)
        except DecodeError:
            return Ok()
        request = pb.SubmitOrderRequest(id=created.order_id, request_id=event.id, resend=True)
        try:
            await stub.SubmitOrder(request, metadata=rpc.metadata, timeout=SUBMIT_DEADLINE_S)
        except grpc.aio.AioRpcError as exc:
            return outcome_of_rpc_error(exc)
        return Ok()

    async def poll(event: Event, progress: Progress) -> Outcome:
        request = pb.PollOrdersRequest(request_id=event.id)
        try:
            await stub.PollOrders(request, metadata=rpc.metadata, timeout=POLL_DEADLINE_S)
        except grpc.aio.AioRpcError as exc:
            return outcome_of_rpc_error(exc)
        return Ok()

    # New orders are independent: one slow provider call must not hold the others up.
    return [
        Consumer(ORDER_CREATED, submit, concurrency=max(1, settings.dispatch_concurrency)),
        Consumer(POLL_REQUESTED, poll),
        Consumer(ORDER_DEAD_LETTERS, submit_dead_letter),
    ]
