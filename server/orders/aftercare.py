"""After an order went out: refills and cancels, asked of the provider and tracked.

A refill is possible on a completed order of a refill service within its window, one at a time;
its status (pending, in progress, completed, rejected) is polled like orders, less often as it ages
(a provider disabled or not answering is asked again later; one that does not know the refill ends
it; one whose answers cannot be read for an hour is noted for staff once; staff end an open refill by
hand, ``OrdersAdmin.end_refill``, and the poller never writes over that). A refill the provider
takes without an id to follow is in progress for a day, then ends as completed like any other
(with its customer's mail): nothing will ever say more about it. A cancel is at once
for an order not yet sent (full release); for one with a provider it is asked upstream where the
service allows it (refused, "try again", when the call certainly never left), and the provider's
confirmation, seen by the poller or a webhook, settles and releases exactly once through the same
path as every final status. A drip-feed smm sends itself cancels by not sending its remaining
runs: the runs already out finish, then the order ends with the rest released. Its runs are
separate upstream orders, so it has no refill.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from psycopg import errors as pg_errors
from smm.v1 import events_pb2

from server.common.db import Pool
from server.common.errors import FailedPrecondition
from server.common.outbox import add_event
from server.orders import states
from server.orders.dripfeed import DripFeed
from server.orders.errors import DOMAIN, order_not_found
from server.orders.fanout import by_provider, each, per_provider
from server.orders.repo import QUERIES, Conn, OrderRow, RefillRow
from server.orders.tracking import finish, poll_interval_s, record
from server.providers.adapters.base import Accepted, RefillState, Rejected, Unknown
from server.providers.clients import ProviderClients
from server.providers.health import about_orders

REFILL_COMPLETED = "smm.orders.refill.completed"
OPEN_REFILL = ("pending", "in_progress")  # order_refills_open_key: one of these per order
DRIPFEED_CANCELLABLE = (states.PENDING, states.IN_PROGRESS, states.NEEDS_REVIEW)
REVIEW_REFUSAL = "Order is being checked with its provider; it can be cancelled once that is settled"
# A refill taken without an id (PROTOCOL.md 3.4 deviations) is given a provider's usual time for
# one, then closed: in progress meanwhile (the provider took it), and one open refill per order
# keeps a second request from going to a provider still working on the first.
UNTRACKED_REFILL_S = 86_400
UNTRACKED = (
    "the provider took it without an id, so its progress cannot be followed: it ends as completed after a day"
)
UNREAD_NOTE_AFTER_S = 3600  # a refill with no readable answer this long is shown to staff
UNREAD = "the provider's answers about this refill cannot be read"
REFILL_STATES = {
    RefillState.PENDING: "pending",
    RefillState.IN_PROGRESS: "in_progress",
    RefillState.COMPLETED: "completed",
    RefillState.REJECTED: "rejected",
}


def not_refillable(message: str) -> FailedPrecondition:
    return FailedPrecondition(message, reason="ORDER_NOT_REFILLABLE", domain=DOMAIN)


def not_cancellable(message: str) -> FailedPrecondition:
    return FailedPrecondition(message, reason="ORDER_NOT_CANCELLABLE", domain=DOMAIN)


class Aftercare:
    def __init__(self, pool: Pool, clients: ProviderClients, dripfeed: DripFeed) -> None:
        self._pool = pool
        self._clients = clients
        self._dripfeed = dripfeed

    async def _own(self, user_id: int | None, order_id: int) -> OrderRow:
        async with self._pool.connection() as conn:
            row = await QUERIES.one(conn, "get_order", OrderRow, id=order_id)
        if row is None or (user_id is not None and row.user_id != user_id):
            raise order_not_found(order_id)
        return row

    async def refill(self, user_id: int | None, order_id: int) -> RefillRow:
        order = await self._own(user_id, order_id)
        if not order.service_refill or order.panel_dripfeed:
            raise not_refillable("Refill is disabled for this service")
        if order.status != states.COMPLETED or order.finish_time is None or order.provider_id is None:
            raise not_refillable("The order is not completed")
        if datetime.now(UTC) > order.finish_time + timedelta(days=order.refill_days):
            raise not_refillable("Order not eligible for refill.")
        adapter = await self._clients.adapter_for(order.provider_id, open_orders=True)
        if adapter is None:
            raise not_refillable("The order's provider is not available")
        try:
            async with self._pool.connection() as conn:
                reserved = await QUERIES.one(
                    conn, "reserve_refill", RefillRow, order_id=order.id, user_id=order.user_id,
                    provider_id=order.provider_id,
                )  # fmt: skip
        except pg_errors.UniqueViolation as exc:
            if exc.diag.constraint_name != "order_refills_open_key":
                raise
            raise not_refillable("A refill of this order is already in progress") from None
        assert reserved is not None
        with about_orders([order.id]):
            reply = await adapter.refill(order.upstream_order_id)
        next_poll_s = 15
        if isinstance(reply, Accepted) and str(reply.value):
            status, upstream_id, message = "pending", str(reply.value), ""
        elif isinstance(reply, Accepted):  # taken, with no id to follow: ends when its time is up
            status, upstream_id, message, next_poll_s = "in_progress", "", UNTRACKED, UNTRACKED_REFILL_S
        elif isinstance(reply, Rejected):
            status, upstream_id, message = "rejected", "", reply.message
        else:  # a refill asked twice costs nobody money: the user may simply ask again
            status, upstream_id, message = (
                "rejected",
                "",
                f"the provider did not answer ({reply.reason}); try again",
            )
        async with self._pool.connection() as conn, conn.transaction():
            refill = await QUERIES.one(
                conn,
                "record_refill_answer",
                RefillRow,
                id=reserved.id,
                status=status,
                upstream_refill_id=upstream_id,
                message=message[:500],
                next_poll_s=next_poll_s,
            )
            await QUERIES.execute(
                conn,
                "add_event",
                order_id=order.id,
                status=order.status,
                note=f"refill {status}" + (f": {message}" if message else ""),
            )
        assert refill is not None
        return refill

    async def refills(self, user_id: int, ids: list[int]) -> list[RefillRow]:
        async with self._pool.connection() as conn:
            return await QUERIES.all(conn, "batch_get_refills", RefillRow, user_id=user_id, ids=ids)

    async def poll_refills(self, limit: int) -> int:
        async with self._pool.connection() as conn:
            await QUERIES.execute(conn, "expire_lost_refills")
            due = await QUERIES.all(conn, "due_refills", RefillRow, limit=limit)
        ended = await self._end_untracked()

        async def postpone(_: int, refills: Sequence[RefillRow]) -> None:
            await self._postpone(refills, 60)

        # Providers side by side (as for orders): a slow one holds up no other's refills; one that
        # fails, or a refill that cannot be updated, is logged and asked about again later.
        return ended + await per_provider(
            by_provider(due, lambda r: r.provider_id), self._poll_refills_at, what="poll refills",
            on_failure=postpone,
        )  # fmt: skip

    async def _end_untracked(self) -> int:
        async with self._pool.connection() as conn, conn.transaction():
            ended = await QUERIES.all(conn, "end_untracked_refills", RefillRow)
            for refill in ended:
                await announce_completed(conn, refill)
        return len(ended)

    async def _poll_refills_at(self, provider_id: int, refills: Sequence[RefillRow]) -> int:
        # A disabled provider is still asked about refills already out (as about orders). A deleted
        # one, or one not answering usefully, is asked again later: left due, its refills would come
        # first on every tick, ahead of every other refill.
        adapter = await self._clients.adapter_for(provider_id, open_orders=True)
        if adapter is None:
            await self._postpone(refills, 300)
            return 0
        with about_orders([r.order_id for r in refills]):
            reply = await adapter.refill_status([r.upstream_refill_id for r in refills])
        if not isinstance(reply, Accepted):  # a single refill's unreadable word lands here too
            why = reply.reason if isinstance(reply, Unknown) else reply.message
            for refill in refills:
                await self._unread(refill, why)
            return 0
        states_found = reply.value

        async def one(refill: RefillRow) -> int:
            found = states_found.get(refill.upstream_refill_id)
            # A note that its answers could not be read goes once one can be.
            message = "" if refill.message.startswith(UNREAD) else refill.message
            if isinstance(found, RefillState):
                status = REFILL_STATES.get(found, refill.status)
            elif isinstance(found, Rejected):  # the provider no longer knows it: it is over
                status, message = "rejected", found.message[:500]
            else:  # its entry could not be read
                await self._unread(refill, "its entry in the answer could not be read")
                return 0
            async with self._pool.connection() as conn, conn.transaction():
                updated = await QUERIES.execute(
                    conn, "update_refill", id=refill.id, status=status, message=message,
                    next_poll_s=_refill_poll_s(refill),
                )  # fmt: skip
                if not updated:  # staff ended it while the provider was asked: theirs stands
                    return 0
                if status == "completed" and refill.status != "completed":
                    await announce_completed(conn, refill)
            return int(status != refill.status)

        async def later(refill: RefillRow) -> None:
            await self._postpone([refill], 300)

        return await each(refills, one, what=lambda r: f"update refill {r.id}", on_failure=later)

    async def _unread(self, refill: RefillRow, why: str) -> None:
        """No readable answer about a refill: asked again later, less often as it ages (at least a
        minute, as an order whose provider did not answer); after an hour without one, staff see it
        on the refill and, once, on its order's timeline."""
        next_poll_s = max(60, _refill_poll_s(refill))
        unread_s = (datetime.now(UTC) - refill.update_time).total_seconds()
        async with self._pool.connection() as conn, conn.transaction():
            if unread_s < UNREAD_NOTE_AFTER_S or refill.message.startswith(UNREAD):
                await QUERIES.execute(conn, "postpone_refill_polls", ids=[refill.id], next_poll_s=next_poll_s)
                return
            note = f"{UNREAD} ({why}); asked again less and less often"[:500]
            noted = await QUERIES.execute(
                conn, "note_unread_refill", id=refill.id, message=note, next_poll_s=next_poll_s
            )
            if noted:  # not a refill staff ended while the provider was asked
                await QUERIES.execute(
                    conn, "note_order", order_id=refill.order_id, note=f"refill {refill.id}: {note}"[:500]
                )

    async def _postpone(self, refills: Sequence[RefillRow], seconds: int) -> None:
        async with self._pool.connection() as conn:
            await QUERIES.execute(
                conn, "postpone_refill_polls", ids=[r.id for r in refills], next_poll_s=seconds
            )

    async def cancel(self, user_id: int | None, order_id: int) -> OrderRow:
        order = await self._own(user_id, order_id)
        if order.status == states.PENDING:
            canceled = False
            async with self._pool.connection() as conn, conn.transaction():
                locked = await QUERIES.one(conn, "lock_order", OrderRow, id=order_id)
                assert locked is not None
                if locked.status == states.PENDING and not locked.panel_dripfeed:  # not sent meanwhile
                    await finish(conn, locked, states.CANCELED, note="canceled before it was sent")
                    canceled = True
            # Read once committed (another connection): inside, it is the order before the cancel.
            order = await self._own(None if canceled else user_id, order_id)
            if canceled:
                return order
        # A drip-feed smm sends itself is canceled here, never upstream (so whatever the service's
        # cancel): its runs not sent stop, also while a run is in review (staff settle that run).
        if order.panel_dripfeed and order.status in DRIPFEED_CANCELLABLE:
            async with self._pool.connection() as conn, conn.transaction():
                locked = await QUERIES.one(conn, "lock_order", OrderRow, id=order_id)
                assert locked is not None
                # The order may have ended since it was read: then it is answered as it is now.
                stopping = locked.status in DRIPFEED_CANCELLABLE
                if stopping:
                    await self._dripfeed.stop(conn, locked, "canceled: the remaining runs are not sent")
            order = await self._own(None if stopping else user_id, order_id)
            if stopping:
                return order
        if order.status in states.FINAL:
            raise not_cancellable(
                "Order is already completed"
                if order.status == states.COMPLETED
                else "Order can no longer be canceled"
            )
        if not order.service_cancel:
            raise not_cancellable("Order cannot be cancelled")
        if order.status == states.NEEDS_REVIEW:
            # Whether the provider has the order at all is being settled (by reconcile or staff);
            # "try again in a moment" would send the customer round in circles.
            raise not_cancellable(REVIEW_REFUSAL)
        if order.status not in states.TRACKED or order.provider_id is None:
            raise not_cancellable("Order cannot be cancelled now; try again in a moment")
        if order.cancel_state == "requested":
            return order
        adapter = await self._clients.adapter_for(order.provider_id, open_orders=True)
        if adapter is None:
            raise not_cancellable("The order's provider is not available")
        with about_orders([order.id]):
            reply = await adapter.cancel([order.upstream_order_id])
        accepted = isinstance(reply, Accepted) and reply.value.get(order.upstream_order_id) is True
        if accepted:
            state, message = "requested", ""
        elif isinstance(reply, Accepted):
            refused = reply.value.get(order.upstream_order_id)
            state, message = "rejected", refused.message if isinstance(refused, Rejected) else "refused"
        elif isinstance(reply, Rejected):
            state, message = "rejected", reply.message
        elif not reply.sent:
            # Nothing left smm (circuit open, connection refused): there is no cancel to wait for,
            # and recording one would make the user's next cancel a no-op while the order runs on.
            raise not_cancellable("The order's provider cannot be reached now; try again in a moment")
        else:
            # The cancel may have reached the provider: polling shows the outcome either way.
            state, message = "requested", f"the provider's answer is unknown ({reply.reason})"
        note = f"cancel {state}" + (f": {message}" if message else "")
        async with self._pool.connection() as conn, conn.transaction():
            locked = await QUERIES.one(conn, "lock_order", OrderRow, id=order.id)
            assert locked is not None
            if locked.status in states.FINAL:  # it finished while the call was out: only a note
                await QUERIES.execute(
                    conn, "add_event", order_id=order.id, status=locked.status, note=note[:500]
                )
            elif state == "rejected" and locked.cancel_state == "requested":
                # A cancel of this order sent at the same moment was taken: the provider refusing
                # this one (it is canceling the order already) undoes nothing; only a note.
                await QUERIES.execute(
                    conn, "add_event", order_id=order.id, status=locked.status, note=note[:500]
                )
            else:
                await QUERIES.execute(
                    conn, "set_cancel_state", id=order.id, cancel_state=state, cancel_message=message[:500]
                )
                await record(conn, locked, locked.status, note)
        return await self._own(None, order_id)


def _refill_poll_s(refill: RefillRow) -> int:
    """A refill is looked at as an order of its age is: often while young, rarely once old."""
    return poll_interval_s((datetime.now(UTC) - refill.create_time).total_seconds())


async def announce_completed(conn: Conn, refill: RefillRow) -> None:
    """The event every refill that ends completed writes (its customer's mail)."""
    done = events_pb2.RefillCompleted(order_id=refill.order_id, refill_id=refill.id, user_id=refill.user_id)
    await add_event(conn, REFILL_COMPLETED, done)
