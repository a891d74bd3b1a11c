"""OrdersService servicer: proto <-> domain, nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime

import grpc
from smm.v1 import orders_service_pb2 as pb
from smm.v1 import orders_service_pb2_grpc as pb_grpc

from server.common import auth, idempotency
from server.common.convert import request_time, timestamp
from server.common.errors import InvalidArgument, NotFound
from server.common.money import format_micros
from server.common.pagetoken import PageTokenCodec, newest_first_page, page_size
from server.orders import states
from server.orders.admin import OrdersAdmin
from server.orders.aftercare import Aftercare
from server.orders.dispatch import Dispatcher
from server.orders.dripfeed import DripFeed
from server.orders.errors import DOMAIN
from server.orders.fanout import isolated
from server.orders.logic import OrdersLogic, Placement
from server.orders.reconcile import Reconciler
from server.orders.repo import ExchangeRow, OrderEventRow, OrderRow, RefillRow
from server.orders.stalled import StalledOrders
from server.orders.tracking import Tracker
from server.orders.validation import OrderInput
from server.orders.webhooks import ProviderWebhooks

_PREFIX = "ORDER_STATUS_"


def status_enum(status: str) -> pb.OrderStatus.ValueType:
    return pb.OrderStatus.Value(_PREFIX + status.upper())


def shown_remains(row: OrderRow) -> int:
    """What was not delivered. A canceled or failed order charged nothing and released its whole
    hold, so it is the whole quantity (all runs; a package's one unit, a subscription's most),
    whatever the provider last said: clients compute their customer's refund from remains. An
    order no provider has reported on yet (pending, being sent, in review, or sent and not yet
    polled) has delivered nothing: its whole quantity too, as the standard panels and providers
    say (0 read as "delivered in full"). A completed one, 0."""
    if row.status in (states.CANCELED, states.FAILED):
        return row.units
    if row.remains is None and row.status not in states.FINAL:
        return row.units
    return row.remains or 0


def status_name(value: int) -> str:
    if value == pb.ORDER_STATUS_UNSPECIFIED:
        return ""
    if value not in pb.OrderStatus.values():
        raise InvalidArgument.for_field("status", "must be an order status", domain=DOMAIN)
    return pb.OrderStatus.Name(pb.OrderStatus.ValueType(value)).removeprefix(_PREFIX).lower()


def refill_to_proto(row: RefillRow) -> pb.Refill:
    return pb.Refill(
        id=row.id,
        order_id=row.order_id,
        status=row.status,
        message=row.message,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
    )


def order_to_proto(
    row: OrderRow,
    currency: str,
    events: list[OrderEventRow] | None = None,
    refills: list[RefillRow] | None = None,
) -> pb.Order:
    return pb.Order(
        id=row.id,
        service_id=row.service_id,
        service_name=row.service_name,
        status=status_enum(row.status),
        link=row.link,
        quantity=row.quantity,
        runs=row.runs,
        interval=row.interval_minutes,
        price=format_micros(row.price_micros),
        charged=format_micros(row.charged_micros),
        released=format_micros(row.released_micros),
        currency=currency,
        start_count=row.start_count or 0,
        remains=shown_remains(row),
        source=row.source,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        timeline=[
            pb.OrderEvent(status=status_enum(e.status), note=e.note, create_time=timestamp(e.create_time))
            for e in events or []
        ],
        parameters=row.upstream_params,
        status_note=row.status_note,
        refills=[refill_to_proto(r) for r in refills or []],
        cancel_state=row.cancel_state,
        cancel_message=row.cancel_message,
        user_id=row.user_id,
        provider_id=row.provider_id or 0,
        upstream_order_id=row.upstream_order_id,
    )


def customer_view(order: pb.Order) -> pb.Order:
    """The order as its customer sees it: statuses, times and money, but not which provider holds
    it, its id there, or the notes staff and providers' answers write (a provider's "not enough
    funds", a staff reason, a cancel or refill refusal in the provider's words). Resellers would
    otherwise learn where to buy for less; staff see it whole (GetAnyOrder)."""
    order.ClearField("provider_id")
    order.ClearField("upstream_order_id")
    order.ClearField("status_note")
    order.ClearField("cancel_message")
    for event in order.timeline:
        event.ClearField("note")
    for refill in order.refills:
        customer_refill(refill)
    return order


def customer_refill(refill: pb.Refill) -> pb.Refill:
    """A refill as its customer sees it: the status, not the provider's words."""
    refill.ClearField("message")
    return refill


