"""Notification email: each domain event -> NotificationsService.PlanNotifications -> render ->
the configured transport -> RecordDelivery.

No domain logic here: the server decides who gets what (preferences, suppressions, defaults) and
records each message once per event, recipient and template; this worker renders and sends. The transport
gets an idempotency key made of the event id and the message id, so a redelivered event (a crash
after the send and before the ack) never sends twice through Resend; the server plans it with what
the first planning stored, so the request is the same and Resend replays its first answer (the
email id that later bounces name). Transient transport errors are retried with back-off; permanent
ones, and a message that cannot be rendered (deterministic: a retry would fail the same way), are
recorded failed and dead-lettered with the reason, after the event's other messages (other
recipients) have been sent.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from email.message import EmailMessage
from email.utils import make_msgid
from typing import TYPE_CHECKING

import grpc
from google.protobuf import json_format
from smm.v1 import notifications_service_pb2 as pb
from smm.v1 import notifications_service_pb2_grpc as pb_grpc

from core.config import Settings
from core.events import Durable
from workers.mail.render import RENDER_ERRORS, Brand, render, render_error
from workers.mail.transport import Transport
from workers.mail.transports import (
    IdempotencyConflictError,
    PermanentMailError,
    TransientMailError,
    make_transport,
)
from workers.rpc import RpcContext
from workers.runner import Consumer, Event, Ok, Outcome, Permanent, Progress, Retry, outcome_of_rpc_error

if TYPE_CHECKING:  # only in the .pyi: what the stub is on an aio channel
    from smm.v1.notifications_service_pb2_grpc import NotificationsServiceAsyncStub

log = logging.getLogger(__name__)
DURABLES = (
    Durable("email-orders", "ORDERS", "smm.orders.>"),
    Durable("email-wallet", "WALLET", "smm.wallet.>"),
    Durable("email-api-keys", "ACCOUNTS", "smm.accounts.api_key.created"),
    Durable("email-providers", "PROVIDERS", "smm.providers.alert.>"),
    Durable("email-dlq", "DLQ", "smm.dlq.>"),
)
CONFLICT_NOTE = (
    "an earlier attempt under this idempotency key was accepted with other content (409):"
    " its email id is unknown, so its bounces cannot be matched"
)


def notifying(durable: Durable, settings: Settings) -> Durable:
    """A durable that tells people: created late, it starts at the recent past, not at the
    oldest event the stream holds (``SMM_NOTIFY_START_WINDOW_S``; ``Durable.start_window_s``)."""
    return replace(durable, start_window_s=settings.notify_start_window_s)


def transport_from(settings: Settings) -> Transport:
    return make_transport(
        settings.mail_transport,
        mail_dir=settings.mail_path,
        smtp_host=settings.smtp_host,
        smtp_port=settings.smtp_port,
        smtp_username=settings.smtp_username,
        smtp_password=settings.smtp_password.get_secret_value(),
        smtp_starttls=settings.smtp_starttls,
        smtp_cafile=settings.smtp_ca_file or None,
        resend_api_key=settings.resend_api_key.get_secret_value(),
        resend_api_url=settings.resend_api_url,
        from_address=settings.mail_from,
    )


def brand_from(settings: Settings) -> Brand:
    return Brand(panel_name=settings.panel_name, primary_color=settings.brand_color, web_url=settings.web_url)


def message_for(planned: pb.PlannedMessage, brand: Brand, sender: str, key: str) -> EmailMessage:
    context = json_format.MessageToDict(planned.context)
    rendered = render(
        planned.template,
        context,
        brand,
        locale=planned.locale or "en",
        # The body links to the confirmation page; only the header's one-click URL unsubscribes.
        unsubscribe_url=planned.unsubscribe_page_url,
    )
    message = EmailMessage()
    message["From"] = sender
    message["To"] = planned.to
    message["Subject"] = rendered.subject
    # Derived from the idempotency key: a resend is recognisably the same message.
    message["Message-ID"] = make_msgid(idstring=key.replace(":", "."), domain="smm.local")
    if planned.unsubscribe_url:
        message["List-Unsubscribe"] = f"<{planned.unsubscribe_url}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message


def consumers(rpc: RpcContext, settings: Settings, transport: Transport | None = None) -> list[Consumer]:
    stub = pb_grpc.NotificationsServiceStub(rpc.channel)
    carrier = transport or transport_from(settings)
    brand = brand_from(settings)

    async def handle(event: Event, progress: Progress) -> Outcome:
        try:
            plan = await plan_emails(stub, rpc, event)
        except grpc.aio.AioRpcError as exc:
            return outcome_of_rpc_error(exc)
        refused: list[str] = []  # one recipient's refusal never holds back the others' messages
        for planned in plan.messages:
            if planned.status != "queued":
                continue  # sent on an earlier delivery of this event
            key = f"{event.id}:{planned.message_id}"
            sent_id, note = "", ""
            error, refusal = "", ""  # why the message cannot go out: its record, the dead letter's
            try:
                message = message_for(planned, brand, settings.mail_from, key)
            except RENDER_ERRORS as exc:  # deterministic: every retry would fail the same way
                error = render_error(exc)
                refusal = f"message {planned.message_id} cannot be rendered: {error}"
            else:
                try:
                    sent_id = await carrier.send(message, idempotency_key=key)
                except IdempotencyConflictError:
                    # An earlier attempt under this key was accepted (then we crashed) with other
                    # content: the message is planned with what its first planning stored, so only
                    # a change of templates or settings in between gets here. Resend's 409 names no
                    # email id, so this message's bounces cannot be matched (docs/NOTIFICATIONS.md).
                    note = CONFLICT_NOTE
                except TransientMailError as exc:
                    return Retry(f"the mail transport failed for now: {exc}")
                except PermanentMailError as exc:
                    error = str(exc)
                    refusal = f"the mail transport refused message {planned.message_id}: {exc}"
            status = "failed" if refusal else "sent"
            try:
                await record_delivery(
                    stub, rpc, planned.message_id, status, sent_id, error or note, settings.mail_transport
                )
            except grpc.aio.AioRpcError as exc:
                return outcome_of_rpc_error(exc)  # if sent, the redelivery is deduplicated by the key
            if refusal:
                refused.append(refusal)
        if refused:
            return Permanent("; ".join(refused))
        return Ok()

    return [Consumer(notifying(durable, settings), handle) for durable in DURABLES]


async def plan_emails(
    stub: NotificationsServiceAsyncStub, rpc: RpcContext, event: Event
) -> pb.PlanNotificationsResponse:
    """The event's email messages, each recorded once (a redelivery gets the same rows back)."""
    request = pb.PlanNotificationsRequest(
        request_id=event.id, subject=event.subject, payload=event.payload, headers=event.headers
    )
    plan: pb.PlanNotificationsResponse = await stub.PlanNotifications(
        request, metadata=rpc.metadata, timeout=rpc.timeout_s
    )
    return plan


async def record_delivery(
    stub: NotificationsServiceAsyncStub,
    rpc: RpcContext,
    message_id: int,
    status: str,
    sent_id: str,
    error: str,
    transport: str,
) -> None:
    request = pb.RecordDeliveryRequest(
        message_id=message_id,
        status=status,
        transport=transport,
        transport_message_id=sent_id,
        error=error[:1000],
    )
    await stub.RecordDelivery(request, metadata=rpc.metadata, timeout=rpc.timeout_s)
