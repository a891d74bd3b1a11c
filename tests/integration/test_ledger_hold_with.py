"""ledger.hold_with: a hold and the caller's writes as one statement that commits or fails whole."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from server.common.db import Pool
from server.common.errors import FailedPrecondition, Internal
from server.wallet import ledger

pytestmark = pytest.mark.integration

# The caller's part: one outbox row per hold made, its id returned.
NOTE = """noted AS (
    INSERT INTO outbox_events (subject, payload) SELECT %(subject)s, '\\x00'::bytea FROM hold RETURNING id
)
SELECT id FROM noted"""


@dataclass(frozen=True)
class Noted:
    id: int


async def _user(pool: Pool, email: str, funds: int = 0) -> int:
    async with pool.connection() as conn, conn.transaction():
        cur = await conn.execute(
            "INSERT INTO users (email, password_hash) VALUES (%s, '!') RETURNING id", (email,)
        )
        row = await cur.fetchone()
        assert row is not None
        if funds:
            await ledger.adjust(
                conn, user_id=row[0], amount=funds, key=f"fund:{email}", reference="t", memo="", actor="t"
            )
        return int(row[0])


async def _count(pool: Pool, sql: str) -> int:
    async with pool.connection() as conn:
        row = await (await conn.execute(sql)).fetchone()
    assert row is not None
    return int(row[0])


async def _wallet(pool: Pool, user: int) -> tuple[int, int] | None:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT available_micros, held_micros FROM wallets WHERE user_id = %s", (user,)
        )
        row = await cur.fetchone()
    return None if row is None else (int(row[0]), int(row[1]))


def _along(subject: str = "smm.tests.noted") -> ledger.Along[Noted]:
    return ledger.Along(NOTE, {"subject": subject}, Noted)


async def test_a_hold_and_the_callers_row_commit_together(pool: Pool) -> None:
    user = await _user(pool, "a@example.com", 1_000)
    async with pool.connection() as conn:
        noted = await ledger.hold_with(
            conn, user_id=user, amount=400, key="hold:a:1", reference="r", actor="t", along=_along()
        )
    assert noted.id > 0
    assert await _wallet(pool, user) == (600, 400)
    assert await _count(pool, "SELECT count(*) FROM ledger_entries") == 4  # the funding and the hold


async def test_short_funds_or_no_wallet_write_nothing(pool: Pool) -> None:
    no_wallet = await _user(pool, "n@example.com")
    poor = await _user(pool, "p@example.com", 1)
    for user in (no_wallet, poor):
        async with pool.connection() as conn:
            with pytest.raises(FailedPrecondition) as caught:
                await ledger.hold_with(
                    conn, user_id=user, amount=2, key=f"hold:{user}", reference="r", actor="t", along=_along()
                )
        assert caught.value.reason == "INSUFFICIENT_FUNDS"
    assert await _wallet(pool, poor) == (1, 0)
    assert await _count(pool, "SELECT count(*) FROM outbox_events") == 0
    assert await _count(pool, "SELECT count(*) FROM ledger_transactions WHERE kind = 'hold'") == 0


async def test_nothing_to_hold_still_writes_the_callers_row(pool: Pool) -> None:
    user = await _user(pool, "z@example.com")
    async with pool.connection() as conn:
        noted = await ledger.hold_with(
            conn, user_id=user, amount=0, key="hold:z:1", reference="r", actor="t", along=_along()
        )
    assert noted.id > 0
    assert await _count(pool, "SELECT count(*) FROM ledger_transactions") == 0


async def test_a_used_key_is_a_bug_and_writes_nothing(pool: Pool) -> None:
    user = await _user(pool, "k@example.com", 1_000)
    async with pool.connection() as conn:
        await ledger.hold_with(
            conn, user_id=user, amount=1, key="hold:k", reference="r", actor="t", along=_along()
        )
        with pytest.raises(Internal):
            await ledger.hold_with(
                conn, user_id=user, amount=1, key="hold:k", reference="r", actor="t", along=_along()
            )
    assert await _count(pool, "SELECT count(*) FROM outbox_events") == 1


async def test_racing_holds_never_overdraw(pool: Pool) -> None:
    user = await _user(pool, "r@example.com", 10)

    async def one(n: int) -> bool:
        async with pool.connection() as conn:
            try:
                await ledger.hold_with(
                    conn, user_id=user, amount=1, key=f"hold:r:{n}", reference="r", actor="t", along=_along()
                )
            except FailedPrecondition:
                return False
        return True

    made = await asyncio.gather(*(one(n) for n in range(30)))
    assert sum(made) == 10
    assert await _wallet(pool, user) == (0, 10)
    assert await _count(pool, "SELECT count(*) FROM outbox_events") == 10


async def test_it_refuses_to_run_inside_a_transaction(pool: Pool) -> None:
    async with pool.connection() as conn, conn.transaction():
        with pytest.raises(RuntimeError):
            await ledger.hold_with(
                conn, user_id=1, amount=1, key="x", reference="r", actor="t", along=_along()
            )