def order_input(request: pb.CreateOrderRequest) -> OrderInput:
    return OrderInput(
        link=request.link,
        quantity=request.quantity,
        runs=request.runs,
        interval=request.interval,
        comments=request.comments,
        usernames=request.usernames,
        hashtags=request.hashtags,
        hashtag=request.hashtag,
        username=request.username,
        media=request.media,
        keywords=request.keywords,
        answer_number=request.answer_number,
        groups=request.groups,
        min=request.min,
        max=request.max,
        posts=request.posts,
        old_posts=request.old_posts,
        delay=request.delay,
        expiry=request.expiry,
        country=request.country,
        device=request.device,
        type_of_traffic=request.type_of_traffic,
        google_keyword=request.google_keyword,
        referring_url=request.referring_url,
    )


def _user(who: auth.Principal) -> int:
    if who.user_id is None:
        raise NotFound("no user is signed in", reason="USER_NOT_FOUND", domain=DOMAIN)
    return who.user_id


def _source(who: auth.Principal, context: grpc.aio.ServicerContext) -> str:
    if who.api_key_id is None:
        return "web"
    # The edge (trusted through the internal token) says when a key came through the reseller endpoint.
    sent = dict(context.invocation_metadata() or ())
    return "reseller" if sent.get("x-smm-source") == "reseller" else "api"


