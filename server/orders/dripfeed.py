"""Drip-feed that smm sends itself, for a service whose provider has no drip-feed.

An order of ``runs`` x ``quantity`` every ``interval`` minutes gets ``runs`` rows in ``order_runs``,
due at placement, + interval, + 2 x interval, ... Each run goes out when due as an upstream order
of its own, with the same care as a whole order (``dispatch.py``): a ``starting`` submission row
before the call; a refusal tries the next fallback (one known to cost more than the run's share of
the order's price is skipped, as for an order); certainly-not-sent waits and goes out later; an
unknown answer (or a submission interrupted by a crash) is never sent again blindly: the run and
the order go to needs review. Runs are polled like orders, in batches per provider.

The money stays on the order: one hold when it was placed, and when the last run ends the order
finishes once through ``tracking.finish`` (settle and release exactly once, ledger keys
``order:<id>:settle|release``). Remains = what the runs did not deliver (a failed or canceled run
counts its whole quantity): completed when nothing remains; when nothing was delivered, failed if
every run failed, else canceled; otherwise partial.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from server.common.db import Pool
from server.common.money import mul_div_round
from server.orders import states
from server.orders.dispatch import add_order, candidates_for, dearer_fallback, finish_submission
from server.orders.fanout import by_provider, each, per_provider
from server.orders.repo import QUERIES, Candidate, Conn, DueRun, OrderRow, RunRow
from server.orders.tracking import finish, partial_without_remains, poll_interval_s, record
from server.providers.adapters.base import Accepted, Rejected, Reply, Unknown, UpstreamStatus
from server.providers.clients import ProviderClients
from server.providers.health import about_orders

log = logging.getLogger(__name__)
# A run whose provider could not be reached waits this long before the next try.
NOT_SENT_DELAY_S = 60
# A run (or an order's due runs) whose handling failed with an error is tried again after this.
FAILED_DELAY_S = 300
# Statuses an order with runs still to send or to follow may have.
SENDING = frozenset({states.PENDING, states.IN_PROGRESS, states.PROCESSING})


def _label(order: OrderRow, run: RunRow) -> str:
    return f"run {run.run_no}/{order.runs}"


class DripFeed:
    def __init__(self, pool: Pool, clients: ProviderClients) -> None:
        self._pool = pool
        self._clients = clients

    # ------------------------------------------------------------------------------ sending runs

    async def send_due(self, order_id: int) -> int:
        """Sends every run of the order that is due; returns how many went out."""
        sent = 0
        while True:
            claimed = await self._claim(order_id)
            if claimed is None:
                return sent
            order, run, candidate, submission_id = claimed
            outcome = await self._send(order, run, candidate, submission_id)
            if outcome == "accepted":
                sent += 1
            elif outcome == "stop":
                return sent

    async def send_all_due(self, limit: int) -> int:
        """The tick: every order with a run due, the orders of each provider in turn and providers
        side by side. An order whose runs cannot be handled (an error) is logged and its due runs
        wait ``FAILED_DELAY_S``; the other orders go on."""
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(QUERIES.sql("list_due_run_orders"), {"limit": limit})).fetchall()

        async def later(order_id: int) -> None:
            async with self._pool.connection() as conn:
                await QUERIES.execute(conn, "postpone_due_runs", order_id=order_id, delay_s=FAILED_DELAY_S)

        async def orders_of(_: int, order_ids: Sequence[int]) -> int:
            return await each(
                order_ids, self.send_due, what=lambda o: f"send the due runs of order {o}", on_failure=later
            )

        provider_of = {int(order_id): int(provider_id) for order_id, provider_id in rows}
        return await per_provider(
            by_provider(provider_of, provider_of.__getitem__), orders_of, what="send drip-feed runs"
        )

    async def _claim(self, order_id: int) -> tuple[OrderRow, RunRow, Candidate, int] | None:
        """The next due run -> submitting with a 'starting' submission; None when nothing is to send."""
        async with self._pool.connection() as conn, conn.transaction():
            while True:
                order = await QUERIES.one(conn, "lock_order", OrderRow, id=order_id)
                if order is None or not order.panel_dripfeed or order.status not in SENDING:
                    return None
                run = await QUERIES.one(conn, "lock_next_run", RunRow, order_id=order_id)
                if run is None:
                    return None
                if run.state == states.SCHEDULED and order.cancel_state == "requested":
                    # Scheduled again after the user canceled (staff found a lost run not placed).
                    await self.cancel_remaining(
                        conn, order, f"{_label(order, run)} not sent: the order was canceled"
                    )
                    continue
                if run.state == states.SUBMITTING:
                    await self._review(
                        conn, order, run, "a submission was interrupted; the run may exist upstream"
                    )
                    return None
                candidates = await candidates_for(conn, order)
                attempt = run.attempt
                while attempt < len(candidates) and await _dearer_than_run(
                    conn, order, run, candidates[attempt]
                ):
                    attempt += 1
                if attempt >= len(candidates):
                    await self._end_run(
                        conn, order, run, states.FAILED, run.quantity, "no provider accepted the run"
                    )
                    continue  # the order may have finished; the loop re-reads it
                candidate = candidates[attempt]
                submission_id = await QUERIES.scalar(
                    conn,
                    "insert_run_submission",
                    order_id=order.id,
                    run_no=run.run_no,
                    provider_id=candidate.provider_id,
                    upstream_service_id=candidate.upstream_service_id,
                )
                await QUERIES.execute(
                    conn,
                    "start_run_submission",
                    order_id=order.id,
                    run_no=run.run_no,
                    provider_id=candidate.provider_id,
                    upstream_service_id=candidate.upstream_service_id,
                )
                return order, run, candidate, int(submission_id)

    async def _send(self, order: OrderRow, run: RunRow, candidate: Candidate, submission_id: int) -> str:
        """Calls the provider once for the run and records the outcome: accepted, retry or stop."""
        adapter = await self._clients.adapter_for(candidate.provider_id)
        if adapter is None:
            reply: Reply[str] = Rejected("the provider is disabled")
        else:
            with about_orders([order.id]):
                reply = await adapter.add(add_order(candidate.upstream_service_id, order.upstream_params))
        label = _label(order, run)
        async with self._pool.connection() as conn, conn.transaction():
            current = await QUERIES.one(conn, "lock_order", OrderRow, id=order.id)
            assert current is not None
            key = {"order_id": order.id, "run_no": run.run_no}
            if isinstance(reply, Accepted):
                upstream_id = str(reply.value)
                await finish_submission(conn, submission_id, "accepted", upstream_id, "")
                await QUERIES.execute(conn, "mark_run_submitted", **key, upstream_order_id=upstream_id)
                note = f"{label} sent to provider {candidate.provider_id} (order {upstream_id})"
                if current.status == states.PENDING:
                    await QUERIES.execute(
                        conn,
                        "start_panel_dripfeed",
                        id=order.id,
                        provider_id=candidate.provider_id,
                        upstream_service_id=candidate.upstream_service_id,
                    )
                    await record(conn, current, states.IN_PROGRESS, note)
                else:
                    await QUERIES.execute(
                        conn, "add_event", order_id=order.id, status=current.status, note=note
                    )
                return "accepted"
            if isinstance(reply, Rejected):
                await finish_submission(conn, submission_id, "rejected", "", reply.message)
                note = f"{label}: provider {candidate.provider_id} refused: {reply.message}"[:500]
                await QUERIES.execute(conn, "next_run_attempt", **key, note=note)
                await QUERIES.execute(conn, "add_event", order_id=order.id, status=current.status, note=note)
                return "stop" if await self._canceled_meanwhile(conn, current, label) else "retry"
            assert isinstance(reply, Unknown)
            if not reply.sent:
                await finish_submission(conn, submission_id, "not_sent", "", reply.reason)
                await QUERIES.execute(
                    conn, "delay_run", **key, delay_s=NOT_SENT_DELAY_S, note=reply.reason[:500]
                )
                await self._canceled_meanwhile(conn, current, label)
                return "stop"
            await finish_submission(conn, submission_id, "unknown", "", reply.reason)
            locked = await QUERIES.one(conn, "lock_run", RunRow, **key)
            assert locked is not None
            await self._review(conn, current, locked, f"the provider's answer is unknown: {reply.reason}")
            return "stop"

    async def _canceled_meanwhile(self, conn: Conn, order: OrderRow, label: str) -> bool:
        """A run that went back to scheduled (refused, or not sent) while the user canceled the
        order is canceled with the others instead of going out later; True when it was."""
        if order.cancel_state != "requested":
            return False
        await self.cancel_remaining(conn, order, f"{label} not sent again: the order was canceled")
        return True

    async def _review(self, conn: Conn, order: OrderRow, run: RunRow, why: str) -> None:
        note = f"{_label(order, run)}: {why}"[:500]
        await QUERIES.execute(
            conn, "set_run_state", order_id=order.id, run_no=run.run_no, state=states.NEEDS_REVIEW, note=note
        )
        if order.status != states.NEEDS_REVIEW:
            states.check_move(order.status, states.NEEDS_REVIEW)
            await QUERIES.execute(conn, "set_status", id=order.id, status=states.NEEDS_REVIEW, note=note)
            await record(conn, order, states.NEEDS_REVIEW, note)

    # ------------------------------------------------------------------------------ following runs

    async def poll(self, limit: int) -> tuple[int, int]:
        """Asks each provider about its runs due for a look; returns (checked, changed)."""
        async with self._pool.connection() as conn:
            due = await QUERIES.all(conn, "list_runs_due_for_poll", DueRun, limit=limit)

        async def postpone(_: int, runs: Sequence[DueRun]) -> None:
            await self._postpone(runs, 60)

        # Providers side by side, as for orders (``Tracker.poll``).
        changed = await per_provider(
            by_provider(due, lambda r: r.provider_id), self._poll_provider, what="poll drip-feed runs",
            on_failure=postpone,
        )  # fmt: skip
        return len(due), changed

    async def _poll_provider(self, provider_id: int, runs: Sequence[DueRun]) -> int:
        adapter = await self._clients.adapter_for(provider_id, open_orders=True)
        if adapter is None:
            await self._postpone(runs, 300)
            return 0
        with about_orders(sorted({r.order_id for r in runs})):
            reply = await adapter.statuses([r.upstream_order_id for r in runs])
        if not isinstance(reply, Accepted):
            await self._postpone(runs, 60)
            return 0
        statuses = reply.value

        async def one(run: DueRun) -> int:
            found = statuses.get(run.upstream_order_id)
            if isinstance(found, UpstreamStatus):
                return await self.apply(run.order_id, run.run_no, found)
            # Unknown upstream or no answer for it: look again later, staff see the note.
            await self._postpone([run], 3600 if isinstance(found, Rejected) else 60)
            return 0

        async def later(run: DueRun) -> None:
            await self._postpone([run], FAILED_DELAY_S)

        # A run that cannot be updated (e.g. its order's money cannot move) stops no other run and
        # does not come first again on every tick: it is logged and asked about later.
        return await each(
            runs, one, what=lambda r: f"apply the provider's status to run {r.run_no} of order {r.order_id}",
            on_failure=later,
        )  # fmt: skip

    async def _postpone(self, runs: Sequence[DueRun], seconds: int) -> None:
        async with self._pool.connection() as conn:
            await QUERIES.execute(
                conn,
                "postpone_run_polls",
                order_ids=[r.order_id for r in runs],
                run_nos=[r.run_no for r in runs],
                next_poll_s=seconds,
            )

    async def apply(self, order_id: int, run_no: int, upstream: UpstreamStatus) -> int:
        """One upstream status for a run; 1 when the run's state changed."""
        async with self._pool.connection() as conn, conn.transaction():
            order = await QUERIES.one(conn, "lock_order", OrderRow, id=order_id)
            run = await QUERIES.one(conn, "lock_run", RunRow, order_id=order_id, run_no=run_no)
            if order is None or run is None or run.state not in (states.IN_PROGRESS, states.PROCESSING):
                return 0
            target = states.UPSTREAM.get(upstream.status.value, run.state)
            if target == run.state:
                await self._track(conn, run, target, upstream.start_count)
                return 0
            if target not in states.RUN_TRANSITIONS[run.state]:
                log.warning("ignored an upstream status", extra={"order_id": order_id, "to": target})
                return 0
            if partial_without_remains(upstream):
                # As for an order: how much was not delivered is not ours to guess (0 charged the run
                # in full). Staff finish the order with its remains; the run is asked about hourly.
                note = f"{_label(order, run)}: the provider says Partial without what remains"
                await QUERIES.execute(
                    conn, "set_run_state", order_id=order.id, run_no=run.run_no, state=run.state, note=note
                )
                await QUERIES.execute(conn, "set_status", id=order.id, status=order.status, note=note)
                await QUERIES.execute(
                    conn, "postpone_run_polls", order_ids=[order.id], run_nos=[run.run_no], next_poll_s=3600
                )
                return 0
            if target in states.FINAL:
                remains = {states.COMPLETED: 0, states.CANCELED: run.quantity}.get(
                    target, max(0, min(upstream.remains or 0, run.quantity))
                )
                await self._end_run(conn, order, run, target, remains, "", start_count=upstream.start_count)
            else:
                await self._track(conn, run, target, upstream.start_count)
            return 1

    async def _track(self, conn: Conn, run: RunRow, state: str, start_count: int | None) -> None:
        age = (datetime.now(UTC) - (run.submit_time or run.update_time)).total_seconds()
        await QUERIES.execute(
            conn,
            "track_run",
            order_id=run.order_id,
            run_no=run.run_no,
            state=state,
            start_count=start_count,
            next_poll_s=poll_interval_s(age),
        )

    async def _end_run(
        self, conn: Conn, order: OrderRow, run: RunRow, state: str, remains: int, why: str,
        *, start_count: int | None = None,
    ) -> None:  # fmt: skip
        note = f"{_label(order, run)} {state}" + (f": {why}" if why else f", {remains} not delivered")
        await QUERIES.execute(
            conn,
            "finish_run",
            order_id=order.id,
            run_no=run.run_no,
            state=state,
            remains=remains,
            start_count=start_count,
            note=note[:500],
        )
        await QUERIES.execute(conn, "add_event", order_id=order.id, status=order.status, note=note[:500])
        await finish_when_done(conn, order)

    # ------------------------------------------------------------------------------ staff and users

    async def stop(self, conn: Conn, order: OrderRow, why: str) -> None:
        """A cancel of a locked order (the user's or staff's): the runs not sent are canceled, and one
        out at this moment that comes back unsent is canceled too (``_canceled_meanwhile``), not sent
        later; runs the provider has end by their own status, and the order with the last of them."""
        await QUERIES.execute(
            conn, "set_cancel_state", id=order.id, cancel_state="requested", cancel_message=""
        )
        await self.cancel_remaining(conn, order, why)

    async def cancel_remaining(self, conn: Conn, order: OrderRow, why: str) -> None:
        """Runs not sent yet are canceled (their quantity released when the order ends)."""
        await QUERIES.execute(conn, "cancel_scheduled_runs", order_id=order.id, note=why[:500])
        await QUERIES.execute(conn, "add_event", order_id=order.id, status=order.status, note=why[:500])
        await finish_when_done(conn, order)

    async def resolve(
        self, conn: Conn, order: OrderRow, resolution: str, upstream_order_id: str, why: str
    ) -> None:
        """Staff resolve the earliest run in review (found / not_placed / failed) of a locked order in
        review; when no run is left in review the order carries on."""
        runs = await QUERIES.all(conn, "list_runs", RunRow, order_id=order.id)
        run = next((r for r in runs if r.state == states.NEEDS_REVIEW), None)
        if run is not None:
            key = {"order_id": order.id, "run_no": run.run_no}
            label = _label(order, run)
            if resolution == "found":
                await QUERIES.execute(conn, "found_run_upstream", **key, upstream_order_id=upstream_order_id)
                note = f"{label} found upstream by staff: {why}"
            elif resolution == "not_placed":
                await QUERIES.execute(
                    conn, "set_run_state", **key, state=states.SCHEDULED, note=f"staff: {why}"
                )
                note = f"{label} not placed upstream, sent again: {why}"
            else:
                await QUERIES.execute(
                    conn, "finish_run", **key, state=states.FAILED, remains=run.quantity, start_count=None,
                    note=f"failed by staff: {why}"[:500],
                )  # fmt: skip
                note = f"{label} failed by staff: {why}"
            await QUERIES.execute(conn, "add_event", order_id=order.id, status=order.status, note=note[:500])
        runs = await QUERIES.all(conn, "list_runs", RunRow, order_id=order.id)
        if any(r.state == states.NEEDS_REVIEW for r in runs):
            return
        target = states.IN_PROGRESS if any(r.upstream_order_id for r in runs) else states.PENDING
        states.check_move(order.status, target)
        await QUERIES.execute(conn, "set_status", id=order.id, status=target, note="")
        await record(conn, order, target, "review resolved by staff")
        current = await QUERIES.one(conn, "lock_order", OrderRow, id=order.id)
        assert current is not None
        await finish_when_done(conn, current)


