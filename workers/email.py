"""Email worker: account emails (AccountsService.PrepareAccountEmail -> a transport) and, through
workers/notify.py, every notification email.

The event names only the user and the kind of message; the link is minted by the server when
this worker asks for it and goes straight into the message, never into a log line.
"""

from __future__ import annotations

import logging
from email.message import EmailMessage
from email.utils import make_msgid

import grpc
from google.protobuf.message import DecodeError
from smm.v1 import accounts_service_pb2 as pb
from smm.v1 import accounts_service_pb2_grpc as pb_grpc
from smm.v1 import events_pb2

from core.config import Settings
from core.events import Durable
from workers.mail.render import RENDER_ERRORS, render, render_error
from workers.mail.transport import Transport
from workers.mail.transports import IdempotencyConflictError, PermanentMailError, TransientMailError
from workers.notify import brand_from, notifying, transport_from
from workers.notify import consumers as notification_consumers
from workers.rpc import RpcContext
from workers.runner import Consumer, Event, Ok, Outcome, Permanent, Progress, Retry, outcome_of_rpc_error

log = logging.getLogger(__name__)
ACCOUNT_EMAILS = Durable("email-account", "ACCOUNTS", "smm.accounts.email.requested")


TEMPLATES = {
    pb.ACCOUNT_EMAIL_KIND_VERIFY_EMAIL: "verify_email",
    pb.ACCOUNT_EMAIL_KIND_RESET_PASSWORD: "password_reset",
    pb.ACCOUNT_EMAIL_KIND_CHANGE_EMAIL: "email_change",
    pb.ACCOUNT_EMAIL_KIND_CHANGE_EMAIL_NOTICE: "email_change_notice",
}


def account_message(prepared: pb.PrepareAccountEmailResponse, settings: Settings) -> EmailMessage:
    if prepared.kind == pb.ACCOUNT_EMAIL_KIND_CHANGE_EMAIL_NOTICE:
        context: dict[str, object] = {"name": prepared.name, "new_email": prepared.new_email}
    else:
        expires = prepared.link_expire_time.ToDatetime().strftime("%Y-%m-%d %H:%M UTC")
        context = {"name": prepared.name, "link": prepared.link, "expires": expires}
    rendered = render(TEMPLATES[prepared.kind], context, brand_from(settings))
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = prepared.to
    message["Subject"] = rendered.subject
    message["Message-ID"] = make_msgid(domain="smm.local")
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message


def consumers(rpc: RpcContext, settings: Settings, transport: Transport | None = None) -> list[Consumer]:
    """Account emails (links minted at send time) and every notification email."""
    stub = pb_grpc.AccountsServiceStub(rpc.channel)
    carrier = transport or transport_from(settings)

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
            message = account_message(prepared, settings)
        except RENDER_ERRORS as exc:  # deterministic: a retry would fail again, and mint another link
            return Permanent(f"the account email cannot be rendered: {render_error(exc)}")
        try:
            await carrier.send(message, idempotency_key=event.id)
        except IdempotencyConflictError:
            return Ok()  # a redelivery: the first attempt's message (with its link) was delivered
        except (OSError, TransientMailError) as exc:
            log.warning(
                "account email not sent yet", extra={"event_id": event.id, "error": type(exc).__name__}
            )
            return Retry(f"the transport failed ({type(exc).__name__})")
        except PermanentMailError as exc:
            return Permanent(f"the transport refused the account email: {exc}")
        return Ok()

    return [
        Consumer(notifying(ACCOUNT_EMAILS, settings), handle),
        *notification_consumers(rpc, settings, carrier),
    ]
