"""Staff balance adjustments against account deletion, and what a customer's statement shows of
them. Money exact to the micro-unit; the ledger checked after each."""

from __future__ import annotations

import asyncio

import grpc
import httpx
import pytest
from smm.v1 import wallet_service_pb2 as wpb
from smm.v1 import wallet_service_pb2_grpc as wpb_grpc

from server.common.db import Pool
from server.main import ServerHandle
from tests.fix_db import lock_waiters
from tests.fix_grpc import system_metadata
from tests.integration.test_accounts import bearer, register
from tests.integration.test_admin_users import admin_token
from tests.integration.test_edge_http import assert_error

pytestmark = pytest.mark.integration


async def _ledger_ok(channel: grpc.aio.Channel) -> None:
    result = await wpb_grpc.WalletServiceStub(channel).VerifyLedger(
        wpb.VerifyLedgerRequest(), metadata=system_metadata()
    )
    assert result.ok, list(result.problems)


async def test_an_adjustment_racing_the_deletion_of_its_account_does_not_land_on_the_deleted_account(
    http: httpx.AsyncClient,
    grpc_server: ServerHandle,
    settings: object,
    pool: Pool,
    channel: grpc.aio.Channel,
) -> None:
    """The adjustment's "not deleted" check read the user row without a lock: while a deletion had
    marked the account deleted but not committed yet, the check saw it active, and the
    adjustment landed on the deleted account once the deletion committed."""
    admin = bearer(await admin_token(http, grpc_server, settings))
    account = await register(http, "ann@example.com")
    user_id = int(account["user"]["id"])
    url = f"/api/v1/admin/users/{user_id}/balance-adjustments"
    funded = await http.post(url, json={"amount": "5.00", "reason": "welcome"}, headers=admin)
    assert funded.status_code == 200, funded.text

    async with pool.connection() as blocker, blocker.transaction():
        # The deletion stops after it has locked and marked the user row (uncommitted): revoking
        # the account's sessions waits for this lock.
        await blocker.execute("SELECT 1 FROM sessions WHERE user_id = %s FOR UPDATE", (user_id,))
        deletion = asyncio.create_task(http.delete(f"/api/v1/admin/users/{user_id}", headers=admin))
        await lock_waiters(pool, 1)
        adjustment = asyncio.create_task(
            http.post(url, json={"amount": "10.00", "reason": "goodwill"}, headers=admin)
        )
        await lock_waiters(pool, 2, unless=adjustment)
    deleted, adjusted = await deletion, await adjustment

    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["status"] == "deleted"
    assert_error(adjusted, 404, "NOT_FOUND", "USER_NOT_FOUND")
    balance = await http.get(f"/api/v1/admin/users/{user_id}/balance", headers=admin)
    assert (balance.json()["available"], balance.json()["held"]) == ("5.00", "0.00")
    async with pool.connection() as conn:
        moved = await (
            await conn.execute(
                "SELECT kind, amount_micros, memo FROM ledger_transactions WHERE user_id = %s ORDER BY id",
                (user_id,),
            )
        ).fetchall()
    assert moved == [("adjustment", 5_000_000, "welcome")]
    await _ledger_ok(channel)


async def test_a_customers_statement_does_not_show_the_staff_request_id_of_an_adjustment(
    http: httpx.AsyncClient,
    grpc_server: ServerHandle,
    settings: object,
    pool: Pool,
    channel: grpc.aio.Channel,
) -> None:
    """An adjustment's reference was ``adjustment:<request id>``, and the statement showed it:
    the staff request's Idempotency-Key (an internal value of staff tools) reached the customer.
    The customer sees ``adjustment:<transaction id>``; staff and the ledger keep the request id."""
    admin = bearer(await admin_token(http, grpc_server, settings))
    account = await register(http, "ann@example.com")
    user_id, ann = account["user"]["id"], bearer(account["token"])
    url = f"/api/v1/admin/users/{user_id}/balance-adjustments"
    made = await http.post(
        url,
        json={"amount": "25.00", "reason": "welcome bonus"},
        headers={**admin, "Idempotency-Key": "crm-ticket-4711-refund"},
    )
    assert made.status_code == 200, made.text
    staff_view = made.json()
    assert staff_view["reference"] == "adjustment:crm-ticket-4711-refund"  # staff see it, as before
    unkeyed = await http.post(url, json={"amount": "-5.00", "reason": "correction"}, headers=admin)
    assert unkeyed.status_code == 200, unkeyed.text

    statement = await http.get("/api/v1/dashboard/wallet/transactions", headers=ann)
    assert statement.status_code == 200, statement.text
    assert "crm-ticket-4711" not in statement.text
    assert [
        (t["id"], t["kind"], t["reference"], t["amount"], t["memo"]) for t in statement.json()["transactions"]
    ] == [
        (unkeyed.json()["id"], "adjustment", f"adjustment:{unkeyed.json()['id']}", "-5.00", "correction"),
        (staff_view["id"], "adjustment", f"adjustment:{staff_view['id']}", "25.00", "welcome bonus"),
    ]
    replayed = await http.post(  # staff's replay still answers the first adjustment as it was
        url,
        json={"amount": "25.00", "reason": "welcome bonus"},
        headers={**admin, "Idempotency-Key": "crm-ticket-4711-refund"},
    )
    assert replayed.json() == staff_view
    async with pool.connection() as conn:  # the ledger rows are as they were written
        stored = await (
            await conn.execute(
                "SELECT reference, idempotency_key FROM ledger_transactions WHERE id = %s",
                (int(staff_view["id"]),),
            )
        ).fetchone()
    assert stored is not None
    assert stored[0] == "adjustment:crm-ticket-4711-refund"
    assert stored[1].endswith(":crm-ticket-4711-refund")
    body = (await http.get("/api/v1/dashboard/wallet", headers=ann)).json()
    assert (body["available"], body["held"]) == ("20.00", "0.00")
    await _ledger_ok(channel)


async def test_idempotency_keys_that_differ_past_200_characters_are_not_taken_for_one(
    http: httpx.AsyncClient,
    grpc_server: ServerHandle,
    settings: object,
    pool: Pool,
    channel: grpc.aio.Channel,
) -> None:
    """The edge cut an Idempotency-Key to its first 200 characters (and the server a request_id):
    two keys that differ only after that named one request, so the second adjustment was silently
    not made and its answer was the first one's. A key longer than 200 characters is refused."""
    admin = bearer(await admin_token(http, grpc_server, settings))
    user_id = (await register(http, "ann@example.com"))["user"]["id"]
    url = f"/api/v1/admin/users/{user_id}/balance-adjustments"
    stem = "crm-" + "x" * 196
    first = await http.post(
        url, json={"amount": "1.00", "reason": "refund 1"}, headers={**admin, "Idempotency-Key": stem}
    )
    assert first.status_code == 200, first.text
    for key in (stem + "A", stem + "B"):
        longer = await http.post(
            url, json={"amount": "1.00", "reason": "refund 1"}, headers={**admin, "Idempotency-Key": key}
        )
        assert_error(longer, 400, "INVALID_ARGUMENT")
    direct = wpb_grpc.WalletServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await direct.CreateBalanceAdjustment(
            wpb.CreateBalanceAdjustmentRequest(
                user_id=int(user_id), amount="1.00", reason="refund 1", request_id=stem + "C"
            ),
            metadata=system_metadata(),
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    balance = await http.get(f"/api/v1/admin/users/{user_id}/balance", headers=admin)
    assert balance.json()["available"] == "1.00"
    await _ledger_ok(channel)
