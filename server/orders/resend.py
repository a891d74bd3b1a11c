"""Sending again the orders whose provider could not be reached for longer than dispatch retries.

An order whose ``add`` certainly did not go out (the circuit was open, the connection refused)
goes back to pending and the dispatch worker retries its event with back-off, for about 13 minutes
(``ORDER_CREATED`` in workers/dispatch.py: 6 deliveries, 1 s to 10 min apart); then the event is
dead-lettered. A provider down longer than that left its orders pending, with their funds held,
until the stuck alert a day later and staff sending each again. The poll tick now sends such an
order again once its last submission found the provider unreachable ``STALLED_AFTER_S`` ago and
nothing moved it since, so the orders go out within that long of the provider's return.

Only orders whose last submission was *not sent* are taken: nothing of them can exist upstream, so
sending again is safe (an unknown outcome goes to review, as ever). ``STALLED_AFTER_S`` is longer
than the worker's longest back-off, so the worker has no retry of the same order out meanwhile
(a worker that was itself down can still hold one; the dispatcher's claim is guarded, and this
pass leaves an order that is being sent alone). Each provider's orders go in turn, providers side
by side (``fanout``); the first that still cannot be reached ends that provider's turn, and its
orders wait for the next pass, ``STALLED_AFTER_S`` later.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from server.common.db import Pool
from server.common.errors import Unavailable
from server.orders import states
from server.orders.dispatch import Dispatcher
from server.orders.fanout import by_provider, per_provider, quietly
from server.orders.repo import QUERIES, StalledOrder

log = logging.getLogger(__name__)
STALLED_AFTER_S = 900
# Orders sent again per pass: a provider that is back gets them in the next ticks, not all at once.
RESEND_BATCH = 100


class Resender:
    def __init__(self, pool: Pool, dispatcher: Dispatcher) -> None:
        self._pool = pool
        self._dispatcher = dispatcher

    async def resend_stalled(self, limit: int = RESEND_BATCH) -> int:
        """Sends the stalled orders again; how many left pending (sent, refused, or in review)."""
        async with self._pool.connection() as conn:
            stalled = await QUERIES.all(
                conn,
                "stalled_not_sent",
                StalledOrder,
                after_s=STALLED_AFTER_S,
                limit=min(limit, RESEND_BATCH),
            )
        groups = by_provider(stalled, lambda s: s.provider_id)
        return await per_provider(groups, self._resend_to, what="send stalled orders again")

    async def _resend_to(self, provider_id: int, stalled: Sequence[StalledOrder]) -> int:
        moved = 0
        for done, item in enumerate(stalled):
            try:
                order = await self._dispatcher.submit(item.order_id, resend=True)
            except Unavailable:
                log.info(
                    "provider %s still cannot be reached: %d stalled order(s) wait for the next pass",
                    provider_id,
                    len(stalled) - done,
                )
                break
            except Exception:  # one order that cannot be handled must not hold up the others
                log.exception("could not send stalled order %s again", item.order_id)
                await quietly(self._put_off(item.order_id), f"put off stalled order {item.order_id}")
                continue
            if order.status != states.PENDING:
                moved += 1
        return moved

    async def _put_off(self, order_id: int) -> None:
        """To the back of the line: the next pass ``STALLED_AFTER_S`` later, after the others."""
        async with self._pool.connection() as conn:
            await QUERIES.execute(conn, "put_off_pending", id=order_id)