async def _dearer_than_run(conn: Conn, order: OrderRow, run: RunRow, candidate: Candidate) -> bool:
    """Skips a fallback dearer than the run (``dearer_fallback``), with a line on the timeline. A run
    is priced at its share of the order's price, the part its release would give back: the whole
    order's price would let a fallback take every run at a loss."""
    share = mul_div_round(order.price_micros, run.quantity, order.units)
    note = await dearer_fallback(
        conn, order, candidate, units=run.quantity, price_micros=share, priced="the run's price"
    )
    if note is None:
        return False
    note = f"{_label(order, run)}: {note}"[:500]
    await QUERIES.execute(conn, "next_run_attempt", order_id=order.id, run_no=run.run_no, note=note)
    await QUERIES.execute(conn, "add_event", order_id=order.id, status=order.status, note=note)
    return True


async def finish_when_done(conn: Conn, order: OrderRow) -> None:
    """Finishes a locked order whose runs have all ended (and that is not waiting for staff)."""
    if order.status not in SENDING:
        return
    runs = await QUERIES.all(conn, "list_runs", RunRow, order_id=order.id)
    if not runs or any(r.state in states.RUN_OPEN for r in runs):
        return
    status, remains = final_status(runs)
    first_start = next((r.start_count for r in runs if r.start_count is not None), None)
    await finish(conn, order, status, remains=remains, start_count=first_start)


def final_status(runs: list[RunRow]) -> tuple[str, int]:
    """(status, remains) of an order whose runs have all ended."""
    remains = sum(r.remains if r.remains is not None else r.quantity for r in runs)
    delivered = sum(r.quantity for r in runs) - remains
    if remains == 0:
        return states.COMPLETED, 0
    if delivered == 0:
        return (states.FAILED if all(r.state == states.FAILED for r in runs) else states.CANCELED), remains
    return states.PARTIAL, remains
