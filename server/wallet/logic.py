"""Wallet rules: balances, statements, staff adjustments and the ledger check."""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from smm.v1 import events_pb2

from server.common import audit, idempotency
from server.common.db import Pool
from server.common.errors import FieldViolation, NotFound, collect
from server.common.money import format_micros
from server.common.outbox import add_event
from server.wallet import ledger
from server.wallet.ledger import DOMAIN, QUERIES, Conn

log = logging.getLogger(__name__)
MAX_REASON = 500
LEDGER_ALERT = "smm.wallet.ledger.alert"
BALANCE_ADJUSTED = "smm.wallet.balance.adjusted"
FINAL_STATUSES = frozenset({"completed", "partial", "canceled", "failed", "expired"})


@dataclass(frozen=True)
class Problem:
    """One broken invariant: what an operator reads (``text``), and what it is (``key``): the thing
    that is broken and by how much, without the amounts that move with ordinary use (a drifted
    wallet's balances change with every order; its drift does not). The alert compares keys."""

    text: str
    key: str


@dataclass(frozen=True)
class BalanceRow:
    available_micros: int
    held_micros: int


@dataclass(frozen=True)
class TransactionRow:
    id: int
    kind: str
    reference: str
    user_id: int
    amount_micros: int
    memo: str
    actor: str
    create_time: datetime
    held_micros: int  # the change of the held balance (its entry on the user's held account)


def for_customer(row: TransactionRow) -> TransactionRow:
    """A movement as its user's statement shows it. An adjustment's stored reference is
    ``adjustment:<request id>``: the staff tool's own request id (its Idempotency-Key), an internal
    value of staff, so the user sees ``adjustment:<transaction id>`` instead. Formatted here, on
    output only: the ledger row (immutable) and staff's answers keep the request id. The reason
    (``memo``) is meant for the user and stays."""
    if row.kind == "adjustment":
        return replace(row, reference=f"adjustment:{row.id}")
    return row


def user_not_found(user_id: int) -> NotFound:
    return NotFound("user not found", reason="USER_NOT_FOUND", domain=DOMAIN, metadata={"id": str(user_id)})


class WalletLogic:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def balance(self, user_id: int) -> BalanceRow:
        async with self._pool.connection() as conn:
            row = await QUERIES.one(conn, "get_wallet", BalanceRow, user_id=user_id)
        return row or BalanceRow(0, 0)

    async def user_balance(self, user_id: int) -> BalanceRow:
        """Any user's balance (staff): USER_NOT_FOUND for an id no user has."""
        async with self._pool.connection() as conn:
            row = await QUERIES.one(conn, "get_user_wallet", BalanceRow, user_id=user_id)
        if row is None:
            raise user_not_found(user_id)
        return row

    async def transactions(self, user_id: int, before_id: int, limit: int) -> list[TransactionRow]:
        """The user's own statement, as the user sees it (``for_customer``)."""
        async with self._pool.connection() as conn:
            rows = await QUERIES.all(
                conn, "list_transactions", TransactionRow, user_id=user_id, before_id=before_id, limit=limit
            )
        return [for_customer(row) for row in rows]

    async def adjust(
        self, *, user_id: int, amount: int, reason: str, actor: str, key: idempotency.RequestKey | None
    ) -> TransactionRow:
        violations = []
        if amount == 0:
            violations.append(FieldViolation("amount", "must not be zero"))
        if not 1 <= len(reason.strip()) <= MAX_REASON:
            violations.append(FieldViolation("reason", f"is required (at most {MAX_REASON} characters)"))
        collect(violations, domain=DOMAIN)
        request_id = key.request_id if key else uuid.uuid4().hex
        # Request ids are the caller's own (the replay check is per actor), so the ledger key is too:
        # another caller's request under the same id is another adjustment.
        ledger_key = f"adjustment:{user_id}:{actor}:{request_id}"
        async with self._pool.connection() as conn, conn.transaction():
            if key:
                if await idempotency.claim(conn, key) is not None:
                    return await _by_key(conn, ledger_key)
                # Request ids are purged after SMM_RETAIN_REQUEST_IDS_DAYS, ledger keys never: the same
                # adjustment again is answered (not made, audited or announced again), another one
                # under the id is refused, as the request id's record would have.
                made = await _made(conn, ledger_key)
                if made is not None:
                    if (made.amount_micros, made.memo) != (amount, reason.strip()):
                        raise idempotency.reused(key)
                    await idempotency.remember(conn, key, b"1")
                    return made
            # Share-locks the user row to the commit: serialised with the account's deletion.
            if await QUERIES.scalar(conn, "lock_live_user", id=user_id) is None:
                raise user_not_found(user_id)
            await ledger.adjust(
                conn,
                user_id=user_id,
                amount=amount,
                key=ledger_key,
                reference=f"adjustment:{request_id}",
                memo=reason.strip(),
                actor=actor,
            )
            # Read under the wallet row's lock (the adjustment's UPDATE took it), so exact; "before"
            # follows from it (read before the lock, a racing adjustment could land in between).
            after = await QUERIES.one(conn, "get_wallet", BalanceRow, user_id=user_id) or BalanceRow(0, 0)
            await audit.record(
                conn,
                "wallet.adjusted",
                target=f"user:{user_id}",
                before={"available": format_micros(after.available_micros - amount)},
                after={
                    "available": format_micros(after.available_micros),
                    "amount": format_micros(amount),
                    "reason": reason.strip(),
                },
            )
            event = events_pb2.BalanceAdjusted(
                user_id=user_id, amount=format_micros(amount), reason=reason.strip()
            )
            await add_event(conn, BALANCE_ADJUSTED, event)
            if key:
                await idempotency.remember(conn, key, b"1")
            return await _by_key(conn, ledger_key)

    async def verify(self) -> tuple[list[str], int]:
        async with self._pool.connection() as conn:
            return await check(conn)

    async def verify_job(self, conn: Conn) -> str:
        """The scheduled check (hourly). An alert event when the set of problems is new: the ledger
        was clean (or never alerted) before, or the set differs from the one last alerted about.
        An unchanged set is not alerted again, but every run's result (``job_runs``) and a log line
        say that the ledger is still broken."""
        problems, checked = await find_problems(conn)
        if not problems:
            cleared = await QUERIES.scalar(conn, "clear_ledger_alert")
            if cleared is not None:
                log.info("the ledger is clean again (broken since the alert at %s)", cleared)
                return f"ledger ok ({checked} transactions); clean again since the alert at {cleared}"
            return f"ledger ok ({checked} transactions)"
        broken = f"LEDGER BROKEN: {len(problems)} problem(s) in {checked} transactions"
        alerted = await QUERIES.scalar(
            conn, "note_ledger_problems", digest=problems_digest(problems), problem_count=len(problems)
        )
        if alerted is not None:
            texts = [p.text for p in problems[:100]]
            await add_event(conn, LEDGER_ALERT, events_pb2.LedgerAlert(problems=texts))
            log.error("%s; alert raised", broken)
            return f"{broken}; alert raised"
        since = await QUERIES.scalar(conn, "last_ledger_alert")
        log.error("%s; unchanged since the alert at %s, not alerted again", broken, since)
        return f"{broken}; unchanged since the alert at {since}, not alerted again"