class OrdersServicer(pb_grpc.OrdersServiceServicer):
    def __init__(
        self,
        logic: OrdersLogic,
        dispatcher: Dispatcher,
        tracker: Tracker,
        tokens: PageTokenCodec,
        currency: str,
        *,
        aftercare: Aftercare,
        admin: OrdersAdmin,
        webhooks: ProviderWebhooks,
        dripfeed: DripFeed,
        reconciler: Reconciler,
        stalled: StalledOrders,
    ) -> None:
        self._dripfeed = dripfeed
        self._reconciler = reconciler
        self._stalled = stalled
        self._aftercare = aftercare
        self._admin = admin
        self._webhooks = webhooks
        self._logic = logic
        self._dispatcher = dispatcher
        self._tracker = tracker
        self._tokens = tokens
        self._currency = currency

    async def CreateOrder(
        self, request: pb.CreateOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.Order:
        who = auth.principal()
        placement = Placement(
            user_id=_user(who),
            service_id=request.service_id,
            order=order_input(request),
            source=_source(who, context),
            api_key_id=who.api_key_id,
            idempotency_key=idempotency.checked_request_id(request.request_id) or None,
            request_hash=idempotency.request_hash(request) if request.request_id else None,
        )
        return customer_view(order_to_proto(await self._logic.place(placement), self._currency))

    async def CreateMassOrder(
        self, request: pb.CreateMassOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateMassOrderResponse:
        who = auth.principal()
        results = await self._logic.place_mass(
            _user(who),
            request.lines,
            source=_source(who, context),
            api_key_id=who.api_key_id,
            request_id=idempotency.checked_request_id(request.request_id),
            request_hash=idempotency.request_hash(request) if request.request_id else None,
        )
        lines = [pb.MassOrderLine(line=r.line, order_id=r.order_id, error=r.error) for r in results]
        placed = sum(1 for r in results if r.order_id)
        return pb.CreateMassOrderResponse(lines=lines, placed=placed, refused=len(results) - placed)

    async def ListOrders(
        self, request: pb.ListOrdersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListOrdersResponse:
        user_id = _user(auth.principal())
        size = page_size(request.page_size, default=50, maximum=500)
        status = status_name(request.status)
        filters = {
            "user": user_id,
            "status": status,
            "query": request.query,
            "service_id": request.service_id,
        }
        rows, token = await newest_first_page(
            self._tokens,
            request.page_token,
            filters,
            size,
            lambda before_id, limit: self._logic.list_orders(
                user_id,
                status=status,
                query=request.query,
                service_id=request.service_id,
                before_id=before_id,
                limit=limit,
            ),
        )
        return pb.ListOrdersResponse(
            orders=[customer_view(order_to_proto(r, self._currency)) for r in rows], next_page_token=token
        )

    async def GetOrder(self, request: pb.GetOrderRequest, context: grpc.aio.ServicerContext) -> pb.Order:
        row, events, refills = await self._logic.get(_user(auth.principal()), request.id)
        return customer_view(order_to_proto(row, self._currency, events, refills))

    async def GetOrderStats(
        self, request: pb.GetOrderStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.OrderStats:
        by_status, spend = await self._logic.stats(
            _user(auth.principal()),
            request.period or "day",
            request.periods or 30,
            request.time_zone or "UTC",
        )
        return pb.OrderStats(
            by_status=[pb.StatusCount(status=status_enum(s), count=c) for s, c in by_status],
            spend=[
                pb.SpendPeriod(start=start.isoformat(), orders=n, spent=format_micros(spent))
                for start, n, spent in spend
            ],
            currency=self._currency,
        )

    async def SubmitOrder(
        self, request: pb.SubmitOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.Order:
        order = await self._dispatcher.submit(request.id, resend=request.resend)
        return order_to_proto(order, self._currency)

    async def PollOrders(
        self, request: pb.PollOrdersRequest, context: grpc.aio.ServicerContext
    ) -> pb.PollOrdersResponse:
        if request.limit < 0:  # reached SQL's LIMIT: every step failed and logged, the call said OK
            raise InvalidArgument.for_field("limit", "must not be negative", domain=DOMAIN)
        limit = request.limit or 1000
        # The steps run side by side, each isolated: one that fails is logged and counts nothing,
        # and a provider slow in one step holds up no other step (server/orders/fanout.py).
        (
            (checked, changed),
            sent,
            (runs_checked, runs_changed),
            refills,
            reconciled,
            stalled,
        ) = await asyncio.gather(
            isolated("orders", self._tracker.poll(limit), (0, 0)),
            isolated("drip-feed sends", self._dripfeed.send_all_due(limit), 0),
            isolated("drip-feed runs", self._dripfeed.poll(limit), (0, 0)),
            isolated("refills", self._aftercare.poll_refills(limit), 0),
            isolated("reconcile", self._reconciler.reconcile_due(limit), 0),
            self._stalled.handle(limit),  # two steps, each isolated
        )
        return pb.PollOrdersResponse(
            checked=checked + runs_checked,
            changed=changed + sent + runs_changed + refills + reconciled + stalled,
        )

    async def BatchGetOrders(
        self, request: pb.BatchGetOrdersRequest, context: grpc.aio.ServicerContext
    ) -> pb.BatchGetOrdersResponse:
        ids = _ids(request.ids)
        rows = await self._logic.batch(_user(auth.principal()), ids)
        by_id = {r.id: r for r in rows}
        return pb.BatchGetOrdersResponse(
            orders=[
                customer_view(order_to_proto(by_id[i], self._currency))
                for i in dict.fromkeys(ids)
                if i in by_id
            ]
        )

    async def RefillOrder(
        self, request: pb.RefillOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.Refill:
        return customer_refill(
            refill_to_proto(await self._aftercare.refill(_user(auth.principal()), request.id))
        )

    async def BatchGetRefills(
        self, request: pb.BatchGetRefillsRequest, context: grpc.aio.ServicerContext
    ) -> pb.BatchGetRefillsResponse:
        rows = await self._aftercare.refills(_user(auth.principal()), _ids(request.ids))
        return pb.BatchGetRefillsResponse(refills=[customer_refill(refill_to_proto(r)) for r in rows])

    async def CancelOrder(
        self, request: pb.CancelOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.Order:
        return customer_view(
            order_to_proto(await self._aftercare.cancel(_user(auth.principal()), request.id), self._currency)
        )

    async def ListAllOrders(
        self, request: pb.ListAllOrdersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListOrdersResponse:
        size = page_size(request.page_size, default=100, maximum=1000)
        status = status_name(request.status)
        created_from = (
            request_time(request.create_time_from, field="create_time_from")
            if request.HasField("create_time_from")
            else EPOCH
        )
        created_to = (
            request_time(request.create_time_to, field="create_time_to")
            if request.HasField("create_time_to")
            else FAR_FUTURE
        )
        filters = {
            "status": status,
            "user_id": request.user_id,
            "service_id": request.service_id,
            "provider_id": request.provider_id,
            "from": created_from.isoformat(),
            "to": created_to.isoformat(),
        }
        rows, token = await newest_first_page(
            self._tokens,
            request.page_token,
            filters,
            size,
            lambda before_id, limit: self._admin.list_orders(
                status=status,
                user_id=request.user_id,
                service_id=request.service_id,
                provider_id=request.provider_id,
                created_from=created_from,
                created_to=created_to,
                before_id=before_id,
                limit=limit,
            ),
        )
        return pb.ListOrdersResponse(
            orders=[order_to_proto(r, self._currency) for r in rows], next_page_token=token
        )

    async def GetAnyOrder(
        self, request: pb.GetAnyOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.Order:
        row, events, refills = await self._logic.get(None, request.id)
        return order_to_proto(row, self._currency, events, refills)

    async def ListOrderProviderLog(
        self, request: pb.ListOrderProviderLogRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListOrderProviderLogResponse:
        rows = await self._admin.provider_log(request.id)
        return pb.ListOrderProviderLogResponse(exchanges=[exchange_to_proto(r) for r in rows])

    async def SetOrderStatus(
        self, request: pb.SetOrderStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.Order:
        status = status_name(request.status)
        if not status:
            raise InvalidArgument.for_field("status", "is required", domain=DOMAIN)
        await self._admin.set_status(request.id, status, request.remains, request.reason)
        return await self.GetAnyOrder(pb.GetAnyOrderRequest(id=request.id), context)

    async def EndRefill(self, request: pb.EndRefillRequest, context: grpc.aio.ServicerContext) -> pb.Order:
        await self._admin.end_refill(request.order_id, request.refill_id, request.status, request.reason)
        return await self.GetAnyOrder(pb.GetAnyOrderRequest(id=request.order_id), context)

    async def ListUpstreamCandidates(
        self, request: pb.ListUpstreamCandidatesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListUpstreamCandidatesResponse:
        search = await self._reconciler.search(request.id)
        return pb.ListUpstreamCandidatesResponse(
            candidates=[
                pb.UpstreamCandidate(
                    upstream_order_id=c.upstream_order_id,
                    status=c.status.status.value,
                    charge=format_micros(c.status.charge_micros)
                    if c.status.charge_micros is not None
                    else "",
                    currency=c.status.currency or "",
                    remains=c.status.remains or 0,
                    charge_matches=c.charge_matches,
                )
                for c in search.candidates
            ],
            provider_id=search.provider_id,
            window_closed=search.window_closed,
            window=search.window,
            note=search.note,
        )

    async def ResolveOrder(
        self, request: pb.ResolveOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.Order:
        await self._admin.resolve(request.id, request.resolution, request.upstream_order_id, request.reason)
        return await self.GetAnyOrder(pb.GetAnyOrderRequest(id=request.id), context)

    async def ResubmitOrder(
        self, request: pb.ResubmitOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.Order:
        await self._admin.resubmit(
            request.id, request.provider_id, request.upstream_service_id, request.reason
        )
        return await self.GetAnyOrder(pb.GetAnyOrderRequest(id=request.id), context)

    async def ReceiveProviderWebhook(
        self, request: pb.ReceiveProviderWebhookRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReceiveProviderWebhookResponse:
        signature = dict(context.invocation_metadata() or ()).get("x-smm-signature", "")
        applied = await self._webhooks.receive(request.provider_id, request.http_body.data, str(signature))
        return pb.ReceiveProviderWebhookResponse(applied=applied)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)
MAX_BATCH = 100


def _ids(values: Iterable[int]) -> list[int]:
    ids = list(values)
    if len(ids) > MAX_BATCH:
        raise InvalidArgument.for_field("ids", f"at most {MAX_BATCH}", domain=DOMAIN)
    return ids


def exchange_to_proto(row: ExchangeRow) -> pb.ProviderExchange:
    return pb.ProviderExchange(
        provider_id=row.provider_id,
        action=row.action,
        params={k: str(v) for k, v in row.params.items()},
        http_status=row.http_status or 0,
        body=row.body,
        outcome=row.outcome,
        reason=row.reason,
        latency_ms=row.latency_ms,
        create_time=timestamp(row.create_time),
    )
