"""Staff tools for orders: every order with filters, its provider log, a status set by hand (with
the release computed), resolving orders that need review, resubmitting elsewhere, ending a refill
its provider never finishes. All audited."""

from __future__ import annotations

from datetime import datetime

from smm.v1 import events_pb2

from server.common import audit
from server.common.db import Pool
from server.common.errors import FailedPrecondition, FieldViolation, NotFound, collect
from server.common.outbox import add_event
from server.common.upstream_id import MAX_ID_CHARS, canonical_upstream_id
from server.orders import states
from server.orders.aftercare import OPEN_REFILL, announce_completed
from server.orders.dripfeed import DripFeed
from server.orders.errors import DOMAIN, order_not_found
from server.orders.logic import ORDER_CREATED
from server.orders.repo import QUERIES, Conn, ExchangeRow, OrderRow, RefillRow, RunRow
from server.orders.tracking import finish, record

RESOLUTIONS = ("found", "not_placed", "failed")
REFILL_ENDS = ("completed", "rejected")
# What an upstream id staff type must be (``canonical_upstream_id``: the rule provider replies follow).
ID_RULE = f"a positive number or up to {MAX_ID_CHARS} characters without spaces"
# The statuses staff may move an order that is with its provider between, by kind: processing has
# no move to active, paused or expired, and active or paused none to partial, so a move outside its
# kind would leave an order that its provider's end could never finish.
TRACKED_BY_KIND = {
    True: frozenset({states.IN_PROGRESS, states.ACTIVE, states.PAUSED}),  # subscriptions
    False: frozenset({states.IN_PROGRESS, states.PROCESSING}),
}
WITH_REMAINS = (states.PARTIAL, states.EXPIRED)


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
        if status in WITH_REMAINS and not remains:
            # remains has no presence on the wire: a Partial (or a subscription's Expired) set
            # without it would charge in full; everything delivered is Completed.
            missing = FieldViolation(
                "remains", f"is required for {status}: what was not delivered (completed if nothing)"
            )
            collect([missing], domain=DOMAIN)
        if status not in WITH_REMAINS and remains:
            # finish_money would store it: a completed order charged in full showing part undelivered.
            collect(
                [FieldViolation("remains", "is only for partial and expired: what was not delivered")],
                domain=DOMAIN,
            )
        async with self._pool.connection() as conn, conn.transaction():
            order = await self._locked(conn, order_id)
            states.check_move(order.status, status)
            if order.panel_dripfeed and await _run_being_sent(conn, order_id):
                # As an order that is submitting: the run's answer may place it upstream, and a final
                # status now would release what the provider then delivers.
                raise FailedPrecondition(
                    "a run of this drip-feed is being sent to its provider: try again in a moment",
                    reason="ORDER_STATE_CONFLICT",
                    domain=DOMAIN,
                    metadata={"from": order.status, "to": status},
                )
            if (
                status == states.CANCELED
                and order.panel_dripfeed
                and await _runs_reached_provider(conn, order_id)
            ):
                # Canceled would release the runs the provider delivered or is delivering: the runs
                # not sent stop, as on the user's cancel, and the others end the order as they end.
                note = f"canceled by staff: {why}; the runs the provider has end by their own status"
                await self._dripfeed.stop(conn, order, note[:500])
                await _audit(conn, "order.status_set", order, reason=why)
                return
            subscription = order.service_type == "SUBSCRIPTIONS"
            if status == states.EXPIRED and not subscription:
                # A subscription's end: an ordinary order ends partial (the same release).
                raise FailedPrecondition(
                    "expired is a subscription's end; an order not delivered in full is partial",
                    reason="ORDER_STATE_CONFLICT",
                    domain=DOMAIN,
                    metadata={"from": order.status, "to": status},
                )
            tracked = TRACKED_BY_KIND[subscription]
            if status not in states.FINAL and (status not in tracked or not order.upstream_order_id):
                # Any other move would strand the order: in progress with nothing upstream to poll,
                # submitting/pending/review behind dispatch's back (those have their own actions), or
                # in a status its provider's end cannot move it out of.
                raise FailedPrecondition(
                    "staff set a final status, or move an order that is with its provider between the"
                    " tracked statuses of its kind (in progress, processing; a subscription's in progress,"
                    " active, paused); use resolve or resubmit for the rest",
                    reason="ORDER_STATE_CONFLICT",
                    domain=DOMAIN,
                    metadata={"from": order.status, "to": status},
                )
            if status in WITH_REMAINS and not 1 <= (remains or 0) <= order.units:
                # Below 1 released nothing (charged in full); above the units is not this order.
                wrong = FieldViolation(
                    "remains", f"must be 1 to {order.units} for {status}: what was not delivered"
                )
                collect([wrong], domain=DOMAIN)
            if status in states.FINAL:
                await finish(conn, order, status, remains=remains, note=f"set by staff: {why}")
            else:
                await QUERIES.execute(
                    conn, "set_status", id=order_id, status=status, note=f"set by staff: {why}"
                )
                await record(conn, order, status, f"set by staff: {why}")
            await _audit(conn, "order.status_set", order, reason=why)

    async def resolve(self, order_id: int, resolution: str, upstream_order_id: str, reason: str) -> None:
        why = _reason(reason)
        if resolution not in RESOLUTIONS:
            collect([FieldViolation("resolution", "must be found, not_placed or failed")], domain=DOMAIN)
        # As the provider's replies are stored ("0023" is 23): polls and webhooks match on it.
        upstream_id = (canonical_upstream_id(upstream_order_id) or "") if resolution == "found" else ""
        if resolution == "found" and not upstream_id:
            collect(
                [FieldViolation("upstream_order_id", f"is required when the order was found: {ID_RULE}")],
                domain=DOMAIN,
            )
        async with self._pool.connection() as conn, conn.transaction():
            order = await self._locked(conn, order_id)
            if order.status != states.NEEDS_REVIEW:
                raise FailedPrecondition(
                    "the order does not need review", reason="ORDER_NOT_IN_REVIEW", domain=DOMAIN
                )
            await _check_answer_in(conn, order_id)
            if upstream_id:
                await _check_upstream_free(conn, order_id, upstream_id)
            if order.panel_dripfeed:  # the resolution is about the run in review
                await self._dripfeed.resolve(conn, order, resolution, upstream_id, why)
                await _dispatch_again(conn, order)  # runs due now go out
            elif resolution == "found":
                await QUERIES.execute(conn, "found_upstream", id=order_id, upstream_order_id=upstream_id)
                await record(conn, order, states.IN_PROGRESS, f"found upstream by staff: {why}")
            elif resolution == "not_placed":
                await QUERIES.execute(
                    conn, "set_status", id=order_id, status=states.PENDING, note=f"staff: {why}"
                )
                await record(conn, order, states.PENDING, f"not placed upstream, sent again: {why}")
                await _dispatch_again(conn, order)
            else:
                await finish(conn, order, states.FAILED, note=f"failed by staff: {why}")
            await _audit(conn, "order.resolved", order, resolution=resolution, reason=why)

    async def end_refill(self, order_id: int, refill_id: int, status: str, reason: str) -> None:
        """Ends an open refill by hand (completed or rejected), under its row lock: the poller's
        answer, read before, then finds it ended and writes nothing (``update_refill``)."""
        why = _reason(reason)
        if status not in REFILL_ENDS:
            collect([FieldViolation("status", "must be completed or rejected")], domain=DOMAIN)
        async with self._pool.connection() as conn, conn.transaction():
            refill = await QUERIES.one(conn, "lock_refill", RefillRow, id=refill_id, order_id=order_id)
            if refill is None:  # another order's refill too: no oracle for which ids exist where
                raise NotFound(
                    "refill not found",
                    reason="REFILL_NOT_FOUND",
                    domain=DOMAIN,
                    metadata={"order_id": str(order_id), "refill_id": str(refill_id)},
                )
            if refill.status not in OPEN_REFILL:
                raise FailedPrecondition(
                    f"the refill already ended {refill.status}",
                    reason="REFILL_ALREADY_ENDED",
                    domain=DOMAIN,
                    metadata={"refill_id": str(refill_id), "status": refill.status},
                )
            if refill.status == "pending" and not refill.upstream_refill_id:
                # The reservation taken before the provider is asked: the answer, stored next, would
                # open it again (or expire_lost_refills ends it within 10 minutes).
                raise FailedPrecondition(
                    "the refill is being asked of its provider: try again once its answer is in"
                    " (at most 10 minutes)",
                    reason="REFILL_REQUEST_OUT",
                    domain=DOMAIN,
                    metadata={"refill_id": str(refill_id)},
                )
            order = await QUERIES.one(conn, "get_order", OrderRow, id=order_id)
            assert order is not None  # the refill's (a foreign key)
            await QUERIES.execute(
                conn, "end_refill", id=refill_id, status=status, message=f"ended by staff: {why}"[:500]
            )
            await QUERIES.execute(
                conn,
                "note_order",
                order_id=order_id,
                note=f"refill {refill_id} {status} by staff: {why}"[:500],
            )
            if status == "completed":
                await announce_completed(conn, refill)
            await _audit(
                conn, "order.refill_ended", order, refill_id=str(refill_id), refill_status=status, reason=why,
                before_extra={"refill_status": refill.status},
            )  # fmt: skip

    async def resubmit(self, order_id: int, provider_id: int, upstream_service_id: str, reason: str) -> None:
        why = _reason(reason)
        # As a service linked by hand (catalog ``set_providers``): the id the provider's list gives.
        service = canonical_upstream_id(upstream_service_id) or ""
        violations = [] if provider_id > 0 else [FieldViolation("provider_id", "is required")]
        if not service:
            violations.append(FieldViolation("upstream_service_id", f"is required: {ID_RULE}"))
        collect(violations, domain=DOMAIN)
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
            if order.panel_dripfeed and order.status == states.NEEDS_REVIEW:
                # Out of review its run in review could never be resolved, and the order never end.
                raise FailedPrecondition(
                    "a drip-feed smm sends itself has a run in review: resolve it"
                    " (found, not_placed or failed)",
                    reason="ORDER_NOT_RESUBMITTABLE",
                    domain=DOMAIN,
                )
            await _check_answer_in(conn, order_id)
            await _check_provider_takes_orders(conn, provider_id)
            await QUERIES.execute(
                conn, "retarget_order", id=order_id, provider_id=provider_id, upstream_service_id=service
            )
            await record(conn, order, states.PENDING, f"sent to provider {provider_id} by staff: {why}")
            await _dispatch_again(conn, order)
            await _audit(conn, "order.resubmitted", order, with_service=True, reason=why)


