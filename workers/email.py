"""Email worker: account emails (AccountsService.PrepareAccountEmail -> a transport) and, through
workers/notify.py, every notification email.

The event names only the user and the kind of message. Each account email is first planned
(``NotificationsService.PlanNotifications``: one ``email_messages`` row per event, address and
kind, with no content), then the link is minted by the server when this worker asks for it and
goes straight into the message, never into a log line or the row; the send is recorded with
``RecordDelivery`` (Resend's email id, which its bounces and complaints name), as for every other
email. A redelivery of a message recorded as sent mints and sends nothing.
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
from smm.v1 import notifications_service_pb2 as npb
from smm.v1 import notifications_service_pb2_grpc as npb_grpc

from core.config import Settings
from core.events import Durable
from workers.mail.render import RENDER_ERRORS, render, render_error
from workers.mail.transport import Transport
from workers.mail.transports import IdempotencyConflictError, PermanentMailError, TransientMailError
from workers.notify import CONFLICT_NOTE, brand_from, notifying, plan_emails, record_delivery, transport_from
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
    accounts = pb_grpc.AccountsServiceStub(rpc.channel)
    notifications = npb_grpc.NotificationsServiceStub(rpc.channel)
    carrier = transport or transport_from(settings)

    async def handle(event: Event, progress: Progress) -> Outcome:
        try:
            requested = events_pb2.AccountEmailRequested.FromString(event.payload)
        except DecodeError:
            return Permanent("the event is not an AccountEmailRequested")
        # Planned first, as every email is: the row that records Resend's id (bounces and
        # complaints are matched by it) and that staff see; it never holds the link.
        try:
            plan = await plan_emails(notifications, rpc, event)
        except grpc.aio.AioRpcError as exc:
            return outcome_of_rpc_error(exc)
        if not plan.messages:
            log.info("account email skipped", extra={"event_id": event.id, "reason": "nothing to send"})
        for planned in plan.messages:
            if planned.status != "queued":
                continue  # recorded as sent on an earlier delivery: mint no other link
            outcome = await deliver(event, requested, planned)
            if outcome is not None:
                return outcome
        return Ok()

    async def deliver(
        event: Event, requested: events_pb2.AccountEmailRequested, planned: npb.PlannedMessage
    ) -> Outcome | None:
        """Mint the link, send, record; None when recorded, else the event's outcome."""
        request = pb.PrepareAccountEmailRequest(
            request_id=event.id, user_id=requested.user_id, kind=requested.kind, to=planned.to
        )
        try:
            prepared = await accounts.PrepareAccountEmail(
                request, metadata=rpc.metadata, timeout=rpc.timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            return outcome_of_rpc_error(exc)
        sent_id, note, error, refusal = "", "", "", ""
        if not prepared.send:
            log.info("account email skipped", extra={"event_id": event.id, "reason": prepared.skip_reason})
            error = f"not sent: {prepared.skip_reason}"
        else:
            try:
                message = account_message(prepared, settings)
            except RENDER_ERRORS as exc:  # deterministic: a retry would fail again, and mint another link
                error = render_error(exc)
                refusal = f"the account email cannot be rendered: {error}"
            else:
                try:
                    # The event id, as before rows were recorded: an event in flight across an
                    # upgrade keeps its key.
                    sent_id = await carrier.send(message, idempotency_key=event.id)
                except IdempotencyConflictError:
                    # A redelivery after the worker died between the send and its record: the first
                    # attempt's message (with its link) was delivered; its email id is unknown.
                    note = CONFLICT_NOTE
                except (OSError, TransientMailError) as exc:
                    log.warning(
                        "account email not sent yet",
                        extra={"event_id": event.id, "error": type(exc).__name__},
                    )
                    return Retry(f"the transport failed ({type(exc).__name__})")
                except PermanentMailError as exc:
                    error = str(exc)
                    refusal = f"the transport refused the account email: {exc}"
        status = "failed" if error else "sent"
        try:
            await record_delivery(
                notifications,
                rpc,
                planned.message_id,
                status,
                sent_id,
                error or note,
                settings.mail_transport,
            )
        except grpc.aio.AioRpcError as exc:
            return outcome_of_rpc_error(exc)  # if sent, the redelivery is refused as a duplicate (409)
        return Permanent(refusal) if refusal else None

    return [
        Consumer(notifying(ACCOUNT_EMAILS, settings), handle),
        *notification_consumers(rpc, settings, carrier),
    ]