async def _made(conn: Conn, key: str) -> TransactionRow | None:
    return await QUERIES.one(conn, "transaction_by_key", TransactionRow, idempotency_key=key)


async def _by_key(conn: Conn, key: str) -> TransactionRow:
    row = await _made(conn, key)
    assert row is not None
    return row


async def check(conn: Conn) -> tuple[list[str], int]:
    """Every invariant: entries sum to zero per transaction (and overall), cached balances equal
    their entries and are never negative, each order's money adds up, and each user's held funds
    are what their orders still hold."""
    problems, checked = await find_problems(conn)
    return [p.text for p in problems], checked


def problems_digest(problems: list[Problem]) -> bytes:
    """What the last alert was about, in 32 bytes: the SHA-256 of the problems' keys as a set."""
    return hashlib.sha256("\n".join(sorted({p.key for p in problems})).encode()).digest()


async def find_problems(conn: Conn) -> tuple[list[Problem], int]:
    """``check``'s problems, each with its key (``Problem``)."""
    problems: list[Problem] = []
    async with conn.cursor() as cur:
        await cur.execute(QUERIES.sql("unbalanced_transactions"))
        for transaction_id, total, entries in await cur.fetchall():
            # The ledger is append-only: a transaction's entries never change, so its text is its key.
            text = f"transaction {transaction_id}: {entries} entries summing to {format_micros(total)}"
            problems.append(Problem(text, text))
        await cur.execute(QUERIES.sql("wallet_mismatches"))
        for user_id, cached_available, cached_held, ledger_available, ledger_held in await cur.fetchall():
            text = (
                f"user {user_id}: cached available {format_micros(cached_available)} / held "
                f"{format_micros(cached_held)}, ledger says {format_micros(ledger_available)} / "
                f"{format_micros(ledger_held)}"
            )
            key = (
                f"user {user_id}: available off by {cached_available - ledger_available}, held off by "
                f"{cached_held - ledger_held}, negative {cached_available < 0}/{cached_held < 0}"
            )
            problems.append(Problem(text, key))
        await cur.execute(QUERIES.sql("order_money_mismatches"))
        for row in await cur.fetchall():
            order_id, status, price, charged, released, l_held, l_charged, l_released = row
            text = (
                f"order {order_id} ({status}): price {format_micros(price)} charged {format_micros(charged)} "
                f"released {format_micros(released)}; ledger held {format_micros(l_held)} charged "
                f"{format_micros(l_charged)} released {format_micros(l_released)}"
            )
            unsettled = price - charged - released if status in FINAL_STATUSES else 0
            key = (
                f"order {order_id}: held off by {l_held - price}, charged off by {l_charged - charged}, "
                f"released off by {l_released - released}, final and off by {unsettled}"
            )
            problems.append(Problem(text, key))
        await cur.execute(QUERIES.sql("held_mismatches"))
        for user_id, ledger_held, orders_hold in await cur.fetchall():
            text = (
                f"user {user_id}: ledger held {format_micros(ledger_held)}, "
                f"orders hold {format_micros(orders_hold)}"
            )
            problems.append(Problem(text, f"user {user_id}: held off orders by {ledger_held - orders_hold}"))
        await cur.execute(QUERIES.sql("ledger_totals"))
        total_row: Any = await cur.fetchone()
        if total_row and total_row[0] != 0:
            text = f"all entries sum to {format_micros(total_row[0])}, not 0"
            problems.append(Problem(text, text))
        await cur.execute(QUERIES.sql("count_transactions"))
        count_row: Any = await cur.fetchone()
    return problems, int(count_row[0]) if count_row else 0
