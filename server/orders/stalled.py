"""The orders dispatch left behind: sent again, or sent to review, by the poll tick.

Dispatch is event-driven: the dispatch worker turns each new order's event into ``SubmitOrder`` and
retries it with back-off for about 13 minutes (``ORDER_CREATED`` in workers/dispatch.py: 6
deliveries, 1 s to 10 min apart); then the event is dead-lettered. Two kinds of order were then
left for the stuck alert a day later, their funds held:

- **left pending**: the provider could not be reached (the circuit was open, the connection
  refused), so the order went back to pending, and a provider down longer than the retries left it
  there; or its event is gone without a dead letter (lost with NATS's store), so it was never tried,
  or never sent again after staff sent it back to pending. Once nothing moved the order for
  ``STALLED_AFTER_S`` and its last submission, if any, ended that long ago, it is sent again
  (``resend_stalled``), so the orders go out within that long of the provider's return. A pending
  order is one to send: what its last submission left upstream (nothing, or what staff judged)
  made it pending, and an unknown outcome of this call goes to review, as ever.
- **interrupted**: the process sending it died between recording that a submission was starting
  and recording the answer, and the redelivery that would have sent the order to review never came
  (the gRPC server was down for longer than the retries). No ``add`` lasts ``STALLED_AFTER_S`` (at
  most 4 minutes: a slot waited for and the call, each within the provider's timeout, at most 120 s),
  so such an order goes to review (``review_interrupted``), where reconciliation
  looks for it upstream, as after any interrupted submission.

``STALLED_AFTER_S`` is longer than the worker's longest back-off, so the worker has no retry of the
same order out meanwhile. A worker that was itself down or far behind can still hold the event: its
first delivery leaves an order this pass is sending alone (``resend``, as this pass does when the
worker claims first: ``Dispatcher.submit(resend=True)``); a redelivery of an event whose earlier
delivery failed takes it for an interrupted submission (review), and this pass's answer then moves
it on, so the order is sent once either way. Each provider's orders go in turn, providers side by side
(``fanout``); the first that still cannot be reached ends that provider's turn, and its orders wait
for the next pass. One order that raises is logged and put to the back of the line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TypeVar

from server.common.db import Pool
from server.common.errors import Unavailable
from server.orders import states
from server.orders.dispatch import Dispatcher
from server.orders.fanout import by_provider, isolated, per_provider, quietly
from server.orders.repo import QUERIES, InterruptedSubmission, StalledOrder

log = logging.getLogger(__name__)
T = TypeVar("T")
STALLED_AFTER_S = 900
# Orders handled per pass and kind: a provider that is back gets them in the next ticks, not at once.
STALLED_BATCH = 100


class StalledOrders:
    def __init__(self, pool: Pool, dispatcher: Dispatcher) -> None:
        self._pool = pool
        self._dispatcher = dispatcher

    async def handle(self, limit: int) -> int:
        """Both steps of the poll tick, side by side, each isolated; how many orders they moved."""
        resent, reviewed = await asyncio.gather(
            isolated("stalled sends", self.resend_stalled(limit), 0),
            isolated("interrupted sends", self.review_interrupted(limit), 0),
        )
        return resent + reviewed

    async def resend_stalled(self, limit: int = STALLED_BATCH) -> int:
        """Sends the stalled orders (again); how many left pending (sent, refused, or in review)."""
        stalled = await self._due("stalled_pending", StalledOrder, limit)
        groups = by_provider(stalled, lambda s: s.provider_id)
        return await per_provider(groups, self._resend_to, what="send stalled orders again")

    async def review_interrupted(self, limit: int = STALLED_BATCH) -> int:
        """Sends to review the orders a dead process left submitting; how many."""
        interrupted = await self._due("interrupted_submissions", InterruptedSubmission, limit)
        reviewed = 0
        for item in interrupted:  # no provider is called: one statement each
            if await self._dispatcher.review_interrupted(item.order_id, item.submission_id):
                log.warning(
                    "order %s: a submission to provider %s was interrupted and never retried: in review",
                    item.order_id,
                    item.provider_id,
                )
                reviewed += 1
        return reviewed

    async def _due(self, query: str, row: type[T], limit: int) -> list[T]:
        """The oldest orders of a kind left ``STALLED_AFTER_S`` ago, at most a batch."""
        async with self._pool.connection() as conn:
            return await QUERIES.all(
                conn, query, row, after_s=STALLED_AFTER_S, limit=min(limit, STALLED_BATCH)
            )

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
