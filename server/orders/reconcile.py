"""Finding an order whose ``add`` answer was lost, upstream.

The standard protocol cannot search by link; it can only report the status of order ids. Panels
number orders in sequence, so the lost order's id lies between the last id the provider gave smm
before the lost submission was sent and the first it gave after the answer was lost. smm asks for
the status of every id in that window it does not know (at most ``MAX_WINDOW``, one ``status``
call): a provider answers only for its caller's own orders, so each id it reports is an order of
smm's account that smm never recorded. Its charge is compared with what the lost order costs at the
provider's price stored with it.

Staff see the candidates (``ListUpstreamCandidates``) and resolve the order. The automatic pass (the
poll tick; each needs-review order once it is ``SETTLE_S`` old, then every ``EVERY_S``) resolves an
order as found only when the window is closed on both sides and holds exactly one unknown order of
ours, whose charge matches, and the provider's answer could be read for every id in it (an order
whose status word smm does not know may be the lost one). It never concludes "not placed": an
empty window proves nothing when a provider does not number in sequence, so that call stays with
staff.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from server.common.db import Pool
from server.common.errors import FailedPrecondition
from server.common.money import format_micros, mul_div_round
from server.orders import states
from server.orders.admin import OrdersAdmin
from server.orders.errors import DOMAIN, order_not_found
from server.orders.fanout import by_provider, each, per_provider
from server.orders.repo import QUERIES, LostSubmission, OrderRow
from server.providers.adapters.base import Accepted, UpstreamStatus
from server.providers.clients import ProviderClients
from server.providers.health import about_orders

log = logging.getLogger(__name__)
MAX_WINDOW = 100  # one status call
SETTLE_S = 120  # a provider may take a moment to show a new order
EVERY_S = 600


@dataclass(frozen=True)
class Candidate:
    upstream_order_id: str
    status: UpstreamStatus
    charge_matches: bool


@dataclass(frozen=True)
class Search:
    provider_id: int
    candidates: list[Candidate]
    window_closed: bool
    window: str
    note: str
    # Ids in the window the provider's answer said nothing readable about (an odd status word):
    # each may be the lost order, so no automatic choice is made among the others.
    unread: tuple[str, ...] = ()


def charge_matches(expected: int | None, charged: int | None) -> bool:
    """Within 1% (providers round charges their own way), or 0.0001 for tiny amounts."""
    if expected is None or charged is None:
        return False
    difference = abs(charged - expected)
    return difference * 100 <= expected or difference <= 100


def id_window(before_id: int | None, after_id: int | None) -> tuple[list[int], bool, str]:
    """(ids to ask about, closed on both sides, a note when there is none)."""
    if before_id is None and after_id is None:
        return [], False, "smm has no other order at this provider to place the lost one between"
    if before_id is not None and after_id is not None:
        if after_id - before_id - 1 > MAX_WINDOW:
            return [], False, f"too many orders at the provider between #{before_id} and #{after_id}"
        return list(range(before_id + 1, after_id)), True, ""
    if before_id is not None:
        return list(range(before_id + 1, before_id + 1 + MAX_WINDOW)), False, "no later order yet"
    assert after_id is not None
    return list(range(max(1, after_id - MAX_WINDOW), after_id)), False, "no earlier order"


class Reconciler:
    def __init__(self, pool: Pool, clients: ProviderClients, admin: OrdersAdmin) -> None:
        self._pool = pool
        self._clients = clients
        self._admin = admin

    async def search(self, order_id: int) -> Search:
        async with self._pool.connection() as conn:
            order = await QUERIES.one(conn, "get_order", OrderRow, id=order_id)
            if order is None:
                raise order_not_found(order_id)
            if order.status != states.NEEDS_REVIEW or order.panel_dripfeed:
                raise FailedPrecondition(
                    "only an order that needs review is looked for upstream",
                    reason="ORDER_NOT_IN_REVIEW",
                    domain=DOMAIN,
                )
            lost = await QUERIES.one(conn, "get_lost_submission", LostSubmission, order_id=order_id)
            if lost is None:
                return Search(0, [], False, "", "no submission with a lost answer")
            window_row = await (
                await conn.execute(
                    QUERIES.sql("get_upstream_id_window"),
                    {
                        "provider_id": lost.provider_id,
                        "started": lost.create_time,
                        "finished": lost.finish_time or lost.create_time,
                    },
                )
            ).fetchone()
            before_id, after_id = window_row if window_row else (None, None)
            if lost.finish_time is None:  # interrupted: when its answer would have come is unknown
                after_id = None
            ids, closed, note = id_window(before_id, after_id)
            known = {
                str(row[0])
                for row in await (
                    await conn.execute(
                        QUERIES.sql("list_known_upstream_ids"),
                        {"provider_id": lost.provider_id, "ids": [str(i) for i in ids]},
                    )
                ).fetchall()
            }
        unknown = [str(i) for i in ids if str(i) not in known]
        window = f"{ids[0]}-{ids[-1]}" if ids else ""
        if not unknown:
            return Search(lost.provider_id, [], closed, window, note)
        adapter = await self._clients.adapter_for(lost.provider_id, open_orders=True)
        if adapter is None:
            return Search(lost.provider_id, [], closed, window, "the provider is deleted")
        with about_orders([order_id]):
            reply = await adapter.statuses(unknown)
        if not isinstance(reply, Accepted):
            return Search(
                lost.provider_id, [], closed, window, "the provider did not answer the status look-up"
            )
        expected = (
            mul_div_round(lost.provider_rate_micros, lost.billable, 1000)
            if lost.primary_provider and lost.provider_rate_micros is not None
            else None
        )
        found = [
            Candidate(upstream_id, status, charge_matches(expected, status.charge_micros))
            for upstream_id, status in reply.value.items()
            if isinstance(status, UpstreamStatus)
        ]
        unread = tuple(upstream_id for upstream_id in unknown if upstream_id not in reply.value)
        if unread:
            plural = "order" if len(unread) == 1 else "orders"
            unread_note = (
                f"the provider's answer for {len(unread)} {plural} in the window could not be read:"
                f" {', '.join(unread)}"
            )
            note = f"{note}; {unread_note}" if note else unread_note
        return Search(
            lost.provider_id,
            sorted(found, key=lambda c: int(c.upstream_order_id)),
            closed,
            window,
            note[:500],
            unread,
        )

    async def reconcile_due(self, limit: int) -> int:
        """The automatic pass; returns how many orders it resolved."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                QUERIES.sql("claim_orders_to_reconcile"),
                {"older_than_s": SETTLE_S, "every_s": EVERY_S, "limit": limit},
            )
            order_ids = [int(row[0]) for row in await cursor.fetchall()]
            # Each under the provider of its lost submission (0: none, so nothing to ask).
            provider_of: dict[int, int] = {}
            for order_id in order_ids:
                lost = await QUERIES.one(conn, "get_lost_submission", LostSubmission, order_id=order_id)
                provider_of[order_id] = lost.provider_id if lost else 0

        async def orders_at(_: int, ids: Sequence[int]) -> int:
            # Each order was claimed (not looked at again for ``EVERY_S``): one whose look fails is
            # only logged, and the others go on.
            return await each(ids, self._reconcile_one, what=lambda o: f"look for order {o} upstream")

        # Providers side by side, as for orders (``Tracker.poll``).
        return await per_provider(
            by_provider(provider_of, provider_of.__getitem__), orders_at, what="look for lost orders"
        )

    async def _reconcile_one(self, order_id: int) -> int:
        """1 when the order was resolved as found upstream."""
        try:
            search = await self.search(order_id)
        except FailedPrecondition:  # resolved by staff meanwhile
            return 0
        matching = [c for c in search.candidates if c.charge_matches]
        if search.unread or not (search.window_closed and len(search.candidates) == 1 and len(matching) == 1):
            return 0
        [candidate] = matching
        charge = candidate.status.charge_micros
        reason = (
            f"reconciled automatically: the only unknown order of ours at provider "
            f"{search.provider_id} between the orders around it ({search.window}), charge "
            f"{format_micros(charge or 0)} as expected"
        )
        try:
            await self._admin.resolve(order_id, "found", candidate.upstream_order_id, reason)
        except FailedPrecondition:
            return 0
        log.info("order reconciled upstream", extra={"order_id": order_id})
        return 1
