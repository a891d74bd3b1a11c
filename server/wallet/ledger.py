"""The ledger seam: every balance change, on the caller's connection and in its transaction.

Other services import this module (and only this one) from ``server/wallet``, so that an order's
hold, the order row and its outbox event commit together. Each movement:

1. inserts a ``ledger_transactions`` row under a unique idempotency key; a key used before means
   the movement already happened, and nothing more is done (exactly once, under retries and
   duplicate events);
2. moves the cached balance with one conditional UPDATE (never read-check-write): a hold or a
   debit that the available balance does not cover changes no row, and raises
   ``INSUFFICIENT_FUNDS``; the row lock serialises concurrent movements of one wallet;
3. appends two entries that sum to zero (a deferred constraint trigger checks this at commit).

Accounts: ``user:<id>:available``, ``user:<id>:held``, ``funding`` (money from outside) and
``revenue`` (what delivered orders earned).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from psycopg import AsyncConnection
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus
from psycopg.rows import class_row

from server.common.errors import Aborted, FailedPrecondition, Internal
from server.common.money import format_micros
from server.common.sqlfile import load

QUERIES = load(__file__)
DOMAIN = "wallet.smm"
FUNDING = "funding"
REVENUE = "revenue"
Conn = AsyncConnection[Any]
T = TypeVar("T")


def available(user_id: int) -> str:
    return f"user:{user_id}:available"


def held(user_id: int) -> str:
    return f"user:{user_id}:held"


class LedgerInvariantBroken(Internal):
    """A movement that would break the ledger: a bug, never bad input. The transaction rolls
    back; the caller sees INTERNAL and the log has the details."""

    def __init__(self, what: str, user_id: int) -> None:
        super().__init__()
        self.detail = f"the ledger would {what} (user {user_id})"


@dataclass(frozen=True)
class Movement:
    transaction_id: int
    applied: bool  # False: the idempotency key was used before; nothing changed now


def insufficient_funds(available_micros: int, required_micros: int) -> FailedPrecondition:
    have, need = format_micros(available_micros), format_micros(required_micros)
    return FailedPrecondition(
        f"Insufficient funds: {have} available, {need} required.",
        reason="INSUFFICIENT_FUNDS",
        domain=DOMAIN,
        metadata={"available": have, "required": need},
    )


async def _begin(
    conn: Conn, kind: str, key: str, reference: str, user_id: int, amount: int, memo: str, actor: str
) -> int | None:
    transaction_id: int | None = await QUERIES.scalar(
        conn,
        "insert_transaction",
        kind=kind,
        idempotency_key=key,
        reference=reference,
        user_id=user_id,
        amount_micros=amount,
        memo=memo[:500],
        actor=actor,
    )
    return transaction_id


@dataclass(frozen=True)
class _Recorded:
    id: int
    kind: str
    user_id: int
    amount_micros: int  # the change of the user's available balance
    moved_micros: int  # what went from one account to the other


async def _existing(conn: Conn, key: str, kind: str, user_id: int, amount: int, moved: int) -> Movement:
    """The movement made before under ``key``. A key names one movement: the same key for
    another kind, user or amount is a caller's bug, and answering with the old movement would
    report money as moved that never was."""
    found = await QUERIES.one(conn, "movement_by_key", _Recorded, idempotency_key=key)
    if found is None:  # pragma: no cover - the conflicting row cannot vanish inside our transaction
        raise Aborted("retry the request", reason="CONFLICT_RETRY")
    if (found.kind, found.user_id, found.amount_micros, found.moved_micros) != (kind, user_id, amount, moved):
        raise LedgerInvariantBroken(
            f"reuse the key {key} of a {found.kind} of {found.moved_micros} for user "
            f"{found.user_id} for a {kind} of {moved}",
            user_id,
        )
    return Movement(found.id, applied=False)


async def _entries(conn: Conn, transaction_id: int, debit: str, credit: str, amount: int) -> None:
    await QUERIES.execute(
        conn,
        "insert_entries",
        transaction_id=transaction_id,
        debit_account=debit,
        credit_account=credit,
        amount_micros=amount,
    )


def _positive(amount: int) -> None:
    if amount <= 0:
        raise ValueError("ledger movements are positive amounts")


async def hold(
    conn: Conn, *, user_id: int, amount: int, key: str, reference: str, actor: str = ""
) -> Movement:
    """Available -> held (an order's funds), or INSUFFICIENT_FUNDS."""
    _positive(amount)
    transaction_id = await _begin(conn, "hold", key, reference, user_id, -amount, "", actor)
    if transaction_id is None:
        return await _existing(conn, key, "hold", user_id, -amount, amount)
    moved = await QUERIES.one(
        conn, "move_available_to_held", _Balances, user_id=user_id, amount_micros=amount
    )
    if moved is None:
        current = await QUERIES.one(conn, "get_wallet", _Balances, user_id=user_id)
        raise insufficient_funds(current.available_micros if current else 0, amount)
    await _entries(conn, transaction_id, available(user_id), held(user_id), amount)
    return Movement(transaction_id, applied=True)


async def settle(
    conn: Conn, *, user_id: int, amount: int, key: str, reference: str, actor: str = ""
) -> Movement:
    """Held -> revenue: the part of an order's funds that paid for what was delivered."""
    _positive(amount)
    transaction_id = await _begin(conn, "settle", key, reference, user_id, 0, "", actor)
    if transaction_id is None:
        return await _existing(conn, key, "settle", user_id, 0, amount)
    if await QUERIES.one(conn, "take_from_held", _Balances, user_id=user_id, amount_micros=amount) is None:
        raise LedgerInvariantBroken("settle more than is held", user_id)
    await _entries(conn, transaction_id, held(user_id), REVENUE, amount)
    return Movement(transaction_id, applied=True)


async def release(
    conn: Conn, *, user_id: int, amount: int, key: str, reference: str, actor: str = ""
) -> Movement:
    """Held -> available: funds of an order that were not used (undelivered, canceled, failed)."""
    _positive(amount)
    transaction_id = await _begin(conn, "release", key, reference, user_id, amount, "", actor)
    if transaction_id is None:
        return await _existing(conn, key, "release", user_id, amount, amount)
    if (
        await QUERIES.one(conn, "move_held_to_available", _Balances, user_id=user_id, amount_micros=amount)
        is None
    ):
        raise LedgerInvariantBroken("release more than is held", user_id)
    await _entries(conn, transaction_id, held(user_id), available(user_id), amount)
    return Movement(transaction_id, applied=True)


async def adjust(
    conn: Conn,
    *,
    user_id: int,
    amount: int,
    key: str,
    reference: str,
    memo: str,
    actor: str,
    kind: str = "adjustment",
) -> Movement:
    """Funding <-> available: a staff adjustment or a payment (signed; a debit needs the funds)."""
    if amount == 0:
        raise ValueError("an adjustment moves money")
    transaction_id = await _begin(conn, kind, key, reference, user_id, amount, memo, actor)
    if transaction_id is None:
        return await _existing(conn, key, kind, user_id, amount, abs(amount))
    await QUERIES.execute(conn, "ensure_wallet", user_id=user_id)
    if await QUERIES.one(conn, "change_available", _Balances, user_id=user_id, amount_micros=amount) is None:
        current = await QUERIES.one(conn, "get_wallet", _Balances, user_id=user_id)
        raise insufficient_funds(current.available_micros if current else 0, -amount)
    if amount > 0:
        await _entries(conn, transaction_id, FUNDING, available(user_id), amount)
    else:
        await _entries(conn, transaction_id, available(user_id), FUNDING, -amount)
    return Movement(transaction_id, applied=True)


@dataclass(frozen=True)
class Along(Generic[T]):
    """The caller's writes that commit with a hold, in the same statement (``hold_with``).

    ``sql`` continues the hold's WITH: the caller's data-modifying CTEs, each reading ``FROM hold``
    (directly or through another of its CTEs, so that nothing is written when the hold is not
    made), then the final SELECT, whose row becomes ``row``. Its parameters must not start with
    ``hold_``."""

    sql: str
    params: dict[str, Any]
    row: type[T]


def hold_with_sql(along_sql: str) -> str:
    """The whole statement ``hold_with`` runs (the benchmark's pgbench script replays it)."""
    return QUERIES.sql("insert_hold_along").rstrip().removesuffix(";") + ",\n" + along_sql


async def hold_with(
    conn: Conn, *, user_id: int, amount: int, key: str, reference: str, actor: str, along: Along[T]
) -> T:
    """Available -> held (``amount`` >= 0; 0 holds nothing) and the caller's writes, as ONE
    statement on a connection in autocommit: it commits, or fails, whole, in one round trip (a
    hold and an order in a transaction of their own took eleven). INSUFFICIENT_FUNDS when the
    available balance does not cover it; the caller's own constraint errors propagate.

    The key must be new (drawn from an id the caller has just taken from a sequence): a replayed
    key makes no hold and writes nothing, and that raises ``LedgerInvariantBroken``. Use ``hold``
    in a transaction for keys that may be retried."""
    if amount < 0:
        raise ValueError("ledger movements are positive amounts")
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise RuntimeError("hold_with is a unit of work of its own: call it outside a transaction")
    params = {
        **along.params,
        "hold_user_id": user_id,
        "hold_amount": amount,
        "hold_key": key,
        "hold_reference": reference,
        "hold_actor": actor,
        "hold_debit": available(user_id),
        "hold_credit": held(user_id),
    }
    try:
        async with conn.cursor(row_factory=class_row(along.row)) as cur:
            await cur.execute(hold_with_sql(along.sql), params)
            row = await cur.fetchone()
    except pg_errors.CheckViolation as exc:
        if exc.diag.constraint_name != "wallets_available_micros_check":
            raise
        row = None  # a hold that raced ours took the funds first
    if row is not None:
        return row
    if await QUERIES.scalar(conn, "transaction_by_key", idempotency_key=key) is not None:
        raise LedgerInvariantBroken(f"hold again under the used key {key}", user_id)
    current = await QUERIES.one(conn, "get_wallet", _Balances, user_id=user_id)
    have = current.available_micros if current else 0
    if have < amount:
        raise insufficient_funds(have, amount)
    # Short as the statement began, enough now (a credit or a release landed meanwhile).
    raise Aborted("the balance changed while the hold was made; retry", reason="CONFLICT_RETRY")


@dataclass(frozen=True)
class _Balances:
    available_micros: int
    held_micros: int
