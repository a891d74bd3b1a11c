"""Following orders upstream and closing them: the poller, and the money of a final status.

A final status settles what was delivered and releases the rest, exactly once: the ledger keys
``order:<id>:settle`` and ``order:<id>:release`` are unique, and the order row is locked while it
changes. A partial releases ``remains x price / units`` (half up), never more than was held; an
over-delivery never charges more than the hold.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from smm.v1 import events_pb2

from server.common.db import Pool
from server.common.money import format_micros, mul_div_round
from server.common.outbox import add_event
from server.orders import states
from server.orders.fanout import by_provider, each, per_provider
from server.orders.repo import QUERIES, Conn, DueOrder, OrderRow
from server.providers.adapters.base import Accepted, Rejected, UpstreamStatus
from server.providers.clients import ProviderClients
from server.providers.health import about_orders
from server.wallet import ledger

log = logging.getLogger(__name__)
ORDER_CHANGED = "smm.orders.order.changed"
ORDERS_STUCK = "smm.orders.alert.stuck"
ORDER_POLL = "smm.orders.poll.requested"


def poll_interval_s(age_s: float) -> int:
    """Young orders are looked at often, old ones rarely."""
    if age_s < 600:
        return 15
    if age_s < 3600:
        return 60
    if age_s < 86_400:
        return 300
    return 1800


def split_money(order: OrderRow, status: str, remains: int | None) -> tuple[int, int]:
    """(charged, released) for a final status."""
    price = order.price_micros
    if status in (states.CANCELED, states.FAILED):
        return 0, price
    if status == states.COMPLETED:
        return price, 0
    units = order.units
    left = max(0, min(remains or 0, units)) if units else 0
    released = min(price, mul_div_round(price, left, units)) if units else 0
    return price - released, released


async def finish(
    conn: Conn,
    order: OrderRow,
    status: str,
    *,
    remains: int | None = None,
    start_count: int | None = None,
    note: str = "",
) -> int:
    """Moves a locked order to a final status and settles/releases its funds; returns the release."""
    states.check_move(order.status, status)  # never from a final status: its money has moved
    # What is stored (and shown: clients refund by it) is what the money was split by: a provider's
    # remains beyond the order or below nothing is not, nor a "Completed" with part remaining.
    if status == states.COMPLETED:
        remains = 0
    elif remains is not None:
        remains = max(0, min(remains, order.units))
    charged, released = split_money(order, status, remains)
    reference = f"order:{order.id}"
    if charged:
        await ledger.settle(
            conn, user_id=order.user_id, amount=charged, key=f"{reference}:settle", reference=reference
        )
    if released:
        await ledger.release(
            conn, user_id=order.user_id, amount=released, key=f"{reference}:release", reference=reference
        )
    await QUERIES.execute(
        conn,
        "finish_money",
        id=order.id,
        status=status,
        charged_micros=charged,
        released_micros=released,
        remains=remains,
        start_count=start_count,
        note=note,
    )
    await record(
        conn,
        order,
        status,
        note or f"charged {format_micros(charged)}, released {format_micros(released)}",
        released,
    )
    return released


async def record(conn: Conn, order: OrderRow, status: str, note: str, released: int = 0) -> None:
    await QUERIES.execute(conn, "add_event", order_id=order.id, status=status, note=note[:500])
    event = events_pb2.OrderChanged(
        order_id=order.id, user_id=order.user_id, status=status, released=format_micros(released)
    )
    await add_event(conn, ORDER_CHANGED, event)


class Tracker:
    def __init__(self, pool: Pool, clients: ProviderClients, *, stuck_after_h: int) -> None:
        self._pool = pool
        self._clients = clients
        self._stuck_after_h = stuck_after_h

    async def poll(self, limit: int) -> tuple[int, int]:
        """Asks each provider about its due orders (in batches of 100); returns (checked, changed)."""
        async with self._pool.connection() as conn:
            due = await QUERIES.all(conn, "due_for_poll", DueOrder, limit=limit)

        # Providers side by side (a slow or timing-out one holds up no other's orders); one that
        # fails has its orders asked about again in a minute.
        async def postpone(_: int, orders: Sequence[DueOrder]) -> None:
            await self._postpone([o.id for o in orders], 60)

        changed = await per_provider(
            by_provider(due, lambda o: o.provider_id),
            self._poll_provider,
            what="poll orders",
            on_failure=postpone,
        )
        return len(due), changed

    async def _poll_provider(self, provider_id: int, orders: Sequence[DueOrder]) -> int:
        adapter = await self._clients.adapter_for(provider_id, open_orders=True)
        ids = [o.id for o in orders]
        if adapter is None:
            await self._postpone(ids, 300)
            return 0
        with about_orders(ids):
            reply = await adapter.statuses([o.upstream_order_id for o in orders])
        if not isinstance(reply, Accepted):
            await self._postpone(ids, 60)  # the provider did not answer usefully: ask again later
            return 0
        statuses = reply.value

        async def one(order: DueOrder) -> int:
            found = statuses.get(order.upstream_order_id)
            if isinstance(found, UpstreamStatus):
                return await self.apply(order.id, found)
            if isinstance(found, Rejected):
                return await self._lost_upstream(order.id, found.message)
            await self._postpone([order.id], 60)
            return 0

        async def later(order: DueOrder) -> None:
            await self._postpone([order.id], 300)

        # One order that cannot be updated must not stop the rest of the batch, nor come first
        # again on every tick: it is logged and asked about later.
        return await each(
            orders, one, what=lambda o: f"apply the provider's status to order {o.id}", on_failure=later
        )

    async def _postpone(self, ids: list[int], seconds: int) -> None:
        async with self._pool.connection() as conn:
            await QUERIES.execute(conn, "postpone_poll", ids=ids, next_poll_s=seconds)

    async def apply(self, order_id: int, upstream: UpstreamStatus) -> int:
        """One upstream status for a tracked order; 1 when its status changed."""
        async with self._pool.connection() as conn, conn.transaction():
            order = await QUERIES.one(conn, "lock_order", OrderRow, id=order_id)
            # A drip-feed smm sends itself has no upstream order of its own: its runs are tracked.
            if order is None or order.status not in states.TRACKED or order.panel_dripfeed:
                return 0
            target = upstream_target(order, upstream_word(upstream))
            age = (datetime.now(UTC) - order.create_time).total_seconds()
            if not states.can_move(order.status, target):
                log.warning("ignored an upstream status", extra={"order_id": order_id, "to": target})
                # Asked again at its usual pace, not on every tick ahead of every other order.
                await QUERIES.execute(conn, "postpone_poll", ids=[order_id], next_poll_s=poll_interval_s(age))
                return 0
            if partial_without_remains(upstream, target):
                # Part was not delivered, but the provider does not say how much: any release would
                # be a guess. Staff set it from the provider's panel (SetOrderStatus with remains);
                # it is asked about again hourly meanwhile.
                await QUERIES.execute(
                    conn,
                    "note_tracked",
                    id=order_id,
                    note=f"the provider says {upstream_word(upstream)} without what remains:"
                    " set it with the remains",
                )
                await QUERIES.execute(conn, "postpone_poll", ids=[order_id], next_poll_s=3600)
                return 0
            if target in states.FINAL:
                await finish(conn, order, target, remains=upstream.remains, start_count=upstream.start_count)
                return 1
            await QUERIES.execute(
                conn,
                "track_order",
                id=order_id,
                status=target,
                start_count=upstream.start_count,
                remains=upstream.remains,
                upstream_charge_micros=upstream.charge_micros,
                next_poll_s=poll_interval_s(age),
            )
            if target != order.status:
                await record(conn, order, target, f"provider says {upstream.status.value}")
                return 1
            return 0

    async def _lost_upstream(self, order_id: int, message: str) -> int:
        async with self._pool.connection() as conn, conn.transaction():
            order = await QUERIES.one(conn, "lock_order", OrderRow, id=order_id)
            if order is None or order.status not in states.TRACKED:
                return 0
            # Not a state the machine allows from tracking: staff look at it, polling stops.
            note = f"the provider does not know the order: {message}"[:500]
            await QUERIES.execute(conn, "note_tracked", id=order_id, note=note)
            await QUERIES.execute(conn, "postpone_poll", ids=[order_id], next_poll_s=3600)
            return 0

    async def alert_stuck(self, conn: Conn) -> str:
        """The scheduled check (inside the job's transaction): an alert for orders not done in time,
        and for refills open that long (the order's one open refill keeps its customer from asking
        for another: staff end it, ``EndRefill``). Each is reported once."""
        async with conn.cursor() as cur:
            await cur.execute(QUERIES.sql("stuck_orders"), {"older_than_h": self._stuck_after_h})
            ids = [row[0] for row in await cur.fetchall()]
            await cur.execute(QUERIES.sql("stuck_refills"), {"older_than_h": self._stuck_after_h})
            refills = [events_pb2.StuckRefill(refill_id=r[0], order_id=r[1]) for r in await cur.fetchall()]
        if ids:
            await QUERIES.execute(conn, "mark_stuck_alerted", ids=ids)
        if refills:
            await QUERIES.execute(conn, "mark_refills_stuck_alerted", ids=[r.refill_id for r in refills])
        if ids or refills:
            await add_event(conn, ORDERS_STUCK, events_pb2.OrdersStuck(order_ids=ids, refills=refills))
        return f"{len(ids)} stuck order(s) and {len(refills)} stuck refill(s) reported"

    async def request_poll(self, conn: Conn) -> str:
        """The scheduled tick: the dispatch worker runs the poll outside the job's transaction."""
        await add_event(conn, ORDER_POLL, events_pb2.OrderPollRequested())
        return (await self.alert_stuck(conn)) + "; poll requested"


def partial_without_remains(upstream: UpstreamStatus, target: str = "") -> bool:
    """Part may not have been delivered, and how much is not said, so no release can be computed:
    the provider's "Partial" (whatever our target), or a subscription's expired end (``target``)."""
    return upstream.remains is None and (upstream.status.value == "Partial" or target == states.EXPIRED)


def upstream_word(upstream: UpstreamStatus) -> str:
    """The provider's word for ``upstream_target``: a subscription word when it used one."""
    return upstream.subscription_word or upstream.status.value


def upstream_target(order: OrderRow, word: str) -> str:
    if order.service_type != "SUBSCRIPTIONS":
        return states.UPSTREAM.get(word, order.status)
    target = states.UPSTREAM_SUBSCRIPTION.get(word) or states.UPSTREAM.get(word, order.status)
    if target == states.ACTIVE and order.status not in (states.IN_PROGRESS, states.ACTIVE, states.PAUSED):
        return order.status  # processing (an in-progress subscription the provider called that)
    return target
