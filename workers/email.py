"""Email worker: one account email event -> AccountsService.PrepareAccountEmail -> a transport.

The event names only the user and the kind of message; the link is minted by the server when
this worker asks for it and goes straight into the message, never into a log line.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf.message import DecodeError
from smm.v1 import accounts_service_pb2 as pb
from smm.v1 import accounts_service_pb2_grpc as pb_grpc
from smm.v1 import events_pb2

from core.config import Settings
from core.events import Durable
from workers.mail.compose import Sender, compose
from workers.mail.eml import EmlTransport
from workers.mail.transport import Transport
from workers.rpc import RpcContext
from workers.runner import Consumer, Event, Ok, Outcome, Permanent, Progress, Retry, outcome_of_rpc_error

log = logging.getLogger(__name__)
ACCOUNT_EMAILS = Durable("email-account", "ACCOUNTS", "smm.accounts.email.requested")


def consumers(rpc: RpcContext, settings: Settings, transport: Transport | None = None) -> list[Consumer]:
    stub = pb_grpc.AccountsServiceStub(rpc.channel)
    sender = Sender(settings.panel_name, settings.mail_from)
    carrier = transport or EmlTransport(settings.mail_path)

    async def handle(event: Event, progress: Progress) -> Outcome:
        try:
            requested = events_pb2.AccountEmailRequested.FromString(event.payload)
        except DecodeError:
            return Permanent("the event is not an AccountEmailRequested")
        request = pb.PrepareAccountEmailRequest(
            request_id=event.id, user_id=requested.user_id, kind=requested.kind
        )
        try:
            prepared = await stub.PrepareAccountEmail(request, metadata=rpc.metadata, timeout=rpc.timeout_s)
        except grpc.aio.AioRpcError as exc:
            return outcome_of_rpc_error(exc)
        if not prepared.send:
            log.info("account email skipped", extra={"event_id": event.id, "reason": prepared.skip_reason})
            return Ok()
        try:
            await carrier.send(compose(prepared, sender), idempotency_key=event.id)
        except OSError as exc:
            log.warning(
                "account email not sent yet", extra={"event_id": event.id, "error": type(exc).__name__}
            )
            return Retry(f"the transport failed ({type(exc).__name__})")
        return Ok()

    return [Consumer(ACCOUNT_EMAILS, handle)]
