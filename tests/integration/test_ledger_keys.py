"""A ledger idempotency key names one movement: replaying it moves nothing and answers the first
movement; using it for another movement is a bug that fails loudly and moves nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from server.common.db import Pool
from server.common.errors import Internal
from server.wallet import ledger
from server.wallet.ledger import Conn

pytestmark = pytest.mark.integration


async def _user(pool: Pool, email: str, funds: int) -> int:
    async with pool.connection() as conn, conn.transaction():
        cur = await conn.execute(
            "INSERT INTO users (email, password_hash) VALUES (%s, '!') RETURNING id", (email,)
        )
        row = await cur.fetchone()
        assert row is not None
        await ledger.adjust(
            conn, user_id=row[0], amount=funds, key=f"fund:{email}", reference="t", memo="", actor="t"
        )
        return int(row[0])


async def _state(pool: Pool, user: int) -> tuple[int, int, int, int]:
    """available, held, transactions, entries"""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT w.available_micros, w.held_micros,"
            " (SELECT count(*) FROM ledger_transactions), (SELECT count(*) FROM ledger_entries)"
            " FROM wallets w WHERE w.user_id = %s",
            (user,),
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


Move = Callable[[Conn, int, int], Awaitable[ledger.Movement]]


def _hold(key: str) -> Move:
    return lambda conn, user, amount: ledger.hold(conn, user_id=user, amount=amount, key=key, reference="r")


def _settle(key: str) -> Move:
    return lambda conn, user, amount: ledger.settle(conn, user_id=user, amount=amount, key=key, reference="r")


def _release(key: str) -> Move:
    return lambda conn, user, amount: ledger.release(
        conn, user_id=user, amount=amount, key=key, reference="r"
    )


def _adjust(key: str) -> Move:
    return lambda conn, user, amount: ledger.adjust(
        conn, user_id=user, amount=amount, key=key, reference="r", memo="m", actor="t"
    )


async def _move(pool: Pool, move: Move, user: int, amount: int) -> ledger.Movement:
    async with pool.connection() as conn, conn.transaction():
        return await move(conn, user, amount)


@pytest.mark.parametrize("kind", ["hold", "settle", "release", "adjust"])
async def test_a_replayed_key_moves_nothing_and_answers_the_first_movement(pool: Pool, kind: str) -> None:
    user = await _user(pool, f"{kind}@example.com", 1_000)
    if kind in ("settle", "release"):  # they take from what is held
        await _move(pool, _hold("setup"), user, 500)
    move = {"hold": _hold, "settle": _settle, "release": _release, "adjust": _adjust}[kind]("k")
    first = await _move(pool, move, user, 100)
    after_first = await _state(pool, user)
    again = await _move(pool, move, user, 100)
    assert first.applied
    assert not again.applied
    assert again.transaction_id == first.transaction_id
    assert await _state(pool, user) == after_first


@pytest.mark.parametrize(
    ("kind", "other"),
    [
        ("hold", "another amount"),
        ("hold", "another user"),
        ("settle", "another amount"),  # a settle's row shows no change of available: the entries do
        ("release", "another amount"),
        ("adjust", "another amount"),
        ("adjust", "another kind"),
    ],
)
async def test_a_key_reused_for_another_movement_fails_and_moves_nothing(
    pool: Pool, kind: str, other: str
) -> None:
    user = await _user(pool, f"{kind}-{other[-4:]}@example.com", 1_000)
    second_user = await _user(pool, f"2-{kind}-{other[-4:]}@example.com", 1_000)
    await _move(pool, _hold("setup"), user, 500)
    await _move(pool, _hold("setup2"), second_user, 500)
    make = {"hold": _hold, "settle": _settle, "release": _release, "adjust": _adjust}[kind]
    await _move(pool, make("k"), user, 100)
    before = await _state(pool, user), await _state(pool, second_user)
    reuse = {
        "another amount": (make("k"), user, 101),
        "another user": (make("k"), second_user, 100),
        "another kind": (_release("k"), user, 100),
    }[other]
    with pytest.raises(Internal) as caught:
        await _move(pool, *reuse)
    assert "reuse the key k" in getattr(caught.value, "detail", "")
    assert (await _state(pool, user), await _state(pool, second_user)) == before
