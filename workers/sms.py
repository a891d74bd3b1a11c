"""SMS worker: each event -> NotificationsService.PlanNotifications (channel "sms") -> render ->
the configured SMS transport -> RecordDelivery; phone verification codes through
AccountsService.PrepareAccountSms.

No domain logic here: the server decides who gets a text (opt-ins, verified numbers,
suppressions, the admins' default) and records each message once per event and number. This
worker renders and sends. Twilio has no idempotency key, so each message is recorded as
``sending`` before the call and with its SID after; a message that has a SID is never sent again,
and the remaining window (a crash after Twilio accepted the message and before the SID was
recorded) is documented in workers/texts/twilio_transport.py. Transient failures are retried with
back-off (``Retry-After`` when Twilio gives one); permanent ones are recorded as failed, with
Twilio's error code (the server suppresses numbers that cannot take texts), and dead-lettered once
the event's texts to the other numbers have been sent. A text that cannot be rendered
(``RENDER_ERRORS``, as for email: an unknown template, a context value missing) fails the same way
on every attempt, so it is treated as a refusal too, never retried.

A verification code is minted by the server only when this worker asks for it, after the message
is planned: a redelivery of an event whose text already went out mints nothing (the code the
user holds keeps working). The code goes into the text and nowhere else: not into a log line, an
error, or the message record.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from smm.v1 import accounts_service_pb2 as apb
from smm.v1 import accounts_service_pb2_grpc as apb_grpc
from smm.v1 import events_pb2
from smm.v1 import notifications_service_pb2 as pb
from smm.v1 import notifications_service_pb2_grpc as pb_grpc

from core.config import Settings
from core.events import Durable
from workers.mail.render import RENDER_ERRORS, render_error
from workers.notify import notifying
from workers.rpc import RpcContext
from workers.runner import Consumer, Event, Ok, Outcome, Permanent, Progress, Retry, outcome_of_rpc_error
from workers.texts.render import render
from workers.texts.transport import SmsTransport, TextMessage
from workers.texts.transports import PermanentSmsError, TransientSmsError, make_sms_transport

if TYPE_CHECKING:  # only in the .pyi: what the stubs are on an aio channel
    from smm.v1.notifications_service_pb2_grpc import NotificationsServiceAsyncStub

log = logging.getLogger(__name__)
DURABLES = (
    Durable("sms-orders", "ORDERS", "smm.orders.>"),
    Durable("sms-wallet", "WALLET", "smm.wallet.>"),
    Durable("sms-api-keys", "ACCOUNTS", "smm.accounts.api_key.created"),
    Durable("sms-security", "ACCOUNTS", "smm.accounts.security.changed"),
    Durable("sms-providers", "PROVIDERS", "smm.providers.alert.>"),
    Durable("sms-dlq", "DLQ", "smm.dlq.>"),
)
PHONE_CODES = Durable("sms-phone-codes", "ACCOUNTS", "smm.accounts.sms.requested")
SENDABLE = ("queued", "sending")


def sms_transport_from(settings: Settings) -> SmsTransport:
    return make_sms_transport(
        settings.sms_transport,
        sms_dir=settings.sms_path,
        twilio_account_sid=settings.twilio_account_sid,
        twilio_auth_token=settings.twilio_auth_token.get_secret_value(),
        twilio_from=settings.twilio_from,
        twilio_api_url=settings.twilio_api_url,
    )


def minutes_until(expire: datetime, now: datetime | None = None) -> int:
    left = (expire - (now or datetime.now(UTC))).total_seconds()
    return max(1, math.ceil(left / 60))


def consumers(rpc: RpcContext, settings: Settings, transport: SmsTransport | None = None) -> list[Consumer]:
    stub = pb_grpc.NotificationsServiceStub(rpc.channel)
    accounts = apb_grpc.AccountsServiceStub(rpc.channel)
    carrier = transport or sms_transport_from(settings)
    kind = settings.sms_transport

    async def plan(event: Event) -> pb.PlanNotificationsResponse:
        request = pb.PlanNotificationsRequest(
            request_id=event.id,
            subject=event.subject,
            payload=event.payload,
            headers=event.headers,
            channel="sms",
        )
        response: pb.PlanNotificationsResponse = await stub.PlanNotifications(
            request, metadata=rpc.metadata, timeout=rpc.timeout_s
        )
        return response

    async def deliver(event: Event, planned: pb.PlannedMessage, extra: dict[str, object]) -> Outcome | None:
        """Send one planned text; None when it went out, else the event's outcome."""
        if planned.status == "sending":
            log.warning(
                "an earlier attempt at a text has an unknown outcome; sending it again",
                extra={"event_id": event.id, "message_id": planned.message_id},
            )
        context = {**json_format.MessageToDict(planned.context), **extra}
        try:
            body = render(
                planned.template, context, panel_name=settings.panel_name, locale=planned.locale or "en"
            )
        except RENDER_ERRORS as exc:  # deterministic: every retry would fail the same way
            error = render_error(exc)
            await _record(stub, rpc, planned.message_id, "failed", kind, error=error)
            return Permanent(f"message {planned.message_id} cannot be rendered: {error}")
        await _record(stub, rpc, planned.message_id, "sending", kind)
        message = TextMessage(planned.to, body, planned.status_callback_url)
        try:
            sid = await carrier.send(message, idempotency_key=f"{event.id}:{planned.message_id}")
        except TransientSmsError as exc:
            if not exc.ambiguous:  # refused for now: nothing went out
                await _record(stub, rpc, planned.message_id, "queued", kind, error=str(exc))
            return Retry(f"the SMS transport failed for now: {exc}", delay_s=exc.retry_after_s)
        except PermanentSmsError as exc:
            await _record(stub, rpc, planned.message_id, "failed", kind, error=str(exc), code=exc.code)
            return Permanent(f"the SMS transport refused message {planned.message_id}: {exc}")
        await _record(stub, rpc, planned.message_id, "sent", kind, sid=sid)
        return None

    async def handle(event: Event, progress: Progress) -> Outcome:
        refused: list[str] = []  # one number's refusal never holds back the others' texts
        try:
            for planned in (await plan(event)).messages:
                if planned.status not in SENDABLE:
                    continue  # sent on an earlier delivery of this event
                outcome = await deliver(event, planned, {})
                if isinstance(outcome, Permanent):
                    refused.append(outcome.reason)
                elif outcome is not None:
                    return outcome
        except grpc.aio.AioRpcError as exc:
            return outcome_of_rpc_error(exc)
        return Permanent("; ".join(refused)) if refused else Ok()

    async def handle_code(event: Event, progress: Progress) -> Outcome:
        try:
            requested = events_pb2.AccountSmsRequested.FromString(event.payload)
        except DecodeError:
            return Permanent("the event is not an AccountSmsRequested")
        try:
            for planned in (await plan(event)).messages:
                if planned.status not in SENDABLE:
                    continue  # the code went out on an earlier delivery: mint no other
                request = apb.PrepareAccountSmsRequest(
                    request_id=event.id, user_id=requested.user_id, kind=requested.kind, to=planned.to
                )
                prepared = await accounts.PrepareAccountSms(
                    request, metadata=rpc.metadata, timeout=rpc.timeout_s
                )
                if not prepared.send:
                    log.info(
                        "account text skipped", extra={"event_id": event.id, "reason": prepared.skip_reason}
                    )
                    await _record(
                        stub,
                        rpc,
                        planned.message_id,
                        "failed",
                        kind,
                        error=f"not sent: {prepared.skip_reason}",
                    )
                    continue
                minutes = minutes_until(prepared.code_expire_time.ToDatetime(tzinfo=UTC))
                outcome = await deliver(event, planned, {"code": prepared.code, "minutes": minutes})
                if outcome is not None:
                    return outcome
        except grpc.aio.AioRpcError as exc:
            return outcome_of_rpc_error(exc)
        return Ok()

    return [
        Consumer(notifying(PHONE_CODES, settings), handle_code),
        *(Consumer(notifying(durable, settings), handle) for durable in DURABLES),
    ]


async def _record(
    stub: NotificationsServiceAsyncStub,
    rpc: RpcContext,
    message_id: int,
    status: str,
    transport: str,
    *,
    sid: str = "",
    error: str = "",
    code: str = "",
) -> None:
    request = pb.RecordDeliveryRequest(
        message_id=message_id,
        status=status,
        transport=transport,
        transport_message_id=sid,
        error=error[:1000],
        channel="sms",
        error_code=code,
    )
    await stub.RecordDelivery(request, metadata=rpc.metadata, timeout=rpc.timeout_s)