async def _audit(
    conn: Conn,
    action: str,
    before: OrderRow,
    *,
    with_service: bool = False,
    before_extra: dict[str, str] | None = None,
    **extra: str,
) -> None:
    """Staff's action on a locked order, as the order was before (with ``before_extra``) and is now
    (with ``extra``)."""
    after = await QUERIES.one(conn, "get_order", OrderRow, id=before.id)
    assert after is not None
    seen_before, seen_after = {**_seen(before), **(before_extra or {})}, _seen(after)
    if with_service:  # a resubmit moves the order to another upstream service
        seen_before["upstream_service_id"] = before.upstream_service_id
        seen_after["upstream_service_id"] = after.upstream_service_id
    await audit.record(
        conn, action, target=f"order:{before.id}", before=seen_before, after={**seen_after, **extra}
    )


async def _runs_reached_provider(conn: Conn, order_id: int) -> bool:
    runs = await QUERIES.all(conn, "list_runs", RunRow, order_id=order_id)
    return any(run.upstream_order_id for run in runs)


async def _run_being_sent(conn: Conn, order_id: int) -> bool:
    """Whether a run of a drip-feed smm sends itself is submitting: its ``add`` may be out."""
    runs = await QUERIES.all(conn, "list_runs", RunRow, order_id=order_id)
    return any(r.state == states.SUBMITTING for r in runs)


