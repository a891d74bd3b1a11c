"""``smm ledger verify`` (WalletService.VerifyLedger) against a ledger broken behind the server's
back: each promised invariant, broken in the test database with SQL, is reported."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from psycopg import sql
from smm.v1 import wallet_service_pb2 as wpb
from smm.v1 import wallet_service_pb2_grpc as wpb_grpc

from server.common.db import Pool
from server.common.money import format_micros
from tests.fix_grpc import system_metadata
from tests.fix_shop import Shop

pytestmark = pytest.mark.integration


async def _problems(channel: grpc.aio.Channel) -> list[str]:
    result = await wpb_grpc.WalletServiceStub(channel).VerifyLedger(
        wpb.VerifyLedgerRequest(), metadata=system_metadata()
    )
    assert result.ok == (not result.problems)
    return list(result.problems)


_LEDGER_TABLES = ("ledger_transactions", "ledger_entries")


async def _behind_the_ledgers_back(pool: Pool, *statements: tuple[str, tuple[Any, ...]]) -> None:
    """Writes that the ledger's triggers would refuse (append-only, balanced at commit). The
    tables' owner may switch their triggers off; ``session_replication_role`` would need a
    superuser, which a database given by SMM_DATABASE_URL need not offer."""
    async with pool.connection() as conn, conn.transaction():
        for table in _LEDGER_TABLES:
            await conn.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER USER").format(sql.Identifier(table)))
        for statement, params in statements:
            await conn.execute(statement, params)
        for table in _LEDGER_TABLES:
            await conn.execute(sql.SQL("ALTER TABLE {} ENABLE TRIGGER USER").format(sql.Identifier(table)))


async def _placed(shop: Shop, email: str, funds: str) -> tuple[int, int]:
    """A user with an open order (its funds held): (user id, order id)."""
    user = await shop.user(email, funds)
    placed = await shop.order(user, serviceId=shop.service_id("2"), link="https://x.com/a", quantity=1000)
    assert placed.status_code == 200, placed.text
    async with shop.pool.connection() as conn:
        row = await (
            await conn.execute("SELECT user_id, id FROM orders WHERE id = %s", (int(placed.json()["id"]),))
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def _price(pool: Pool, order_id: int) -> int:
    async with pool.connection() as conn:
        row = await (
            await conn.execute("SELECT price_micros FROM orders WHERE id = %s", (order_id,))
        ).fetchone()
    assert row is not None
    return int(row[0])


async def test_an_order_whose_hold_moved_less_than_its_price_is_reported(
    shop: Shop, channel: grpc.aio.Channel, pool: Pool
) -> None:
    """The order check read what a hold moved from the transaction's amount_micros (the
    statement's column), not from its entries: a hold whose entries moved a micro-unit less than
    the order's price (the cached balances following the entries) passed."""
    user_id, order_id = await _placed(shop, "ann@example.com", "5.00")
    assert await _problems(channel) == []
    # The hold's entries move one micro-unit less than the hold says; the cached balances follow
    # the entries, so they agree with the ledger's accounts.
    await _behind_the_ledgers_back(
        pool,
        (
            "UPDATE ledger_entries SET amount_micros = amount_micros - sign(amount_micros)"
            " WHERE transaction_id = (SELECT id FROM ledger_transactions WHERE reference = %s AND kind = 'hold')",
            (f"order:{order_id}",),
        ),
        (
            "UPDATE wallets SET available_micros = available_micros + 1, held_micros = held_micros - 1"
            " WHERE user_id = %s",
            (user_id,),
        ),
    )
    problems = await _problems(channel)
    price = await _price(pool, order_id)
    assert any(
        p.startswith(f"order {order_id} ") and f"ledger held {format_micros(price - 1)} " in p
        for p in problems
    ), problems


async def test_funds_held_for_no_order_are_reported(
    shop: Shop, channel: grpc.aio.Channel, pool: Pool
) -> None:
    """Only orders hold funds: a hold of a micro-unit for an order that does not exist, with its
    entries and cached balances all consistent, leaves the user's held balance above what their
    orders hold. The check compared each existing order with its own movements only."""
    user_id, order_id = await _placed(shop, "ann@example.com", "5.00")
    async with pool.connection() as conn, conn.transaction():  # a hold the ledger allows, for no order
        tx = await (
            await conn.execute(
                "INSERT INTO ledger_transactions (kind, idempotency_key, reference, user_id, amount_micros)"
                " VALUES ('hold', 'order:0:hold', 'order:0', %s, -1) RETURNING id",
                (user_id,),
            )
        ).fetchone()
        assert tx is not None
        await conn.execute(
            "INSERT INTO ledger_entries (transaction_id, account, amount_micros) VALUES (%s, %s, -1), (%s, %s, 1)",
            (tx[0], f"user:{user_id}:available", tx[0], f"user:{user_id}:held"),
        )
        await conn.execute(
            "UPDATE wallets SET available_micros = available_micros - 1, held_micros = held_micros + 1"
            " WHERE user_id = %s",
            (user_id,),
        )
    problems = await _problems(channel)
    price = await _price(pool, order_id)
    assert [p for p in problems if p.startswith(f"user {user_id}:")] == [
        f"user {user_id}: ledger held {format_micros(price + 1)}, orders hold {format_micros(price)}"
    ], problems


async def test_an_unbalanced_transaction_is_reported(
    shop: Shop, channel: grpc.aio.Channel, pool: Pool
) -> None:
    user_id, order_id = await _placed(shop, "ann@example.com", "5.00")
    await _behind_the_ledgers_back(
        pool,
        (
            "UPDATE ledger_entries SET amount_micros = amount_micros + 1 WHERE amount_micros > 0"
            " AND transaction_id = (SELECT id FROM ledger_transactions WHERE reference = %s AND kind = 'hold')",
            (f"order:{order_id}",),
        ),
        ("UPDATE wallets SET held_micros = held_micros + 1 WHERE user_id = %s", (user_id,)),
    )
    problems = await _problems(channel)
    assert any(p.startswith("transaction ") and "summing to 0.000001" in p for p in problems), problems
    assert any(p.startswith("all entries sum to 0.000001") for p in problems), problems
