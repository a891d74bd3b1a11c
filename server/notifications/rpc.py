"""NotificationsService servicer: proto <-> domain, nothing else."""

from __future__ import annotations

import grpc
from google.protobuf import struct_pb2
from smm.v1 import notifications_service_pb2 as pb
from smm.v1 import notifications_service_pb2_grpc as pb_grpc

from server.common.convert import timestamp
from server.common.errors import FieldViolation, collect
from server.notifications.logic import DOMAIN, Notifications, Planned, Record
from server.notifications.sms import SmsNotifications

SVIX_HEADERS = ("svix-id", "svix-timestamp", "svix-signature")
TWILIO_SIGNATURE = "x-twilio-signature"
CHANNELS = ("email", "sms")


def channel_of(value: str) -> str:
    channel = value or "email"
    if channel not in CHANNELS:
        collect([FieldViolation("channel", "must be email or sms")], domain=DOMAIN)
    return channel


def planned_to_proto(planned: Planned) -> pb.PlannedMessage:
    context = struct_pb2.Struct()
    context.update(planned.context)
    return pb.PlannedMessage(
        message_id=planned.message_id,
        to=planned.to,
        template=planned.template,
        context=context,
        unsubscribe_url=planned.unsubscribe_url,
        locale="en",
        status=planned.status,
        channel=planned.channel,
        status_callback_url=planned.status_callback_url,
        unsubscribe_page_url=planned.unsubscribe_page_url,
    )


def record_to_proto(row: Record) -> pb.NotificationRecord:
    return pb.NotificationRecord(
        id=row.id,
        channel=row.channel,
        to=row.to_address,
        template=row.template,
        status=row.status,
        transport=row.transport,
        error=row.error,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
    )


class NotificationsServicer(pb_grpc.NotificationsServiceServicer):
    def __init__(self, logic: Notifications, sms: SmsNotifications) -> None:
        self._logic = logic
        self._sms = sms

    async def PlanNotifications(
        self, request: pb.PlanNotificationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.PlanNotificationsResponse:
        planner = self._sms if channel_of(request.channel) == "sms" else self._logic
        planned = await planner.plan(
            request.request_id, request.subject, request.payload, dict(request.headers)
        )
        return pb.PlanNotificationsResponse(messages=[planned_to_proto(p) for p in planned])

    async def RecordDelivery(
        self, request: pb.RecordDeliveryRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordDeliveryResponse:
        if channel_of(request.channel) == "sms":
            await self._sms.record(
                request.message_id,
                request.status,
                request.transport,
                request.transport_message_id,
                request.error,
                request.error_code,
            )
        else:
            await self._logic.record(
                request.message_id,
                request.status,
                request.transport,
                request.transport_message_id,
                request.error,
            )
        return pb.RecordDeliveryResponse()

    async def ReceiveResendWebhook(
        self, request: pb.ReceiveResendWebhookRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReceiveResendWebhookResponse:
        sent = dict(context.invocation_metadata() or ())
        headers = {name: str(sent.get(name, "")) for name in SVIX_HEADERS}
        return pb.ReceiveResendWebhookResponse(
            applied=await self._logic.resend_webhook(request.http_body.data, headers)
        )

    async def ReceiveTwilioWebhook(
        self, request: pb.ReceiveTwilioWebhookRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReceiveTwilioWebhookResponse:
        sent = dict(context.invocation_metadata() or ())
        signature = str(sent.get(TWILIO_SIGNATURE, ""))
        applied = await self._sms.twilio_webhook(request.http_body.data, signature, request.message_id)
        return pb.ReceiveTwilioWebhookResponse(applied=applied)

    async def Unsubscribe(
        self, request: pb.UnsubscribeRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnsubscribeResponse:
        return pb.UnsubscribeResponse(topic=await self._logic.unsubscribe(request.token))

    async def DescribeUnsubscribe(
        self, request: pb.DescribeUnsubscribeRequest, context: grpc.aio.ServicerContext
    ) -> pb.DescribeUnsubscribeResponse:
        topic, subscribed = await self._logic.describe_unsubscribe(request.token)
        return pb.DescribeUnsubscribeResponse(topic=topic, subscribed=subscribed)

    async def ListUserNotifications(
        self, request: pb.ListUserNotificationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListUserNotificationsResponse:
        limit = min(max(request.page_size or 50, 1), 500)
        rows = await self._logic.history(request.user_id, limit)
        return pb.ListUserNotificationsResponse(notifications=[record_to_proto(r) for r in rows])