async def _check_answer_in(conn: Conn, order_id: int) -> None:
    """Refuses to settle an order in review while its submission may still be answered (a redelivered
    event sends an order whose call is out to review at once): that answer, unknown, would send an
    order staff found back to review, and accepted it resolves the order itself; "not_placed" or a
    resubmit would send it a second time, "failed" release the price of an order being taken."""
    provider_id = await QUERIES.scalar(conn, "submission_out", order_id=order_id)
    if provider_id is not None:
        raise FailedPrecondition(
            f"the order's submission to provider {provider_id} is still waiting for the provider's"
            " answer: resolve it once that has come (at most 5 minutes)",
            reason="ORDER_SUBMISSION_OUT",
            domain=DOMAIN,
            metadata={"provider_id": str(provider_id)},
        )


async def _check_upstream_free(conn: Conn, order_id: int, upstream_id: str) -> None:
    """Refuses linking an order to an upstream order another order (or run) already has: both would
    be polled on it and settled by its one delivery."""
    owner = await QUERIES.scalar(conn, "upstream_order_owner", id=order_id, upstream_order_id=upstream_id)
    if owner is not None:
        raise FailedPrecondition(
            f"upstream order {upstream_id} is order {owner}'s at that provider",
            reason="UPSTREAM_ORDER_TAKEN",
            domain=DOMAIN,
            metadata={"upstream_order_id": upstream_id, "order_id": str(owner)},
        )


async def _check_provider_takes_orders(conn: Conn, provider_id: int) -> None:
    """Only an enabled provider is sent new orders: dispatch would fail (and release) the order."""
    status = await QUERIES.scalar(conn, "provider_status", id=provider_id)
    if status is None or status == "deleted":
        raise FailedPrecondition(
            "no such provider",
            reason="UNKNOWN_PROVIDER",
            domain=DOMAIN,
            metadata={"provider_id": str(provider_id)},
        )
    if status != "enabled":
        raise FailedPrecondition(
            "the provider is disabled: it is sent no new orders",
            reason="PROVIDER_DISABLED",
            domain=DOMAIN,
            metadata={"provider_id": str(provider_id)},
        )


async def _dispatch_again(conn: Conn, order: OrderRow) -> None:
    await add_event(conn, ORDER_CREATED, events_pb2.OrderCreated(order_id=order.id, user_id=order.user_id))
