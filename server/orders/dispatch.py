"""Sending an order to its provider, without ever placing it twice.

1. In a short transaction the order moves pending -> submitting and an ``order_submissions`` row
   records that a submission to this provider is starting: **before** the provider is called.
2. The provider is called once (``add`` is never retried).
3. The outcome is recorded:
   - accepted: the upstream order id is stored and the order is in progress;
   - rejected (a definite error): the next fallback provider is tried (one whose known cost is
     above the order's price is skipped); with none left the order fails and its hold is released
     in full. The order records the provider rate and exchange rate of the provider that took it;
   - unknown but certainly not sent (circuit open, connection refused): back to pending, and the
     worker retries later;
   - unknown (timeout, 5xx, garbage, or this process dying mid-call): needs review. It is never
     resubmitted blindly: staff, or a later reconciliation, decide whether it exists upstream.
A submit that finds the order already ``submitting`` (the previous attempt died between 1 and 3)
moves it to needs review for the same reason.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from smm.v1 import events_pb2

from server.common import outbox
from server.common.db import Pool
from server.common.errors import Unavailable
from server.common.money import convert_micros, format_micros
from server.orders import states
from server.orders.errors import DOMAIN, order_not_found
from server.orders.repo import QUERIES, Candidate, Claim, Conn, KnownTerms, OrderRow
from server.orders.tracking import ORDER_CHANGED, finish, record
from server.providers.adapters.base import Accepted, AddOrder, Rejected, Reply, Unknown
from server.providers.clients import ProviderClients
from server.providers.health import about_orders

if TYPE_CHECKING:
    from server.orders.dripfeed import DripFeed

log = logging.getLogger(__name__)

ADD_FIELDS = frozenset(AddOrder.__dataclass_fields__) - {"service"}
INT_FIELDS = frozenset(
    {"quantity", "runs", "interval", "answer_number", "min", "max", "posts", "old_posts", "delay", "device",
     "type_of_traffic"}
)  # fmt: skip


async def finish_submission(
    conn: Conn, submission_id: int, state: str, upstream_id: str, message: str
) -> None:
    await QUERIES.execute(
        conn,
        "finish_submission",
        id=submission_id,
        state=state,
        upstream_order_id=upstream_id,
        message=message[:1000],
    )


async def candidates_for(conn: Conn, order: OrderRow) -> list[Candidate]:
    """Where the order may go, in order: the primary provider, then the fallbacks."""
    if order.pinned_provider and order.provider_id is not None:  # staff chose the provider
        return [Candidate(order.provider_id, order.upstream_service_id)]
    return await QUERIES.all(conn, "list_candidates", Candidate, service_id=order.service_id)


async def dearer_fallback(
    conn: Conn, order: OrderRow, candidate: Candidate, *, units: int, price_micros: int, priced: str
) -> str | None:
    """Why a fallback is skipped, or None when it may be tried: its known cost (at its exchange
    rate) for ``units`` is above ``price_micros``, what the order (or one drip-feed run, its share)
    charges, so sending it there would lose money. The primary priced the order, and a provider
    staff chose (pinned) is theirs to decide; a fallback whose cost smm does not know (its upstream
    service is not synced as a service of that provider) is tried (docs/PROVIDERS.md, Fallbacks).
    One rule for orders and runs, and ``claim_submission`` (queries.sql) spells it in SQL."""
    if order.pinned_provider or candidate.position == 0:
        return None
    terms = await QUERIES.one(
        conn,
        "known_terms",
        KnownTerms,
        provider_id=candidate.provider_id,
        upstream_service_id=candidate.upstream_service_id,
    )
    if terms is None:
        return None
    cost = convert_micros(terms.provider_rate_micros, terms.exchange_rate)
    if cost * units <= price_micros * 1000:
        return None
    would_cost = format_micros(-(-cost * units // 1000))
    return (
        f"provider {candidate.provider_id} skipped: it would cost {would_cost},"
        f" more than {priced} {format_micros(price_micros)}"
    )


async def _dearer_than_order(conn: Conn, order: OrderRow, candidate: Candidate) -> bool:
    """Skips a fallback dearer than the order (``dearer_fallback``), with a line on its timeline."""
    note = await dearer_fallback(
        conn,
        order,
        candidate,
        units=order.billable,
        price_micros=order.price_micros,
        priced="the order's price",
    )
    if note is None:
        return False
    await QUERIES.execute(conn, "next_attempt", id=order.id)
    await QUERIES.execute(conn, "add_event", order_id=order.id, status=states.PENDING, note=note[:500])
    return True


def add_order(upstream_service_id: str, params: dict[str, str]) -> AddOrder:
    """The stored upstream parameters (validated when the order was placed) as an ``add`` call."""
    values: dict[str, Any] = {}
    for name, value in params.items():
        if name in INT_FIELDS:
            values[name] = int(value)
        elif name in ADD_FIELDS:
            values[name] = value
    return AddOrder(service=upstream_service_id, **values)


def sent_note(candidate: Candidate) -> str:
    return f"sent to provider {candidate.provider_id}"


async def _note_late(conn: Conn, order: OrderRow, candidate: Candidate, upstream_id: str, what: str) -> None:
    """An answer that came after the order was finished (by staff, while the call was out): the
    order keeps its status and money; its timeline and the log tell staff that the provider may
    hold an order to cancel there (with its upstream id, kept on the order when there is one)."""
    note = f"provider {candidate.provider_id} {what} after the order was {order.status}: check it there"
    if upstream_id:
        await QUERIES.execute(
            conn,
            "note_upstream",
            id=order.id,
            provider_id=candidate.provider_id,
            upstream_service_id=candidate.upstream_service_id,
            upstream_order_id=upstream_id,
        )
    await QUERIES.execute(conn, "add_event", order_id=order.id, status=order.status, note=note[:500])
    log.warning("order %s: %s", order.id, note)


async def _record_superseded(conn: Conn, order: OrderRow, claim: Claim, reply: Reply[str]) -> None:
    """The answer to a submission the order has been sent again since (staff resubmitted it while
    the call was out): it is recorded on the submission and never moves the order, which follows
    the newer one. If the older one may have placed an order upstream, its timeline and the log
    say so for staff to cancel it there."""
    provider = claim.candidate.provider_id
    if isinstance(reply, Accepted):
        await finish_submission(conn, claim.submission_id, "accepted", str(reply.value), "")
        what = f"accepted an earlier submission as #{reply.value}"
    elif isinstance(reply, Rejected):
        await finish_submission(conn, claim.submission_id, "rejected", "", reply.message)
        return
    elif not reply.sent:
        await finish_submission(conn, claim.submission_id, "not_sent", "", reply.reason)
        return
    else:
        await finish_submission(conn, claim.submission_id, "unknown", "", reply.reason)
        what = f"gave no clear answer to an earlier submission ({reply.reason})"
    note = f"provider {provider} {what} after the order was sent again: check it there"
    await QUERIES.execute(conn, "add_event", order_id=order.id, status=order.status, note=note[:500])
    log.warning("order %s: %s", order.id, note)


INTERRUPTED = "a submission was interrupted; the order may exist upstream"
# What ``_claim`` answers for a drip-feed smm sends itself: its runs go out through ``DripFeed``.
RUNS_BY_PANEL = "runs-by-panel"


class Dispatcher:
    def __init__(self, pool: Pool, clients: ProviderClients, dripfeed: DripFeed) -> None:
        self._pool = pool
        self._clients = clients
        self._dripfeed = dripfeed

    async def submit(self, order_id: int, *, resend: bool = False) -> OrderRow:
        """Sends a pending order. ``resend``: one sent again after its event was given up on (the
        poll tick, ``server/orders/stalled.py``, or the dispatch worker's retry of the dead letter),
        which leaves an order another call is sending alone instead of taking it for interrupted."""
        while True:
            claimed = await self._claim(order_id, resend=resend)
            if claimed == RUNS_BY_PANEL:
                await self._dripfeed.send_due(order_id)
                return await self._order(order_id)
            if not isinstance(claimed, Claim):
                return await self._order(order_id)
            sent = await self._send(claimed)
            if sent is not None:
                return sent

    async def _order(self, order_id: int) -> OrderRow:
        async with self._pool.connection() as conn:
            row = await QUERIES.one(conn, "get_order", OrderRow, id=order_id)
        if row is None:
            raise order_not_found(order_id)
        return row

    async def _claim(self, order_id: int, *, resend: bool = False) -> Claim | str | None:
        """Pending -> submitting with a 'starting' submission; None when there is nothing to send."""
        async with self._pool.connection() as conn:  # the usual case, in one statement
            claim = await QUERIES.one(conn, "claim_submission", Claim, id=order_id)
        if claim is not None:
            return claim
        async with self._pool.connection() as conn, conn.transaction():
            order = await QUERIES.one(conn, "lock_order", OrderRow, id=order_id)
            if order is None:
                raise order_not_found(order_id)
            if order.panel_dripfeed:
                return RUNS_BY_PANEL
            if order.status == states.SUBMITTING and not resend:
                await self._review(conn, order, INTERRUPTED)
                return None
            if order.status != states.PENDING:
                return None  # already sent (a redelivered event), or finished
            candidates = await candidates_for(conn, order)
            attempt = order.attempt
            while attempt < len(candidates) and await _dearer_than_order(conn, order, candidates[attempt]):
                attempt += 1
            if attempt >= len(candidates):
                await finish(conn, order, states.FAILED, note="no provider accepted the order")
                return None
            candidate = candidates[attempt]
            submission_id = await QUERIES.scalar(
                conn,
                "start_submission",
                order_id=order.id,
                provider_id=candidate.provider_id,
                upstream_service_id=candidate.upstream_service_id,
            )
            return Claim(
                order.id,
                order.user_id,
                order.upstream_params,
                candidate.provider_id,
                candidate.upstream_service_id,
                int(submission_id),
            )

    async def _send(self, claim: Claim) -> OrderRow | None:
        """Calls the provider once and records the outcome; returns the order as it now is, or None
        when the next candidate should be tried."""
        candidate = claim.candidate
        adapter = await self._clients.adapter_for(candidate.provider_id)
        if adapter is None:
            reply: Reply[str] = Rejected("the provider is disabled")
        else:
            with about_orders([claim.id]):
                reply = await adapter.add(add_order(candidate.upstream_service_id, claim.upstream_params))
        if isinstance(reply, Accepted):
            accepted = await self._accept(claim, str(reply.value))
            if accepted is not None:
                return accepted
        if await self._record_outcome(claim, reply):
            return None
        return await self._order(claim.id)

    async def _accept(self, claim: Claim, upstream_id: str) -> OrderRow | None:
        """The common case in one statement; None when the order left 'submitting' meanwhile (a
        redelivered event moved it to review, or staff acted), for the general path to record."""
        event = outbox.event_values(
            ORDER_CHANGED,
            events_pb2.OrderChanged(
                order_id=claim.id, user_id=claim.user_id, status=states.IN_PROGRESS, released=format_micros(0)
            ),
        )
        async with self._pool.connection() as conn:
            row = await QUERIES.one(
                conn,
                "accept_submission",
                OrderRow,
                id=claim.id,
                submission_id=claim.submission_id,
                provider_id=claim.provider_id,
                upstream_service_id=claim.upstream_service_id,
                upstream_order_id=upstream_id,
                note=sent_note(claim.candidate),
                subject=event.subject,
                payload=event.payload,
                headers=event.headers,
            )
        if row is not None:
            outbox.committed()  # one autocommit statement: wake this copy's relay (no NOTIFY)
        return row

    async def _record_outcome(self, claim: Claim, reply: Reply[str]) -> bool:
        """Records any outcome on the locked order; True when the next candidate should be tried.

        The order may have moved on while the provider was being called (a redelivered event sent
        it to review, staff failed or canceled it). An outcome only moves it where the state
        machine allows; an order already final keeps its status and its money, and what the
        provider said is put on its timeline for staff (``_note_late``)."""
        candidate, submission_id = claim.candidate, claim.submission_id
        async with self._pool.connection() as conn, conn.transaction():
            current = await QUERIES.one(conn, "lock_order", OrderRow, id=claim.id)
            assert current is not None
            if await QUERIES.scalar(conn, "newest_submission", order_id=claim.id) != submission_id:
                await _record_superseded(conn, current, claim, reply)
                return False
            if isinstance(reply, Accepted):
                upstream_id = str(reply.value)
                await finish_submission(conn, submission_id, "accepted", upstream_id, "")
                if not states.can_move(current.status, states.IN_PROGRESS):
                    await _note_late(conn, current, candidate, upstream_id, f"accepted it as #{upstream_id}")
                    return False
                await QUERIES.execute(
                    conn,
                    "mark_submitted",
                    id=claim.id,
                    provider_id=candidate.provider_id,
                    upstream_service_id=candidate.upstream_service_id,
                    upstream_order_id=upstream_id,
                )
                await record(conn, current, states.IN_PROGRESS, sent_note(candidate))
                return False
            if isinstance(reply, Rejected):
                await finish_submission(conn, submission_id, "rejected", "", reply.message)
                if not states.can_move(current.status, states.PENDING):
                    return False  # nothing was placed, and the order was settled meanwhile
                await QUERIES.execute(conn, "next_attempt", id=claim.id)
                await QUERIES.execute(
                    conn,
                    "add_event",
                    order_id=claim.id,
                    status=states.PENDING,
                    note=f"provider {candidate.provider_id} refused: {reply.message}"[:500],
                )
                return True
            assert isinstance(reply, Unknown)
            if not reply.sent:
                await finish_submission(conn, submission_id, "not_sent", "", reply.reason)
                if not states.can_move(current.status, states.PENDING):
                    return False
                await QUERIES.execute(
                    conn, "set_status", id=claim.id, status=states.PENDING, note=reply.reason[:500]
                )
            else:
                await finish_submission(conn, submission_id, "unknown", "", reply.reason)
                if states.can_move(current.status, states.NEEDS_REVIEW):
                    await self._review(conn, current, f"the provider's answer is unknown: {reply.reason}")
                else:
                    await _note_late(conn, current, candidate, "", f"gave no clear answer ({reply.reason})")
                return False
        assert isinstance(reply, Unknown)
        raise Unavailable(
            f"the provider could not be reached ({reply.reason}); the order is still pending",
            reason="PROVIDER_UNAVAILABLE",
            domain=DOMAIN,
            metadata={"order_id": str(claim.id)},
        )

    async def review_interrupted(self, order_id: int, submission_id: int) -> bool:
        """Sends to review an order whose submission ``submission_id`` a dead process left
        'starting' (``server/orders/stalled.py``), as a redelivered event would; False when the
        order moved on, or was sent again, meanwhile."""
        async with self._pool.connection() as conn, conn.transaction():
            order = await QUERIES.one(conn, "lock_order", OrderRow, id=order_id)
            if order is None or order.status != states.SUBMITTING:
                return False
            if await QUERIES.scalar(conn, "newest_submission", order_id=order_id) != submission_id:
                return False
            await self._review(conn, order, INTERRUPTED)
            return True

    async def _review(self, conn: Conn, order: OrderRow, note: str) -> None:
        states.check_move(order.status, states.NEEDS_REVIEW)
        await QUERIES.execute(conn, "set_status", id=order.id, status=states.NEEDS_REVIEW, note=note[:500])
        await record(conn, order, states.NEEDS_REVIEW, note)
