"""Staff tools for orders: every order with filters, its provider log, a status set by hand (with
the release computed), resolving orders that need review, resubmitting elsewhere. All audited."""

from __future__ import annotations

from datetime import datetime

from smm.v1 import events_pb2

from server.common import audit
from server.common.db import Pool
from server.common.errors import FailedPrecondition, FieldViolation, collect
from server.common.outbox import add_event
from server.orders import states
from server.orders.dripfeed import DripFeed
from server.orders.errors import DOMAIN, order_not_found
from server.orders.logic import ORDER_CREATED
from server.orders.repo import QUERIES, Conn, ExchangeRow, OrderRow
from server.orders.tracking import finish, record

RESOLUTIONS = ("found", "not_placed", "failed")


def _reason(reason: str) -> str:
    if not 1 <= len(reason.strip()) <= 500:
        collect([FieldViolation("reason", "is required (at most 500 characters)")], domain=DOMAIN)
    return reason.strip()


def _seen(order: OrderRow) -> dict[str, object]:
    return {
        "status": order.status,
        "charged_micros": order.charged_micros,
        "released_micros": order.released_micros,
        "provider_id": order.provider_id,
        "upstream_order_id": order.upstream_order_id,
    }


class OrdersAdmin:
    def __init__(self, pool: Pool, dripfeed: DripFeed) -> None:
        self._pool = pool
        self._dripfeed = dripfeed

    async def list_orders(
        self, *, status: str, user_id: int, service_id: int, provider_id: int, created_from: datetime,
        created_to: datetime, before_id: int, limit: int,
    ) -> list[OrderRow]:  # fmt: skip
        if status and status not in states.ALL:
            collect([FieldViolation("status", "must be an order status")], domain=DOMAIN)
        async with self._pool.connection() as conn:
            return await QUERIES.all(
                conn,
                "list_all_orders",
                OrderRow,
                status=status,
                user_id=user_id,
                service_id=service_id,
                provider_id=provider_id,
                created_from=created_from,
                created_to=created_to,
                before_id=before_id,
                limit=limit,
            )

    async def provider_log(self, order_id: int) -> list[ExchangeRow]:
        async with self._pool.connection() as conn:
            if await QUERIES.one(conn, "get_order", OrderRow, id=order_id) is None:
                raise order_not_found(order_id)
            return await QUERIES.all(conn, "list_provider_log", ExchangeRow, order_id=order_id)

    async def _locked(self, conn: Conn, order_id: int) -> OrderRow:
        order = await QUERIES.one(conn, "lock_order", OrderRow, id=order_id)
        if order is None:
            raise order_not_found(order_id)
        return order

    async def set_status(self, order_id: int, status: str, remains: int | None, reason: str) -> None:
        why = _reason(reason)
        if status not in states.ALL:
            collect([FieldViolation("status", "must be an order status")], domain=DOMAIN)
        if status in (states.PARTIAL, states.EXPIRED) and not remains:
            # remains has no presence on the wire: a Partial (or a subscription's Expired) set
            # without it would charge in full; everything delivered is Completed.
            missing = FieldViolation(
                "remains", f"is required for {status}: what was not delivered (completed if nothing)"
            )
            collect([missing], domain=DOMAIN)
        async with self._pool.connection() as conn, conn.transaction():
            order = await self._locked(conn, order_id)
            states.check_move(order.status, status)
            if status not in states.FINAL and (status not in states.TRACKED or not order.upstream_order_id):
                # Any other move would strand the order: in progress with nothing upstream to poll,
                # or submitting/pending/review behind dispatch's back. Those have their own actions.
                raise FailedPrecondition(
                    "staff set a final status, or move an order that is with its provider between its "
                    "tracked statuses; use resolve or resubmit for the rest",
                    reason="ORDER_STATE_CONFLICT",
                    domain=DOMAIN,
                    metadata={"from": order.status, "to": status},
                )
            if status in states.FINAL:
                await finish(conn, order, status, remains=remains, note=f"set by staff: {why}")
            else:
                await QUERIES.execute(
                    conn, "set_status", id=order_id, status=status, note=f"set by staff: {why}"
                )
                await record(conn, order, status, f"set by staff: {why}")
            after = await QUERIES.one(conn, "get_order", OrderRow, id=order_id)
            assert after is not None
            await audit.record(
                conn,
                "order.status_set",
                target=f"order:{order_id}",
                before=_seen(order),
                after={**_seen(after), "reason": why},
            )

    async def resolve(self, order_id: int, resolution: str, upstream_order_id: str, reason: str) -> None:
        why = _reason(reason)
        if resolution not in RESOLUTIONS:
            collect([FieldViolation("resolution", "must be found, not_placed or failed")], domain=DOMAIN)
        if resolution == "found" and not 1 <= len(upstream_order_id.strip()) <= 100:
            collect(
                [FieldViolation("upstream_order_id", "is required when the order was found")], domain=DOMAIN
            )
        async with self._pool.connection() as conn, conn.transaction():
            order = await self._locked(conn, order_id)
            if order.status != states.NEEDS_REVIEW:
                raise FailedPrecondition(
                    "the order does not need review", reason="ORDER_NOT_IN_REVIEW", domain=DOMAIN
                )
            if order.panel_dripfeed:  # the resolution is about the run in review
                await self._dripfeed.resolve(conn, order, resolution, upstream_order_id.strip(), why)
                await _dispatch_again(conn, order)  # runs due now go out
            elif resolution == "found":
                await QUERIES.execute(
                    conn, "found_upstream", id=order_id, upstream_order_id=upstream_order_id.strip()
                )
                await record(conn, order, states.IN_PROGRESS, f"found upstream by staff: {why}")
            elif resolution == "not_placed":
                await QUERIES.execute(
                    conn, "set_status", id=order_id, status=states.PENDING, note=f"staff: {why}"
                )
                await record(conn, order, states.PENDING, f"not placed upstream, sent again: {why}")
                await _dispatch_again(conn, order)
            else:
                await finish(conn, order, states.FAILED, note=f"failed by staff: {why}")
            after = await QUERIES.one(conn, "get_order", OrderRow, id=order_id)
            assert after is not None
            await audit.record(
                conn,
                "order.resolved",
                target=f"order:{order_id}",
                before=_seen(order),
                after={**_seen(after), "resolution": resolution, "reason": why},
            )

    async def resubmit(self, order_id: int, provider_id: int, upstream_service_id: str, reason: str) -> None:
        why = _reason(reason)
        if provider_id <= 0 or not 1 <= len(upstream_service_id.strip()) <= 100:
            collect([FieldViolation("provider_id", "and upstream_service_id are required")], domain=DOMAIN)
        async with self._pool.connection() as conn, conn.transaction():
            order = await self._locked(conn, order_id)
            if order.status not in (states.NEEDS_REVIEW, states.PENDING, states.FAILED):
                raise FailedPrecondition(
                    "only an order that is not with a provider can be sent elsewhere",
                    reason="ORDER_NOT_RESUBMITTABLE",
                    domain=DOMAIN,
                )
            if order.status == states.FAILED:
                raise FailedPrecondition(
                    "a failed order was released; place a new one",
                    reason="ORDER_NOT_RESUBMITTABLE",
                    domain=DOMAIN,
                )
            await QUERIES.execute(
                conn,
                "retarget_order",
                id=order_id,
                provider_id=provider_id,
                upstream_service_id=upstream_service_id.strip(),
            )
            await record(conn, order, states.PENDING, f"sent to provider {provider_id} by staff: {why}")
            await _dispatch_again(conn, order)
            await audit.record(
                conn,
                "order.resubmitted",
                target=f"order:{order_id}",
                before=_seen(order),
                after={"provider_id": provider_id, "upstream_service_id": upstream_service_id, "reason": why},
            )


async def _dispatch_again(conn: Conn, order: OrderRow) -> None:
    await add_event(conn, ORDER_CREATED, events_pb2.OrderCreated(order_id=order.id, user_id=order.user_id))
