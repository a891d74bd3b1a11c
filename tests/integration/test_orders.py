"""Orders and the wallet through the edge and the dispatch path, against the demo provider over
loopback HTTP: money exact to the micro-unit, never negative, never charged twice, under
concurrency, retries, duplicates and lost answers."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import grpc
import httpx
import psycopg
import pytest
from psycopg import sql
from smm.v1 import events_pb2
from smm.v1 import orders_service_pb2 as opb
from smm.v1 import system_service_pb2 as spb
from smm.v1 import system_service_pb2_grpc as spb_grpc
from smm.v1 import wallet_service_pb2 as wpb
from smm.v1 import wallet_service_pb2_grpc as wpb_grpc

from core.config import Settings
from ops.cli import main as smm_main
from ops.embedded import create_database
from ops.ledger import verify_ledger
from server.common.db import Pool
from server.main import ServerHandle
from server.orders.repo import QUERIES, Claim
from tests.fix_db import drop_database, lock_waiters
from tests.fix_demo import DemoFactory, DemoHandle
from tests.fix_grpc import system_metadata
from tests.fix_nats import running_worker
from tests.fix_shop import Shop, ready_to_poll, shop_orders, stuck_alerts
from tests.integration.test_accounts import bearer, register
from tests.integration.test_edge_http import assert_error
from tests.integration.test_events import eventually
from tests.integration.test_providers import add_provider, euro_provider, run_sync
from tests.integration.test_reseller import WEBHOOK_SECRET, pushing_provider, signed

pytestmark = pytest.mark.integration


async def test_staff_adjust_balances_once_per_request_id_and_never_below_zero(shop: Shop, pool: Pool) -> None:
    account = await register(shop.http, "ann@example.com")
    user_id, ann = account["user"]["id"], bearer(account["token"])
    url = f"/api/v1/admin/users/{user_id}/balance-adjustments"
    body = {"amount": "25.00", "reason": "welcome bonus"}
    first, second = await asyncio.gather(
        shop.http.post(url, json=body, headers={**shop.admin, "Idempotency-Key": "adj-1"}),
        shop.http.post(url, json=body, headers={**shop.admin, "Idempotency-Key": "adj-1"}),
    )
    assert first.status_code == second.status_code == 200, first.text + second.text
    assert first.json()["id"] == second.json()["id"]
    assert await shop.balance(ann) == ("25.00", "0.00")
    no_reason = await shop.http.post(url, json={"amount": "5"}, headers=shop.admin)
    assert_error(no_reason, 400, "INVALID_ARGUMENT")
    too_much = await shop.http.post(
        url, json={"amount": "-25.01", "reason": "chargeback"}, headers=shop.admin
    )
    error = assert_error(too_much, 400, "FAILED_PRECONDITION", "INSUFFICIENT_FUNDS")
    assert error["details"][0]["metadata"] == {"available": "25.00", "required": "25.01"}
    float_like = await shop.http.post(url, json={"amount": "1e3", "reason": "x"}, headers=shop.admin)
    assert_error(float_like, 400, "INVALID_ARGUMENT")
    taken = await shop.http.post(url, json={"amount": "-5.50", "reason": "correction"}, headers=shop.admin)
    assert taken.json()["amount"] == "-5.50"
    assert await shop.balance(ann) == ("19.50", "0.00")
    statement = (await shop.http.get("/api/v1/dashboard/wallet/transactions", headers=ann)).json()
    assert [(t["kind"], t["amount"], t["memo"]) for t in statement["transactions"]] == [
        ("adjustment", "-5.50", "correction"),
        ("adjustment", "25.00", "welcome bonus"),
    ]
    audit = (
        await shop.http.get("/api/v1/admin/audit", params={"action": "wallet.adjusted"}, headers=shop.admin)
    ).json()
    assert len(audit["events"]) == 2
    assert (await shop.verify()).ok


async def test_staff_see_a_users_balance_and_no_balance_for_a_user_that_does_not_exist(shop: Shop) -> None:
    """A user never funded has no wallet row yet and a zero balance; an id with no user behind it
    was answered with that same zero balance instead of USER_NOT_FOUND."""
    funded = await register(shop.http, "ann@example.com")
    await shop.fund(funded["user"]["id"], "3.00")
    unfunded = await register(shop.http, "bob@example.com")

    async def balance(user_id: object) -> httpx.Response:
        return await shop.http.get(f"/api/v1/admin/users/{user_id}/balance", headers=shop.admin)

    assert (await balance(funded["user"]["id"])).json()["available"] == "3.00"
    never_funded = await balance(unfunded["user"]["id"])
    assert never_funded.status_code == 200, never_funded.text
    assert (never_funded.json()["available"], never_funded.json()["held"]) == ("0.00", "0.00")
    error = assert_error(await balance(987654321), 404, "NOT_FOUND", "USER_NOT_FOUND")
    [info] = [d for d in error["details"] if d.get("reason") == "USER_NOT_FOUND"]
    assert info["metadata"] == {"id": "987654321"}


async def test_two_callers_using_one_request_id_make_two_adjustments(
    shop: Shop, channel: grpc.aio.Channel
) -> None:
    """Request ids are per caller: another tool's request under the same id is its own adjustment
    (it was once answered with the first tool's adjustment and silently not applied)."""
    account = await register(shop.http, "cal@example.com")
    user_id, cal = int(account["user"]["id"]), bearer(account["token"])
    wallet = wpb_grpc.WalletServiceStub(channel)
    first = await wallet.CreateBalanceAdjustment(
        wpb.CreateBalanceAdjustmentRequest(
            user_id=user_id, amount="25.00", reason="bonus", request_id="batch-1"
        ),
        metadata=system_metadata("tool-a"),
    )
    second = await wallet.CreateBalanceAdjustment(
        wpb.CreateBalanceAdjustmentRequest(
            user_id=user_id, amount="-5.00", reason="fix", request_id="batch-1"
        ),
        metadata=system_metadata("tool-b"),
    )
    replayed = await wallet.CreateBalanceAdjustment(
        wpb.CreateBalanceAdjustmentRequest(
            user_id=user_id, amount="-5.00", reason="fix", request_id="batch-1"
        ),
        metadata=system_metadata("tool-b"),
    )
    assert (first.amount, second.amount, second.memo) == ("25.00", "-5.00", "fix")
    assert replayed.id == second.id != first.id
    assert await shop.balance(cal) == ("20.00", "0.00")
    audit = (
        await shop.http.get("/api/v1/admin/audit", params={"action": "wallet.adjusted"}, headers=shop.admin)
    ).json()
    assert len(audit["events"]) == 2
    assert (await shop.verify()).ok


async def test_an_adjustment_replayed_after_its_request_id_was_purged_is_not_made_or_announced_again(
    shop: Shop, channel: grpc.aio.Channel, pool: Pool
) -> None:
    """Request ids are kept 30 days (`outbox-purge`), ledger keys forever. A replay after the purge
    moved no money but was audited and announced to the user (`balance.adjusted`) as a second
    adjustment, and the same id with another amount answered 500 INTERNAL."""
    account = await register(shop.http, "dan@example.com")
    user_id, dan = account["user"]["id"], bearer(account["token"])
    url = f"/api/v1/admin/users/{user_id}/balance-adjustments"
    headers = {**shop.admin, "Idempotency-Key": "migration-7"}
    body = {"amount": "25.00", "reason": "carried over"}
    first = await shop.http.post(url, json=body, headers=headers)
    assert first.status_code == 200, first.text
    async with pool.connection() as conn:
        await conn.execute("UPDATE idempotent_requests SET created_at = now() - interval '31 days'")
    system = spb_grpc.SystemServiceStub(channel)
    await system.RunJob(spb.RunJobRequest(job="outbox-purge", period_start=3600), metadata=system_metadata())
    async with pool.connection() as conn:
        assert await (await conn.execute("SELECT count(*) FROM idempotent_requests")).fetchone() == (0,)

    other = await shop.http.post(url, json={**body, "amount": "30.00"}, headers=headers)
    error = assert_error(other, 400, "FAILED_PRECONDITION", "REQUEST_ID_REUSED")
    # Named as HTTP clients send it (the edge passes the header on as the request id).
    assert error["message"] == (
        "this request id (the Idempotency-Key header over HTTP) was already used for a different request"
    )
    [info] = [d for d in error["details"] if d.get("reason") == "REQUEST_ID_REUSED"]
    assert info["metadata"] == {"request_id": "migration-7"}
    again = await shop.http.post(url, json=body, headers=headers)
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    replayed = await shop.http.post(url, json=body, headers=headers)  # the replay's own answer is kept
    assert replayed.status_code == 200, replayed.text
    assert replayed.json() == first.json()
    assert await shop.balance(dan) == ("25.00", "0.00")
    async with pool.connection() as conn:
        audited = await (
            await conn.execute("SELECT count(*) FROM audit_events WHERE action = 'wallet.adjusted'")
        ).fetchone()
        announced = await (
            await conn.execute(
                "SELECT count(*) FROM outbox_events WHERE subject = 'smm.wallet.balance.adjusted'"
            )
        ).fetchone()
    assert (audited, announced) == ((1,), (1,))
    assert (await shop.verify()).ok


async def test_each_adjustments_audit_record_shows_the_balance_it_changed(shop: Shop, pool: Pool) -> None:
    """The audit's "before" was read before the wallet row was locked: two adjustments racing
    both recorded the balance from before either, so one record said 1.00 -> 6.00 for a change of
    3.00."""
    account = await register(shop.http, "eve@example.com")
    user_id = account["user"]["id"]
    await shop.fund(user_id, "1.00")
    url = f"/api/v1/admin/users/{user_id}/balance-adjustments"
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("SELECT 1 FROM wallets WHERE user_id = %s FOR UPDATE", (int(user_id),))
        racing = [
            asyncio.create_task(
                shop.http.post(url, json={"amount": amount, "reason": "race"}, headers=shop.admin)
            )
            for amount in ("2.00", "3.00")
        ]
        await lock_waiters(pool, 2)  # both adjustments have read their "before" and wait for the wallet row
    responses = await asyncio.gather(*racing)
    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT before->>'available', after->>'amount', after->>'available' FROM audit_events"
                " WHERE action = 'wallet.adjusted' ORDER BY id"
            )
        ).fetchall()
    assert rows[0] == ("0.00", "1.00", "1.00")
    assert sorted(rows[1:]) in (
        [("1.00", "2.00", "3.00"), ("3.00", "3.00", "6.00")],
        [("1.00", "3.00", "4.00"), ("4.00", "2.00", "6.00")],
    ), rows
    assert (await shop.http.get(f"/api/v1/admin/users/{user_id}/balance", headers=shop.admin)).json()[
        "available"
    ] == "6.00"
    assert (await shop.verify()).ok


async def test_an_order_whose_status_cannot_be_applied_does_not_stop_the_rest_of_its_batch(
    shop: Shop, pool: Pool
) -> None:
    """An error applying one order's status once escaped the poll loop: the rest of the provider's
    batch was skipped and the same order came first again on every tick."""
    accounts = [await register(shop.http, f"{name}@example.com") for name in ("ann", "bob")]
    for account in accounts:
        await shop.fund(account["user"]["id"], "1.00")
    ann, bob = (bearer(account["token"]) for account in accounts)
    likes = shop.service_id("2")
    orders = [
        (await shop.order(user, serviceId=likes, link=f"https://x.com/{n}", quantity=1000)).json()
        for n, user in enumerate((ann, bob))
    ]
    for order in orders:
        await shop.submit(order["id"])
    ann_id = int(accounts[0]["user"]["id"])
    async with pool.connection() as conn:  # ann's settle will fail: nothing is held for it
        await conn.execute("UPDATE wallets SET held_micros = 0 WHERE user_id = %s", (ann_id,))
    done = await shop.settle(orders[1]["id"], bob)
    assert (done["status"], done["charged"]) == ("ORDER_STATUS_COMPLETED", "0.325")
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT status, next_poll_time > now() + interval '4 minutes' FROM orders WHERE id = %s",
            (int(orders[0]["id"]),),
        )
        assert await cursor.fetchone() == ("in_progress", True)  # asked about again later
        await conn.execute("UPDATE wallets SET held_micros = 325000 WHERE user_id = %s", (ann_id,))
    done = await shop.settle(orders[0]["id"], ann)
    assert (done["status"], done["charged"]) == ("ORDER_STATUS_COMPLETED", "0.325")
    assert (await shop.verify()).ok


async def test_a_partial_end_without_remains_waits_for_staff_instead_of_guessing(
    shop: Shop, pool: Pool
) -> None:
    """ "Partial" says part was not delivered but not how much: it was charged in full."""
    secret = "whsec-partial"
    enabled = await shop.http.patch(
        f"/api/v1/admin/providers/{shop.provider_id}",  # type: ignore[attr-defined]
        json={"webhookSecret": secret},
        headers=shop.admin,
    )
    assert enabled.status_code == 200, enabled.text
    ann = await shop.user("ann@example.com", "1.00")
    order = (
        await shop.order(ann, serviceId=shop.service_id("2"), link="https://x.com/p", quantity=1000)
    ).json()
    sent = await shop.submit(order["id"])
    body = json.dumps({"order": sent.upstream_order_id, "status": "Partial"}).encode()
    hook = f"/api/v1/webhooks/provider/{shop.provider_id}"  # type: ignore[attr-defined]
    answered = await shop.http.post(hook, content=body, headers=signed(secret, body))
    assert answered.json() == {"applied": False}, answered.text
    waiting = (await shop.http.get(f"/api/v1/dashboard/orders/{order['id']}", headers=ann)).json()
    assert (waiting["status"], waiting["charged"]) == ("ORDER_STATUS_IN_PROGRESS", "0.00")
    assert "without what remains" in (await shop.staff_order(order["id"]))["statusNote"]
    assert await shop.balance(ann) == ("0.675", "0.325")
    route = f"/api/v1/admin/orders/{order['id']}/status"
    # Without remains (0 on the wire) a staff Partial charged in full: it must say what is left.
    unsaid = await shop.http.post(
        route, json={"status": "ORDER_STATUS_PARTIAL", "reason": "r"}, headers=shop.admin
    )
    assert_error(unsaid, 400, "INVALID_ARGUMENT")
    assert unsaid.json()["error"]["details"][0]["metadata"]["fields"] == "remains"
    set_by_staff = await shop.http.post(
        route,
        json={
            "status": "ORDER_STATUS_PARTIAL",
            "remains": "400",
            "reason": "the provider's panel shows 400 left",
        },
        headers=shop.admin,
    )
    assert (set_by_staff.json()["charged"], set_by_staff.json()["released"]) == ("0.195", "0.13")
    assert await shop.balance(ann) == ("0.805", "0.00")
    # Set again once final (a second staff tool, or after the poller): refused, money moved once.
    again = await shop.http.post(
        route, json={"status": "ORDER_STATUS_PARTIAL", "remains": "1000", "reason": "r"}, headers=shop.admin
    )
    assert_error(again, 400, "FAILED_PRECONDITION", "ORDER_STATE_CONFLICT")
    assert await shop.balance(ann) == ("0.805", "0.00")
    assert (await shop.verify()).ok


async def test_an_order_holds_then_settles_exactly(shop: Shop, pool: Pool, worker_settings: Settings) -> None:
    ann = await shop.user("ann@example.com", "10.00")
    likes = shop.service_id("2")  # 0.25 upstream, 0.325 per 1000 here
    async with running_worker(worker_settings, "dispatch"):
        placed = await shop.order(ann, serviceId=likes, link="https://instagram.com/p/abc", quantity=1000)
        assert placed.status_code == 200, placed.text
        order = placed.json()
        assert (order["price"], order["status"], order["source"]) == ("0.325", "ORDER_STATUS_PENDING", "web")
        assert await shop.balance(ann) == ("9.675", "0.325")
        async with asyncio.timeout(10):  # the dispatch worker sends it
            while True:
                current = await shop.http.get(f"/api/v1/dashboard/orders/{order['id']}", headers=ann)
                if current.json()["status"] != "ORDER_STATUS_PENDING":
                    break
                await asyncio.sleep(0.05)
        await ready_to_poll(pool)
        done = await shop.settle(order["id"], ann)
    assert done["status"] == "ORDER_STATUS_COMPLETED"
    assert (done["charged"], done["released"]) == ("0.325", "0.00")
    assert await shop.balance(ann) == ("9.675", "0.00")
    steps = [e["status"] for e in done["timeline"]]
    assert steps[0] == "ORDER_STATUS_PENDING"
    assert steps[-1] == "ORDER_STATUS_COMPLETED"
    assert "ORDER_STATUS_IN_PROGRESS" in steps
    [upstream] = await shop_orders(shop)
    assert upstream["link"] == "https://instagram.com/p/abc"
    assert (await shop.verify()).ok
    # The hourly job turns completed orders into the catalog's average completion time.
    run = await shop.http.post("/api/v1/admin/jobs/service-stats/runs", json={}, headers=shop.admin)
    assert run.status_code == 200, run.text
    assert "updated on 1 service" in run.json()["result"]
    listed = (await shop.http.get(f"/api/v1/public/services/{likes}")).json()
    assert int(listed["averageCompletionSeconds"]) >= 0
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT average_completion_s FROM services WHERE id = %s", (int(likes),))
        assert (await cursor.fetchone()) is not None


@pytest.mark.parametrize(
    ("link", "status"), [("https://x.com/partial", "PARTIAL"), ("https://x.com/cancel", "CANCELED")]
)
async def test_partial_and_cancel_release_exactly(shop: Shop, pool: Pool, link: str, status: str) -> None:
    ann = await shop.user("ann@example.com", "10.00")
    followers = shop.service_id("1")  # 1.17 per 1000
    order = (await shop.order(ann, serviceId=followers, link=link, quantity=333)).json()
    price = Decimal(order["price"])
    assert price == Decimal("0.38961")  # 1.17 x 333 / 1000 = 0.38961, exact in micro-units
    await shop.submit(order["id"])
    await ready_to_poll(pool)
    done = await shop.settle(order["id"], ann)
    assert done["status"] == f"ORDER_STATUS_{status}"
    charged, released = Decimal(done["charged"]), Decimal(done["released"])
    assert charged + released == price
    if status == "CANCELED":
        assert released == price
    else:
        remains = int(done["remains"])
        assert 0 < remains < 333, done
        expected = (price * remains / 333).quantize(Decimal("0.000001"), rounding="ROUND_HALF_UP")
        assert released == expected
    available, held = await shop.balance(ann)
    assert (Decimal(available), held) == (Decimal("10") - charged, "0.00")
    assert (await shop.verify()).ok
    # The statement says what each movement did to the held balance too: a settlement's amount is
    # 0 (the available balance paid at the hold), its held change is what the order was charged.
    statement = (await shop.http.get("/api/v1/dashboard/wallet/transactions", headers=ann)).json()
    moved = {t["kind"]: (Decimal(t["amount"]), Decimal(t["held"])) for t in statement["transactions"]}
    assert moved.pop("adjustment") == (Decimal("10"), 0)
    assert moved.pop("hold") == (-price, price)
    assert moved.pop("settle", (0, 0)) == (0, -charged)
    assert moved.pop("release") == (released, -released)
    assert moved == {}


async def test_fifty_concurrent_orders_against_funds_for_ten(shop: Shop, pool: Pool) -> None:
    ann = await shop.user("ann@example.com", "3.25")  # ten orders of 0.325
    likes = shop.service_id("2")
    replies = await asyncio.gather(
        *(shop.order(ann, serviceId=likes, link=f"https://x.com/{i}", quantity=1000) for i in range(50))
    )
    placed = [r for r in replies if r.status_code == 200]
    refused = [r for r in replies if r.status_code != 200]
    assert len(placed) == 10
    for reply in refused:
        assert_error(reply, 400, "FAILED_PRECONDITION", "INSUFFICIENT_FUNDS")
    assert await shop.balance(ann) == ("0.00", "3.25")
    assert (await shop.verify()).ok
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT count(*) FROM orders")
        assert (await cursor.fetchone()) == (10,)


async def test_the_same_idempotency_key_gives_one_order(shop: Shop) -> None:
    ann = await shop.user("ann@example.com", "5.00")
    likes = shop.service_id("2")
    body = {"serviceId": likes, "link": "https://x.com/once", "quantity": 1000}
    headers = {**ann, "Idempotency-Key": "order-key-1"}
    first, second = await asyncio.gather(
        shop.http.post("/api/v1/dashboard/orders", json=body, headers=headers),
        shop.http.post("/api/v1/dashboard/orders", json=body, headers=headers),
    )
    assert first.status_code == second.status_code == 200, first.text + second.text
    assert first.json()["id"] == second.json()["id"]
    assert await shop.balance(ann) == ("4.675", "0.325")
    other = await shop.http.post("/api/v1/dashboard/orders", json={**body, "quantity": 2000}, headers=headers)
    assert_error(other, 400, "FAILED_PRECONDITION", "REQUEST_ID_REUSED")
    assert (await shop.verify()).ok


async def test_a_rejected_order_goes_to_the_fallback_and_fails_when_none_is_left(
    shop: Shop, demo_provider: DemoHandle, pool: Pool
) -> None:
    ann = await shop.user("ann@example.com", "5.00")
    likes = shop.service_id("2")
    backup = await add_provider(shop.http, shop.admin, demo_provider, name="Backup")
    await shop.with_fallback(likes, "2", backup["id"])
    await demo_provider.fault("error_body", count=1, actions=["add"])
    order = (await shop.order(ann, serviceId=likes, link="https://x.com/fallback", quantity=1000)).json()
    sent = await shop.submit(order["id"])
    assert sent.status == opb.ORDER_STATUS_IN_PROGRESS
    assert len(await demo_provider.orders()) == 1  # placed once, by the second provider
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT state FROM order_submissions ORDER BY id")
        assert [r[0] for r in await cursor.fetchall()] == ["rejected", "accepted"]

    await demo_provider.fault("error_body", count=2, actions=["add"])
    doomed = (await shop.order(ann, serviceId=likes, link="https://x.com/doomed", quantity=1000)).json()
    failed = await shop.submit(doomed["id"])
    assert failed.status == opb.ORDER_STATUS_FAILED
    assert (failed.charged, failed.released) == ("0.00", "0.325")
    assert await shop.balance(ann) == ("4.675", "0.325")  # only the first order's hold remains
    assert (await shop.verify()).ok


async def test_an_unknown_answer_is_never_resubmitted(
    shop: Shop, demo_provider: DemoHandle, pool: Pool
) -> None:
    ann = await shop.user("ann@example.com", "5.00")
    likes = shop.service_id("2")
    await demo_provider.fault("timeout", count=1, actions=["add"])  # processed upstream, answer lost
    async with pool.connection() as conn:  # a short provider timeout keeps the test fast
        await conn.execute("UPDATE providers SET timeout_ms = 300, update_time = now()")
    order = (await shop.order(ann, serviceId=likes, link="https://x.com/lost", quantity=1000)).json()
    reviewed = await shop.submit(order["id"])
    assert reviewed.status == opb.ORDER_STATUS_NEEDS_REVIEW
    assert "unknown" in reviewed.status_note
    again = await shop.submit(order["id"])  # a redelivered event
    assert again.status == opb.ORDER_STATUS_NEEDS_REVIEW
    assert len(await demo_provider.orders()) == 1  # it exists upstream exactly once
    assert await shop.balance(ann) == ("4.675", "0.325")  # the hold stays until staff resolve it
    assert (await shop.verify()).ok


async def test_a_submission_interrupted_mid_call_goes_to_review_not_to_the_provider_again(
    shop: Shop, demo_provider: DemoHandle, pool: Pool
) -> None:
    ann = await shop.user("ann@example.com", "5.00")
    order = (
        await shop.order(ann, serviceId=shop.service_id("2"), link="https://x.com/crash", quantity=1000)
    ).json()
    # The state a server killed between "submission starting" and storing the provider's answer leaves.
    async with pool.connection() as conn:
        await conn.execute("UPDATE orders SET status = 'submitting' WHERE id = %s", (int(order["id"]),))
        await conn.execute(
            "INSERT INTO order_submissions (order_id, provider_id, upstream_service_id) VALUES (%s, %s, '2')",
            (int(order["id"]), int(shop.provider_id)),  # type: ignore[attr-defined]
        )
    after = await shop.submit(order["id"])
    assert after.status == opb.ORDER_STATUS_NEEDS_REVIEW
    assert await demo_provider.orders() == []


async def test_an_answer_that_arrives_after_a_redelivery_moved_the_order_to_review_is_kept(
    shop: Shop, demo_provider: DemoHandle, pool: Pool
) -> None:
    """The accepted answer is normally stored by one statement guarded on 'submitting'; when a
    redelivered event has meanwhile sent the order to review, the general path still records the
    upstream id, so nothing is lost and nothing goes out twice."""
    ann = await shop.user("ann@example.com", "5.00")
    order = (
        await shop.order(ann, serviceId=shop.service_id("2"), link="https://x.com/slow", quantity=1000)
    ).json()
    await demo_provider.fault("latency", count=1, actions=["add"], delay_s=1.0)
    first = asyncio.create_task(shop.submit(order["id"]))
    async with asyncio.timeout(5):  # the first call is out: the order is submitting
        while True:
            current = await shop.http.get(f"/api/v1/dashboard/orders/{order['id']}", headers=ann)
            if current.json()["status"] == "ORDER_STATUS_SUBMITTING":
                break
            await asyncio.sleep(0.02)
    redelivered = await shop.submit(order["id"])
    assert redelivered.status == opb.ORDER_STATUS_NEEDS_REVIEW
    answered = await first
    assert answered.status == opb.ORDER_STATUS_IN_PROGRESS
    [upstream] = await demo_provider.orders()
    assert answered.upstream_order_id == str(upstream["order"])
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT state, upstream_order_id FROM order_submissions WHERE order_id = %s", (int(order["id"]),)
        )
        assert await cursor.fetchall() == [("accepted", str(upstream["order"]))]
        cursor = await conn.execute(
            "SELECT status FROM order_events WHERE order_id = %s ORDER BY id", (int(order["id"]),)
        )
        assert [r[0] for r in await cursor.fetchall()] == ["pending", "needs_review", "in_progress"]
    assert await shop.balance(ann) == ("4.675", "0.325")


async def test_an_answer_that_arrives_after_staff_failed_the_order_leaves_it_failed(
    shop: Shop, demo_provider: DemoHandle, pool: Pool
) -> None:
    """Staff failed (and released) an order while its ``add`` was still out. The late "accepted"
    answer once moved it back to in progress, and the poller then settled it out of another
    order's hold. Now the order stays failed with its money, and the upstream id is kept for staff.
    Staff are refused while the call may be out (``ORDER_SUBMISSION_OUT``); the late answer is
    still handled for a call out longer than that window, which the test stands in for."""
    ann = await shop.user("ann@example.com", "5.00")
    likes = shop.service_id("2")  # 0.325 per 1000
    order = (await shop.order(ann, serviceId=likes, link="https://x.com/slow", quantity=1000)).json()
    await demo_provider.fault("latency", count=1, actions=["add"], delay_s=1.0)
    first = asyncio.create_task(shop.submit(order["id"]))
    async with asyncio.timeout(5):
        while True:
            current = await shop.http.get(f"/api/v1/dashboard/orders/{order['id']}", headers=ann)
            if current.json()["status"] == "ORDER_STATUS_SUBMITTING":
                break
            await asyncio.sleep(0.02)
    assert (await shop.submit(order["id"])).status == opb.ORDER_STATUS_NEEDS_REVIEW  # a redelivery
    route = f"/api/v1/admin/orders/{order['id']}/resolve"
    body = {"resolution": "failed", "reason": "no such order upstream"}
    early = await shop.http.post(route, json=body, headers=shop.admin)
    assert early.json()["error"]["details"][0]["reason"] == "ORDER_SUBMISSION_OUT", early.text
    await _past_the_submission_window(pool, order["id"])
    failed = await shop.http.post(route, json=body, headers=shop.admin)
    assert (failed.json()["status"], failed.json()["released"]) == ("ORDER_STATUS_FAILED", "0.325")
    answered = await first  # the provider's answer arrives: accepted
    [upstream] = await demo_provider.orders()
    assert answered.status == opb.ORDER_STATUS_FAILED
    assert answered.upstream_order_id == str(upstream["order"])  # staff can cancel it there
    assert (answered.charged, answered.released) == ("0.00", "0.325")
    other = (await shop.order(ann, serviceId=likes, link="https://x.com/other", quantity=1000)).json()
    assert await shop.balance(ann) == ("4.675", "0.325")
    await shop.submit(other["id"])
    done = await shop.settle(other["id"], ann)
    assert (done["status"], done["charged"]) == ("ORDER_STATUS_COMPLETED", "0.325")
    assert await shop.balance(ann) == ("4.675", "0.00")
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT status, note FROM order_events WHERE order_id = %s ORDER BY id", (int(order["id"]),)
        )
        timeline = await cursor.fetchall()
    assert [status for status, _ in timeline] == ["pending", "needs_review", "failed", "failed"]
    assert f"accepted it as #{upstream['order']} after the order was failed" in timeline[-1][1]
    assert (await shop.verify()).ok


async def _past_the_submission_window(pool: Pool, order_id: str) -> None:
    """As if the call were still out after the 5 minutes staff wait for its answer."""
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE order_submissions SET create_time = create_time - interval '6 minutes'"
            " WHERE order_id = %s",
            (int(order_id),),
        )


async def _in_review_with_the_first_add_out(
    shop: Shop, user: dict[str, str], order_id: str
) -> asyncio.Task[opb.Order]:
    """Submission A is out (slow); a redelivered event moves the order to review."""
    first = asyncio.create_task(shop.submit(order_id))
    async with asyncio.timeout(5):
        while True:
            current = await shop.http.get(f"/api/v1/dashboard/orders/{order_id}", headers=user)
            if current.json()["status"] == "ORDER_STATUS_SUBMITTING":
                break
            await asyncio.sleep(0.02)
    assert (await shop.submit(order_id)).status == opb.ORDER_STATUS_NEEDS_REVIEW
    return first


@pytest.mark.parametrize("first_answer", ["refused", "accepted"])
async def test_an_earlier_submissions_late_answer_never_moves_an_order_sent_again(
    shop: Shop, demo_provider: DemoHandle, pool: Pool, first_answer: str
) -> None:
    """Staff resubmitted an order while its first ``add`` was still out. The first one's late
    refusal failed the order (and released its hold) while the second was placed; its late
    acceptance took the order over and left the second upstream order untracked. (Refused now
    while the call may be out; still handled past that window.)"""
    ann = await shop.user("ann@example.com", "5.00")
    backup = await add_provider(shop.http, shop.admin, demo_provider, name="Backup")
    order = (
        await shop.order(ann, serviceId=shop.service_id("2"), link="https://x.com/race", quantity=1000)
    ).json()
    first_kind = "error_body" if first_answer == "refused" else "latency"
    await demo_provider.fault(first_kind, count=1, actions=["add"], delay_s=1.0)  # A: slow
    await demo_provider.fault("latency", count=1, actions=["add"], delay_s=2.5)  # B: slower, accepted
    first = await _in_review_with_the_first_add_out(shop, ann, order["id"])
    route = f"/api/v1/admin/orders/{order['id']}/resubmit"
    body = {"providerId": backup["id"], "upstreamServiceId": "2", "reason": "provider 1 looks stuck"}
    early = await shop.http.post(route, json=body, headers=shop.admin)
    assert early.json()["error"]["details"][0]["reason"] == "ORDER_SUBMISSION_OUT", early.text
    await _past_the_submission_window(pool, order["id"])  # (as the test above)
    resubmitted = await shop.http.post(route, json=body, headers=shop.admin)
    assert resubmitted.status_code == 200, resubmitted.text
    await asyncio.gather(first, shop.submit(order["id"]))
    upstream = sorted(int(o["order"]) for o in await demo_provider.orders())
    final = (await shop.http.get(f"/api/v1/dashboard/orders/{order['id']}", headers=ann)).json()
    staff_view = (await shop.http.get(f"/api/v1/admin/orders/{order['id']}", headers=shop.admin)).json()
    assert (final["status"], final["released"]) == ("ORDER_STATUS_IN_PROGRESS", "0.00")
    assert (staff_view["providerId"], staff_view["upstreamOrderId"]) == (backup["id"], str(upstream[-1]))
    assert await shop.balance(ann) == ("4.675", "0.325")
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT note FROM order_events WHERE order_id = %s ORDER BY id", (int(order["id"]),)
        )
        notes = [row[0] for row in await cursor.fetchall()]
    if first_answer == "accepted":  # two upstream orders: the one not followed is flagged for staff
        assert len(upstream) == 2
        assert any(f"as #{upstream[0]} after the order was sent again: check it there" in n for n in notes), (
            notes
        )
    else:
        assert len(upstream) == 1
        assert not any("check it there" in n for n in notes), notes
    assert (await shop.verify()).ok


async def test_a_cancel_answered_after_the_order_finished_leaves_it_finished(
    shop: Shop, demo_provider: DemoHandle, pool: Pool
) -> None:
    """The cancel's provider call outlived the order: it then appended an "in progress" status
    (and event) to a completed order and marked it cancel-requested."""
    ann = await shop.user("ann@example.com", "5.00")
    order = (
        await shop.order(ann, serviceId=shop.service_id("1"), link="https://x.com/done", quantity=100)
    ).json()
    await shop.submit(order["id"])
    await demo_provider.fault("latency", count=1, actions=["cancel"], delay_s=1.0)
    cancel = asyncio.create_task(
        shop.http.post(f"/api/v1/dashboard/orders/{order['id']}/cancel", json={}, headers=ann)
    )
    await asyncio.sleep(0.2)
    assert (await shop.settle(order["id"], ann))["status"] == "ORDER_STATUS_COMPLETED"
    assert (await cancel).json()["status"] == "ORDER_STATUS_COMPLETED"
    async with pool.connection() as conn:
        row = await (
            await conn.execute("SELECT status, cancel_state FROM orders WHERE id = %s", (int(order["id"]),))
        ).fetchone()
        cursor = await conn.execute(
            "SELECT status, note FROM order_events WHERE order_id = %s ORDER BY id", (int(order["id"]),)
        )
        timeline = await cursor.fetchall()
    assert row == ("completed", "")
    assert [status for status, _ in timeline][-1] == "completed"
    assert timeline[-1][1].startswith("cancel")


async def test_the_accepted_answer_is_stored_with_its_timeline_line_and_event(shop: Shop, pool: Pool) -> None:
    ann = await shop.user("ann@example.com", "5.00")
    order = (
        await shop.order(ann, serviceId=shop.service_id("2"), link="https://x.com/fast", quantity=1000)
    ).json()
    calls_before = await _provider_calls(pool, int(shop.provider_id))  # type: ignore[attr-defined]
    sent = await shop.submit(order["id"])
    assert sent.status == opb.ORDER_STATUS_IN_PROGRESS
    assert sent.upstream_order_id
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT state, upstream_order_id, finish_time IS NOT NULL FROM order_submissions"
            " WHERE order_id = %s",
            (int(order["id"]),),
        )
        assert await cursor.fetchall() == [("accepted", sent.upstream_order_id, True)]
        cursor = await conn.execute(
            "SELECT status, note FROM order_events WHERE order_id = %s ORDER BY id", (int(order["id"]),)
        )
        assert [tuple(r) for r in await cursor.fetchall()] == [
            ("pending", "placed"),
            ("in_progress", f"sent to provider {shop.provider_id}"),  # type: ignore[attr-defined]
        ]
        cursor = await conn.execute(
            "SELECT payload FROM outbox_events WHERE subject = 'smm.orders.order.changed'"
        )
        [(payload,)] = await cursor.fetchall()
        # The call is in the per-order provider log and in the provider's health, written together.
        cursor = await conn.execute(
            "SELECT action, outcome, http_status FROM provider_exchanges WHERE %s = ANY (order_ids)",
            (int(order["id"]),),
        )
        assert await cursor.fetchall() == [("add", "accepted", 200)]
    assert await _provider_calls(pool, int(shop.provider_id)) == (calls_before[0] + 1, 0)  # type: ignore[attr-defined]
    changed = events_pb2.OrderChanged.FromString(payload)
    assert (changed.order_id, changed.status) == (int(order["id"]), "in_progress")
    assert changed.user_id == int(sent.user_id)


async def _provider_calls(pool: Pool, provider_id: int) -> tuple[int, int]:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT calls, failures FROM provider_health WHERE provider_id = %s", (provider_id,)
        )
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def test_an_order_not_sent_stays_pending_and_is_retried(
    shop: Shop, demo_provider: DemoHandle, pool: Pool
) -> None:
    ann = await shop.user("ann@example.com", "5.00")
    order = (
        await shop.order(ann, serviceId=shop.service_id("2"), link="https://x.com/later", quantity=1000)
    ).json()
    async with pool.connection() as conn:  # the circuit is open: nothing goes out
        await conn.execute("UPDATE provider_health SET circuit_phase = 'open', circuit_opened_time = now()")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await shop.submit(order["id"])
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert (await shop.http.get(f"/api/v1/dashboard/orders/{order['id']}", headers=ann)).json()[
        "status"
    ] == "ORDER_STATUS_PENDING"
    async with pool.connection() as conn:
        await conn.execute("UPDATE provider_health SET circuit_phase = 'closed', circuit_failures = 0")
    retried = await shop.submit(order["id"])
    assert retried.status == opb.ORDER_STATUS_IN_PROGRESS
    assert len(await demo_provider.orders()) == 1


async def test_order_input_is_validated_field_by_field_and_mass_orders_line_by_line(shop: Shop) -> None:
    ann = await shop.user("ann@example.com", "5.00")
    followers = shop.service_id("1")  # min 50, max 10000, drip-feed allowed
    bad = await shop.order(ann, serviceId=followers, link="not a url", quantity=10)
    error = assert_error(bad, 400, "INVALID_ARGUMENT")
    [details] = [d for d in error["details"] if d["@type"].endswith("BadRequest")]
    assert {v["field"] for v in details["fieldViolations"]} == {"link", "quantity"}
    comments = shop.service_id("5")
    mismatch = await shop.order(ann, serviceId=comments, link="https://x.com/c", quantity=3, comments="a\nb")
    assert_error(mismatch, 400, "INVALID_ARGUMENT")
    missing = await shop.order(ann, serviceId="999999", link="https://x.com/c", quantity=100)
    assert_error(missing, 400, "FAILED_PRECONDITION", "SERVICE_NOT_ON_SALE")
    drip = await shop.order(
        ann, serviceId=followers, link="https://x.com/d", quantity=100, runs=3, interval=10
    )
    assert drip.status_code == 200, drip.text
    assert (drip.json()["price"], drip.json()["runs"]) == ("0.351", 3)  # 1.17 x 300 / 1000

    mass = await shop.http.post(
        "/api/v1/dashboard/orders/mass",
        json={
            "lines": f"{followers} | https://x.com/m1 | 100\nnonsense\n{followers} | https://x.com/m2 | 5\n"
        },
        headers=ann,
    )
    assert mass.status_code == 200, mass.text
    lines = mass.json()["lines"]
    assert (mass.json()["placed"], mass.json()["refused"]) == (1, 2)
    assert lines[0]["orderId"] != "0"
    assert lines[0]["error"] == ""
    assert lines[1]["error"] == "expected: service | link | quantity"
    assert "quantity" in lines[2]["error"]


async def test_a_retried_mass_order_places_each_line_once(shop: Shop) -> None:
    """The Idempotency-Key of a mass order was once dropped, and a retry placed every line again."""
    account = await register(shop.http, "ann@example.com")
    ann = bearer(account["token"])
    await shop.fund(account["user"]["id"], "0.70")  # two orders of 0.325, not three
    likes = shop.service_id("2")
    url, headers = "/api/v1/dashboard/orders/mass", {**ann, "Idempotency-Key": "mass-1"}
    lines = "\n".join(f"{likes} | https://x.com/{name} | 1000" for name in ("a", "b", "c"))
    first, second = await asyncio.gather(
        shop.http.post(url, json={"lines": lines}, headers=headers),
        shop.http.post(url, json={"lines": lines}, headers=headers),
    )
    assert first.status_code == second.status_code == 200, first.text + second.text
    placed = [line["orderId"] for line in first.json()["lines"]]
    assert [line["orderId"] for line in second.json()["lines"]] == placed
    assert first.json()["placed"] == 2
    assert placed[2] == "0"
    assert "Insufficient funds" in first.json()["lines"][2]["error"]
    assert await shop.balance(ann) == ("0.05", "0.65")
    await shop.fund(
        account["user"]["id"], "1.00"
    )  # the retry after a top-up places only the line refused before
    retried = await shop.http.post(url, json={"lines": lines}, headers=headers)
    assert [line["orderId"] for line in retried.json()["lines"]][:2] == placed[:2]
    assert retried.json()["placed"] == 3
    listed = (await shop.http.get("/api/v1/dashboard/orders", headers=ann)).json()["orders"]
    assert len(listed) == 3
    other_lines = await shop.http.post(url, json={"lines": lines + "\n" + lines}, headers=headers)
    assert_error(other_lines, 400, "FAILED_PRECONDITION", "REQUEST_ID_REUSED")
    assert await shop.balance(ann) == ("0.725", "0.975")
    assert (await shop.verify()).ok


async def test_racing_retries_of_one_order_with_funds_for_one_all_get_that_order(shop: Shop) -> None:
    """The retry's hold found the funds taken by the first request's hold and answered
    INSUFFICIENT_FUNDS, though the order it asked for had been placed."""
    likes = shop.service_id("2")
    body = {"serviceId": likes, "link": "https://x.com/once", "quantity": 1000}
    for attempt in range(5):
        ann = await shop.user(f"ann{attempt}@example.com", "0.325")  # exactly one order
        headers = {**ann, "Idempotency-Key": "order-key-1"}
        replies = await asyncio.gather(
            *(shop.http.post("/api/v1/dashboard/orders", json=body, headers=headers) for _ in range(4))
        )
        assert [r.status_code for r in replies] == [200] * 4, [r.text for r in replies]
        assert len({r.json()["id"] for r in replies}) == 1
        assert await shop.balance(ann) == ("0.00", "0.325")
    assert (await shop.verify()).ok


async def test_non_ascii_digits_are_not_numbers(shop: Shop) -> None:
    """ "²".isdigit() is true and int("²") fails: these were 500s."""
    ann = await shop.user("ann@example.com", "1.00")
    search = await shop.http.get("/api/v1/dashboard/orders", params={"query": "²"}, headers=ann)
    assert (search.status_code, search.json()["orders"]) == (200, [])
    likes = shop.service_id("2")
    mass = await shop.http.post(
        "/api/v1/dashboard/orders/mass",
        json={"lines": f"{likes} | https://x.com/a | 1000²\n²{likes} | https://x.com/a | 1000"},
        headers=ann,
    )
    assert mass.status_code == 200, mass.text
    assert [line["error"] for line in mass.json()["lines"]] == ["expected: service | link | quantity"] * 2
    for path in ("/api/v1/admin/users", "/api/v1/admin/services"):
        found = await shop.http.get(path, params={"query": "²"}, headers=shop.admin)
        assert found.status_code == 200, found.text


async def test_orders_without_a_quantity_release_what_a_partial_end_left(
    shop: Shop, demo_provider: DemoHandle
) -> None:
    """A subscription or a package has no quantity, and a partial end once released nothing: the
    user paid in full for what the provider refunded."""
    ann = await shop.user("ann@example.com", "100.00")
    subscription = await shop.order(
        ann, serviceId=shop.service_id("17"), username="partial.account", min=50, max=100, posts=3, delay=30
    )
    assert subscription.status_code == 200, subscription.text
    package = await shop.order(
        ann, serviceId=shop.service_id("3"), link="https://instagram.com/stories/partial"
    )
    assert package.status_code == 200, package.text
    for placed in (subscription, package):
        await shop.submit(placed.json()["id"])
    upstream = {o["order"]: o for o in await demo_provider.orders()}
    ended = await shop.settle(subscription.json()["id"], ann)
    price, remains = Decimal(subscription.json()["price"]), 100 * 3 - 2 * (100 * 3 // 3)  # a third left
    assert (ended["status"], Decimal(ended["released"])) == ("ORDER_STATUS_EXPIRED", price * remains / 300)
    assert Decimal(ended["charged"]) + Decimal(ended["released"]) == price
    [sent] = [o for o in upstream.values() if o["link"] == "https://instagram.com/stories/partial"]
    assert sent["quantity"] == 1
    ended = await shop.settle(package.json()["id"], ann)
    # The provider ends a one-unit package Partial with that unit left: nothing was delivered.
    assert (ended["status"], ended["charged"], ended["released"]) == (
        "ORDER_STATUS_PARTIAL",
        "0.00",
        package.json()["price"],
    )
    assert (await shop.verify()).ok


async def test_users_see_only_their_orders_with_search_filters_and_stats(shop: Shop) -> None:
    ann = await shop.user("ann@example.com", "5.00")
    bob = await shop.user("bob@example.com", "5.00")
    likes = shop.service_id("2")
    first = (await shop.order(ann, serviceId=likes, link="https://x.com/first", quantity=1000)).json()
    await shop.order(ann, serviceId=likes, link="https://x.com/second", quantity=2000)
    theirs = await shop.http.get(f"/api/v1/dashboard/orders/{first['id']}", headers=bob)
    assert_error(theirs, 404, "NOT_FOUND", "ORDER_NOT_FOUND")
    assert (await shop.http.get("/api/v1/dashboard/orders", headers=bob)).json()["orders"] == []
    listed = (await shop.http.get("/api/v1/dashboard/orders", params={"query": "first"}, headers=ann)).json()
    assert [o["id"] for o in listed["orders"]] == [first["id"]]
    by_id = (
        await shop.http.get("/api/v1/dashboard/orders", params={"query": first["id"]}, headers=ann)
    ).json()
    assert [o["id"] for o in by_id["orders"]] == [first["id"]]
    pending = (
        await shop.http.get(
            "/api/v1/dashboard/orders",
            params={"status": "ORDER_STATUS_PENDING", "pageSize": "1"},
            headers=ann,
        )
    ).json()
    assert len(pending["orders"]) == 1
    assert pending["nextPageToken"]
    page_two = (
        await shop.http.get(
            "/api/v1/dashboard/orders",
            params={"status": "ORDER_STATUS_PENDING", "pageSize": "1", "pageToken": pending["nextPageToken"]},
            headers=ann,
        )
    ).json()
    assert [o["id"] for o in page_two["orders"]] == [first["id"]]
    stats = (await shop.http.get("/api/v1/dashboard/orders/stats", headers=ann)).json()
    assert stats["byStatus"] == [{"status": "ORDER_STATUS_PENDING", "count": "2"}]
    assert [(s["orders"], s["spent"]) for s in stats["spend"]] == [("2", "0.975")]


async def test_order_search_takes_percent_underscore_and_backslash_literally(shop: Shop) -> None:
    """The search is "part of a link": the user's ``%``, ``_`` and ``\\`` are characters to find,
    not LIKE wildcards (``a_b`` once also found ``axb``, and ``%`` every order)."""
    ann = await shop.user("ann@example.com", "5.00")
    likes = shop.service_id("2")
    wanted = (await shop.order(ann, serviceId=likes, link="https://x.com/a_b", quantity=1000)).json()
    await shop.order(ann, serviceId=likes, link="https://x.com/axb", quantity=1000)

    async def found(query: str) -> list[str]:
        listed = await shop.http.get("/api/v1/dashboard/orders", params={"query": query}, headers=ann)
        assert listed.status_code == 200, listed.text
        return [o["id"] for o in listed.json()["orders"]]

    assert await found("a_b") == [wanted["id"]]
    assert await found("x.com/%") == []
    assert await found("%") == []
    assert await found("\\") == []


async def test_ledger_verify_command_passes_then_names_a_broken_invariant(
    shop: Shop, grpc_server: ServerHandle, settings: Settings, pool: Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    ann = await shop.user("ann@example.com", "5.00")
    await shop.order(ann, serviceId=shop.service_id("2"), link="https://x.com/v", quantity=1000)
    target = f"127.0.0.1:{grpc_server.port}"
    assert await verify_ledger(target, settings) == 0
    assert "ledger ok" in capsys.readouterr().out
    async with pool.connection() as conn:  # a cached balance that no longer matches its entries
        await conn.execute("UPDATE wallets SET available_micros = available_micros + 1")
    assert await verify_ledger(target, settings) == 1
    err = capsys.readouterr().err
    assert "LEDGER BROKEN" in err
    assert "cached available 4.675001" in err
    async with pool.connection() as conn:  # and the ledger itself refuses edits
        with pytest.raises(Exception, match="append-only"):
            await conn.execute("UPDATE ledger_entries SET amount_micros = 1")


async def test_a_provider_with_open_orders_cannot_be_deleted(shop: Shop, pool: Pool) -> None:
    ann = await shop.user("ann@example.com", "5.00")
    order = (
        await shop.order(ann, serviceId=shop.service_id("2"), link="https://x.com/open", quantity=1000)
    ).json()
    await shop.submit(order["id"])
    provider_id = shop.provider_id  # type: ignore[attr-defined]
    refused = await shop.http.delete(f"/api/v1/admin/providers/{provider_id}", headers=shop.admin)
    error = assert_error(refused, 400, "FAILED_PRECONDITION", "PROVIDER_HAS_OPEN_ORDERS")
    assert error["details"][0]["metadata"] == {"open_orders": "1"}
    await ready_to_poll(pool)
    await shop.settle(order["id"], ann)
    deleted = await shop.http.delete(f"/api/v1/admin/providers/{provider_id}", headers=shop.admin)
    assert deleted.json()["status"] == "deleted"


async def test_a_disabled_providers_open_orders_still_finish_and_settle(shop: Shop, pool: Pool) -> None:
    """Deleting a provider with open orders says "disable it and let them finish first", but a
    disabled provider's orders were never asked about again: they stayed in progress with the
    customer's money held until staff enabled the provider again (and so could never delete it).
    Disabling stops selling and sending; the orders already there are still followed to their end."""
    ann = await shop.user("ann@example.com", "5.00")
    # A completed order with a refill out at the provider, and an order in progress.
    refilled = await shop.completed_order(ann, "https://x.com/r")
    refill = await shop.http.post(f"/api/v1/dashboard/orders/{refilled['id']}/refill", json={}, headers=ann)
    assert refill.status_code == 200, refill.text
    order = (
        await shop.order(ann, serviceId=shop.service_id("2"), link="https://x.com/open", quantity=1000)
    ).json()
    await shop.submit(order["id"])
    provider_id = shop.provider_id  # type: ignore[attr-defined]
    disabled = await shop.http.patch(
        f"/api/v1/admin/providers/{provider_id}", json={"enabled": False}, headers=shop.admin
    )
    assert (disabled.status_code, disabled.json()["status"]) == (200, "disabled")
    refused = await shop.order(ann, serviceId=shop.service_id("2"), link="https://x.com/new", quantity=1000)
    assert_error(refused, 400, "FAILED_PRECONDITION", "SERVICE_NOT_ON_SALE")  # nothing new is sold

    await ready_to_poll(pool)
    done = await shop.settle(order["id"], ann, timeout_s=5)
    assert (done["status"], done["charged"], done["released"]) == ("ORDER_STATUS_COMPLETED", "0.325", "0.00")
    assert await shop.balance(ann) == ("4.558", "0.00")  # 5.00 - 0.117 - 0.325
    for _ in range(50):  # the refill is followed to its end too
        async with pool.connection() as conn:
            await conn.execute("UPDATE order_refills SET next_poll_time = now()")
        await shop.orders.PollOrders(opb.PollOrdersRequest(), metadata=system_metadata())
        async with pool.connection() as conn:
            cursor = await conn.execute("SELECT status FROM order_refills")
            if (await cursor.fetchone()) == ("completed",):
                break
    else:
        raise AssertionError("the refill was never asked about")
    assert (await shop.verify()).ok
    deleted = await shop.http.delete(f"/api/v1/admin/providers/{provider_id}", headers=shop.admin)
    assert deleted.json()["status"] == "deleted"


async def test_a_provider_with_a_refill_out_is_not_deleted_until_the_refill_ends(
    shop: Shop, pool: Pool
) -> None:
    """Deleting waited for open orders only: a provider deleted with a refill out left that refill
    "Pending" for ever (a deleted provider is never asked about it again) and the order could never
    be refilled again (one open refill per order)."""
    ann = await shop.user("ann@example.com", "5.00")
    refilled = await shop.completed_order(ann, "https://x.com/out")
    refill = await shop.http.post(f"/api/v1/dashboard/orders/{refilled['id']}/refill", json={}, headers=ann)
    assert refill.status_code == 200, refill.text
    provider_id = shop.provider_id  # type: ignore[attr-defined]
    disabled = await shop.http.patch(
        f"/api/v1/admin/providers/{provider_id}", json={"enabled": False}, headers=shop.admin
    )
    assert disabled.status_code == 200, disabled.text
    refused = await shop.http.delete(f"/api/v1/admin/providers/{provider_id}", headers=shop.admin)
    assert_error(refused, 400, "FAILED_PRECONDITION", "PROVIDER_HAS_OPEN_ORDERS")
    for _ in range(50):  # the refill is followed to its end; then the provider may go
        async with pool.connection() as conn:
            await conn.execute("UPDATE order_refills SET next_poll_time = now()")
        await shop.orders.PollOrders(opb.PollOrdersRequest(), metadata=system_metadata())
        async with pool.connection() as conn:
            cursor = await conn.execute("SELECT status FROM order_refills")
            if (await cursor.fetchone()) in (("completed",), ("rejected",)):
                break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the refill never ended")
    deleted = await shop.http.delete(f"/api/v1/admin/providers/{provider_id}", headers=shop.admin)
    assert deleted.json()["status"] == "deleted"


async def test_a_disabled_providers_customers_keep_their_refills_and_its_pushes_still_count(
    shop: Shop, demo_provider: DemoHandle, demo_provider_factory: DemoFactory
) -> None:
    """A refill request for a completed order of a disabled provider was refused ("The order's
    provider is not available"), so the refill guarantee the customer paid for lapsed; the
    provider's signed pushes about its orders were a 404, although its polls were still read."""
    ann = await shop.user("ann@example.com", "5.00")
    done = await shop.completed_order(ann, "https://x.com/guaranteed")
    provider, hook, likes = await pushing_provider(shop, demo_provider_factory, step_s=60)
    pushed_order = (await shop.order(ann, serviceId=likes, link="https://x.com/pushed", quantity=1000)).json()
    upstream_id = (await shop.submit(pushed_order["id"])).upstream_order_id
    for provider_id in (shop.provider_id, provider["id"]):  # type: ignore[attr-defined]
        disabled = await shop.http.patch(
            f"/api/v1/admin/providers/{provider_id}", json={"enabled": False}, headers=shop.admin
        )
        assert (disabled.status_code, disabled.json()["status"]) == (200, "disabled")

    refill = await shop.http.post(f"/api/v1/dashboard/orders/{done['id']}/refill", json={}, headers=ann)
    assert refill.status_code == 200, refill.text
    assert await demo_provider.requests("refill") == 1
    body = json.dumps({"order": upstream_id, "status": "Completed", "remains": "0"}).encode()
    push = await shop.http.post(hook, content=body, headers=signed(WEBHOOK_SECRET, body))
    assert (push.status_code, push.json()) == (200, {"applied": True}), push.text
    seen = (await shop.http.get(f"/api/v1/dashboard/orders/{pushed_order['id']}", headers=ann)).json()
    assert (seen["status"], seen["charged"], seen["released"]) == ("ORDER_STATUS_COMPLETED", "0.325", "0.00")
    assert await shop.balance(ann) == ("4.558", "0.00")  # 5.00 - 0.117 - 0.325
    assert (await shop.verify()).ok


async def test_a_service_can_refuse_a_second_active_order_for_the_same_link(shop: Shop) -> None:
    ann = await shop.user("ann@example.com", "5.00")
    likes = shop.service_id("2")
    turned_on = await shop.http.patch(
        f"/api/v1/admin/services/{likes}", json={"oneActiveOrderPerLink": True}, headers=shop.admin
    )
    assert turned_on.json()["oneActiveOrderPerLink"] is True
    first = await shop.order(ann, serviceId=likes, link="https://x.com/same", quantity=1000)
    assert first.status_code == 200
    second = await shop.order(ann, serviceId=likes, link="https://x.com/same", quantity=1000)
    error = assert_error(second, 400, "FAILED_PRECONDITION", "ACTIVE_ORDER_FOR_LINK")
    assert error["message"].startswith("You have active order with this link")
    other = await shop.order(ann, serviceId=likes, link="https://x.com/other", quantity=1000)
    assert other.status_code == 200


async def test_the_ledger_cli_finds_the_token_make_run_generated(
    grpc_server: ServerHandle, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    token = settings.internal_token.get_secret_value()
    (tmp_path / "dev-secrets.json").write_text(json.dumps({"SMM_INTERNAL_TOKEN": token}))
    monkeypatch.setenv("SMM_VAR_DIR", str(tmp_path))
    monkeypatch.delenv("SMM_INTERNAL_TOKEN", raising=False)
    monkeypatch.setenv("SMM_GRPC_ADDR", f"127.0.0.1:{grpc_server.port}")
    assert await asyncio.to_thread(smm_main, ["ledger", "verify"]) == 0
    assert "ledger ok" in capsys.readouterr().out
    (tmp_path / "dev-secrets.json").unlink()  # no token anywhere: refused, and said so
    assert await asyncio.to_thread(smm_main, ["ledger", "verify"]) == 2
    assert "UNAUTHENTICATED" in capsys.readouterr().err


async def test_the_one_statement_claim_takes_only_the_usual_case_and_follows_the_candidates(
    shop: Shop, demo_provider: DemoHandle, pool: Pool
) -> None:
    """``claim_submission`` is the dispatcher's fast path: it must pick the candidate the locking
    path would pick, and leave every other case (pinned, drip-feed by smm, none left, not pending)
    to that path by answering nothing."""
    ann = await shop.user("ann@example.com", "5.00")
    likes = shop.service_id("2")
    backup = await add_provider(shop.http, shop.admin, demo_provider, name="Backup")
    await shop.with_fallback(likes, "2", backup["id"])
    ids = [
        int(
            (await shop.order(ann, serviceId=likes, link=f"https://x.com/claim{n}", quantity=1000)).json()[
                "id"
            ]
        )
        for n in range(5)
    ]
    first, second, pinned, exhausted, gone = ids
    async with pool.connection() as conn:
        await conn.execute("UPDATE orders SET attempt = 1 WHERE id = %s", (second,))
        await conn.execute("UPDATE orders SET pinned_provider = true WHERE id = %s", (pinned,))
        await conn.execute("UPDATE orders SET attempt = 2 WHERE id = %s", (exhausted,))
        await conn.execute("UPDATE orders SET status = 'in_progress' WHERE id = %s", (gone,))
        claimed = [await QUERIES.one(conn, "claim_submission", Claim, id=i) for i in ids]
        cursor = await conn.execute(
            "SELECT o.id, o.status, s.state, s.provider_id FROM orders o"
            " LEFT JOIN order_submissions s ON s.order_id = o.id WHERE o.id = ANY(%s) ORDER BY o.id",
            (ids,),
        )
        rows = await cursor.fetchall()
    assert [c is not None for c in claimed] == [True, True, False, False, False]
    assert claimed[0] is not None
    assert claimed[1] is not None
    assert (claimed[0].id, claimed[0].provider_id) == (first, int(shop.provider_id))  # type: ignore[attr-defined]
    assert (claimed[1].id, claimed[1].provider_id) == (second, int(backup["id"]))
    assert claimed[0].upstream_params["link"] == "https://x.com/claim0"
    assert rows == [
        (first, "submitting", "starting", int(shop.provider_id)),  # type: ignore[attr-defined]
        (second, "submitting", "starting", int(backup["id"])),
        (pinned, "pending", None, None),
        (exhausted, "pending", None, None),
        (gone, "in_progress", None, None),
    ]
    # The locking path then handles what the fast one left: the exhausted order fails and is released.
    failed = await shop.submit(str(exhausted))
    assert failed.status == opb.ORDER_STATUS_FAILED
    assert (await shop.verify()).ok


class TestSpendWhenTheDatabaseIsNotInUtc:
    """PostgreSQL's TimeZone comes from the host at initdb; the spend window's start was a bare
    timestamp read in it, so in New York an order early on the window's first UTC day was left out."""

    @pytest.fixture
    def db_url(self, pg_admin_url: str, template_db: str) -> Iterator[str]:
        name = f"smm_tz_{uuid.uuid4().hex[:8]}"
        url = create_database(pg_admin_url, name, template=template_db)
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} SET timezone = 'Etc/GMT+5'").format(sql.Identifier(name)))
        yield url
        drop_database(pg_admin_url, name)

    async def test_spend_counts_an_order_from_early_on_the_first_utc_day(
        self, shop: Shop, pool: Pool
    ) -> None:
        ann = await shop.user("ann@example.com", "5.00")
        placed = (
            await shop.order(ann, serviceId=shop.service_id("2"), link="https://x.com/tz", quantity=1000)
        ).json()
        async with pool.connection() as conn:
            assert await (await conn.execute("SHOW timezone")).fetchone() == ("Etc/GMT+5",)
            await conn.execute(
                "UPDATE orders SET create_time = (date_trunc('day', now() AT TIME ZONE 'UTC')"
                " - interval '1 day' + interval '30 minutes') AT TIME ZONE 'UTC' WHERE id = %s",
                (int(placed["id"]),),
            )
        stats = (
            await shop.http.get(
                "/api/v1/dashboard/orders/stats", params={"period": "day", "periods": "2"}, headers=ann
            )
        ).json()
        assert [(s["orders"], s["spent"]) for s in stats["spend"]] == [("1", "0.325")]


async def test_customers_never_see_the_provider_its_order_id_or_staff_and_provider_notes(shop: Shop) -> None:
    """Every customer view (create, get, list, cancel, refill) showed the provider's id, the order's
    id there, and the timeline's notes: "sent to provider 1", a provider's refusal in its words, a
    staff reason. Resellers learn where to buy for less; staff see it whole."""
    ann = await shop.user("ann@example.com", "5.00")
    created = await shop.order(
        ann, serviceId=shop.service_id("2"), link="https://x.com/secret", quantity=1000
    )
    assert created.status_code == 200, created.text
    order_id = created.json()["id"]
    sent = await shop.submit(order_id)
    assert sent.upstream_order_id
    assert sent.provider_id
    await shop.demo.fault("error_body", count=1, actions=["cancel"], message="Our balance is empty")  # type: ignore[attr-defined]
    cancel = await shop.http.post(f"/api/v1/dashboard/orders/{order_id}/cancel", json={}, headers=ann)
    assert cancel.status_code == 200, cancel.text

    staff = await shop.staff_order(order_id)
    assert (staff["providerId"], staff["upstreamOrderId"]) == (str(sent.provider_id), sent.upstream_order_id)
    assert staff["cancelState"] == "rejected"
    assert staff["cancelMessage"] == "Our balance is empty"
    assert any("sent to provider" in e.get("note", "") for e in staff["timeline"])

    one = (await shop.http.get(f"/api/v1/dashboard/orders/{order_id}", headers=ann)).json()
    listed = (await shop.http.get("/api/v1/dashboard/orders", headers=ann)).json()["orders"]
    for seen in (created.json(), cancel.json(), one, *listed):
        staff_only = {
            k: seen.get(k) for k in ("providerId", "upstreamOrderId", "statusNote", "cancelMessage")
        }
        assert staff_only == {"providerId": "0", "upstreamOrderId": "", "statusNote": "", "cancelMessage": ""}
        assert all(not e.get("note") for e in seen.get("timeline", [])), seen["timeline"]
    assert one["cancelState"] == "rejected"  # that the cancel was refused is the customer's to know
    assert [e["status"] for e in one["timeline"]] == [e["status"] for e in staff["timeline"]]

    done = await shop.completed_order(ann, "https://x.com/kept")
    await shop.demo.fault("error_body", count=1, actions=["refill"], message="Refills paused by SupplierX")  # type: ignore[attr-defined]
    refill = await shop.http.post(f"/api/v1/dashboard/orders/{done['id']}/refill", json={}, headers=ann)
    assert refill.status_code == 200, refill.text
    assert refill.json()["status"] == "rejected"
    assert not refill.json().get("message")
    assert (await shop.staff_order(done["id"]))["refills"][0]["message"] == "Refills paused by SupplierX"
    customer_refills = (await shop.http.get(f"/api/v1/dashboard/orders/{done['id']}", headers=ann)).json()[
        "refills"
    ]
    assert [r["status"] for r in customer_refills] == ["rejected"]
    assert not customer_refills[0].get("message")


async def test_a_drip_feed_the_provider_runs_is_stuck_only_once_its_last_run_is_late(
    shop: Shop, pool: Pool
) -> None:
    """Runs every 4 hours for 36 hours: it was reported stuck a day in, while on schedule."""
    ann = await shop.user("ann@example.com", "5.00")
    placed = await shop.order(
        ann, serviceId=shop.service_id("1"), link="https://x.com/drip", quantity=50, runs=10, interval=240
    )
    assert placed.status_code == 200, placed.text
    order_id = int(placed.json()["id"])
    await shop.submit(str(order_id))
    system = spb_grpc.SystemServiceStub(shop.channel)
    period = 30 * 60_000_000

    async def aged_and_ticked(hours: int) -> None:
        nonlocal period
        async with pool.connection() as conn:
            await conn.execute(
                "UPDATE orders SET create_time = now() - make_interval(hours => %s) WHERE id = %s",
                (hours, order_id),
            )
        period += 30
        await system.RunJob(
            spb.RunJobRequest(job="order-poll", period_start=period), metadata=system_metadata()
        )

    await aged_and_ticked(25)  # a day old, the last run due in 11 hours
    assert await stuck_alerts(pool) == []
    await aged_and_ticked(59)  # the last run was due 23 hours ago
    assert await stuck_alerts(pool) == []
    await aged_and_ticked(61)  # a day late
    assert await stuck_alerts(pool) == [[order_id]]


async def test_a_drip_feed_that_never_reached_its_provider_is_stuck_like_any_order(
    shop: Shop, pool: Pool
) -> None:
    """The schedule put the alert off by (runs - 1) x interval for every drip-feed, also one that
    never reached its provider (pending, in review): 1,000 runs a day apart were silent for years."""
    ann = await shop.user("ann@example.com", "5.00")
    placed = await shop.order(
        ann, serviceId=shop.service_id("1"), link="https://x.com/never", quantity=50, runs=10, interval=240
    )
    assert placed.status_code == 200, placed.text
    order_id = int(placed.json()["id"])
    system = spb_grpc.SystemServiceStub(shop.channel)
    period = 30 * 60_000_000
    for n, status in enumerate(("pending", "needs_review")):
        async with pool.connection() as conn:
            await conn.execute(
                "UPDATE orders SET status = %s, stuck_alert_time = NULL,"
                " create_time = now() - interval '25 hours' WHERE id = %s",
                (status, order_id),
            )
        await system.RunJob(
            spb.RunJobRequest(job="order-poll", period_start=period + 30 * n), metadata=system_metadata()
        )
        assert (await stuck_alerts(pool))[n:] == [[order_id]], status


async def test_a_slow_provider_does_not_hold_up_the_polls_of_the_others(
    shop: Shop, pool: Pool, demo_provider: DemoHandle, demo_provider_factory: DemoFactory
) -> None:
    """The poller asked one provider after another: a provider answering in 5 s (or timing out,
    three tries each) delayed every other provider's orders by as much on every tick."""
    other = await demo_provider_factory()
    second = await add_provider(shop.http, shop.admin, other, name="Demo B")
    await run_sync(shop.channel, second["id"])
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "SELECT id FROM services WHERE provider_id = %s AND upstream_service_id = '1'",
                (int(second["id"]),),
            )
        ).fetchone()
    assert row is not None
    ann = await shop.user("ann@example.com", "5.00")
    first = (
        await shop.order(ann, serviceId=shop.service_id("1"), link="https://x.com/a", quantity=100)
    ).json()
    later = (await shop.order(ann, serviceId=str(row[0]), link="https://x.com/b", quantity=100)).json()
    await shop.submit(first["id"])
    await shop.submit(later["id"])
    async with pool.connection() as conn:  # the slow provider's order comes first
        await conn.execute(
            "UPDATE orders SET next_poll_time = now() - CASE WHEN id = %s THEN interval '1 minute' ELSE interval '1 second' END",
            (int(first["id"]),),
        )
    await demo_provider.fault("latency", actions=["status"], delay_s=5.0)
    polling = asyncio.ensure_future(
        shop.orders.PollOrders(opb.PollOrdersRequest(), metadata=system_metadata())
    )
    try:

        async def other_asked() -> bool:
            return await other.requests("status") >= 1

        await eventually(other_asked, timeout_s=2.0)
    finally:
        await polling


async def test_an_upstream_status_the_state_machine_refuses_still_moves_the_next_poll_on(
    shop: Shop, demo_provider: DemoHandle, pool: Pool
) -> None:
    """An upstream status the state machine refuses was ignored without moving the order's next
    poll: asked again on every tick, first in line, such orders could crowd every other order out
    of the poller's batch. (A subscription left in processing, which has no move to paused, stands
    for any such pair: the provider's words no longer lead there.)"""
    ann = await shop.user("ann@example.com", "100.00")
    placed = await shop.order(
        ann, serviceId=shop.service_id("17"), username="steady.account", min=50, max=100, posts=30, delay=30
    )
    assert placed.status_code == 200, placed.text
    order_id = int(placed.json()["id"])
    await shop.submit(placed.json()["id"])

    async def poll() -> tuple[str, bool]:
        await ready_to_poll(pool)
        await shop.orders.PollOrders(opb.PollOrdersRequest(), metadata=system_metadata())
        async with pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT status, next_poll_time > now() + interval '10 seconds' FROM orders WHERE id = %s",
                (order_id,),
            )
            row = await cursor.fetchone()
        assert row is not None
        return row[0], row[1]

    assert await poll() == ("active", True)
    async with pool.connection() as conn:
        await conn.execute("UPDATE orders SET status = 'processing' WHERE id = %s", (order_id,))
    await demo_provider.fault("status_word", count=1, actions=["status"], message="Paused")
    assert await poll() == ("processing", True)  # kept, and asked again later, not on the next tick


async def test_a_service_relinked_to_another_provider_is_not_sold_on_the_old_terms(
    shop: Shop, demo_provider_factory: DemoFactory, pool: Pool
) -> None:
    """Relinking kept the old provider's cost, rate and currency, and the service on sale: orders
    placed before the new provider's next sync were priced on the old terms and sent to a provider
    charging four times as much, in another currency: sold below cost."""
    euro, backup = await euro_provider(shop.http, shop.admin, demo_provider_factory, "2", "0.50")
    likes = shop.service_id("2")  # 0.25 USD a 1000 at the demo, sold at 0.325
    relinked = await shop.http.post(
        f"/api/v1/admin/services/{likes}/providers",
        json={"provider": {"providerId": backup["id"], "upstreamServiceId": "2"}},
        headers=shop.admin,
    )
    assert relinked.status_code == 200, relinked.text
    assert relinked.json()["quarantined"] is True
    assert "until a sync of that provider prices it" in relinked.json()["quarantineReason"]
    ann = await shop.user("ann@example.com", "5.00")
    refused = await shop.order(ann, serviceId=likes, link="https://x.com/relinked", quantity=1000)
    assert_error(refused, 400, "FAILED_PRECONDITION", "SERVICE_NOT_ON_SALE")
    assert await euro.orders() == []

    # The new provider's sync prices it: 0.50 EUR at 2 is 1.00 a 1000, four times the old cost,
    # so staff decide, as for any cost rise.
    await run_sync(shop.channel, backup["id"])
    view = (await shop.http.get(f"/api/v1/admin/services/{likes}", headers=shop.admin)).json()
    assert (view["quarantined"], view["pendingProviderRate"]) == (True, "0.50")
    accepted = await shop.http.post(
        f"/api/v1/admin/services/{likes}/accept-price", json={}, headers=shop.admin
    )
    assert accepted.status_code == 200, accepted.text
    view = accepted.json()
    assert (view["quarantined"], view["providerCurrency"], view["cost"], view["service"]["rate"]) == (
        False,
        "EUR",
        "1.00",
        "1.30",
    )
    order = (await shop.order(ann, serviceId=likes, link="https://x.com/relinked", quantity=1000)).json()
    assert order["price"] == "1.30"
    sent = await shop.submit(order["id"])
    assert sent.status == opb.ORDER_STATUS_IN_PROGRESS
    assert len(await euro.orders()) == 1


async def test_a_fallback_costing_more_than_the_order_is_skipped_and_the_taker_s_terms_are_kept(
    shop: Shop, demo_provider: DemoHandle, demo_provider_factory: DemoFactory, pool: Pool
) -> None:
    """A refused order went to the fallback whatever it cost: a fallback charging 1.00 (0.50 EUR at
    2) for likes sold at 0.325 lost money on every such order, and the order kept the primary's
    rate, currency and exchange rate."""
    euro, backup = await euro_provider(shop.http, shop.admin, demo_provider_factory, "2", "0.50")
    await run_sync(shop.channel, backup["id"])  # smm knows what the fallback charges
    likes = shop.service_id("2")
    await shop.with_fallback(likes, "2", backup["id"])
    ann = await shop.user("ann@example.com", "5.00")

    await demo_provider.fault("error_body", count=1, actions=["add"])
    dear = (await shop.order(ann, serviceId=likes, link="https://x.com/dear", quantity=1000)).json()
    failed = await shop.submit(dear["id"])
    assert failed.status == opb.ORDER_STATUS_FAILED
    assert (failed.charged, failed.released) == ("0.00", "0.325")
    assert await euro.orders() == []
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT note FROM order_events WHERE order_id = %s", (int(dear["id"]),))
        notes = [r[0] for r in await cursor.fetchall()]
    assert any("skipped: it would cost 1.00, more than the order's price 0.325" in n for n in notes), notes

    # Cheaper upstream (0.10 EUR at 2 = 0.20 a 1000): the fallback takes the order, which records
    # the fallback's own rate, currency and exchange rate.
    assert (await euro.control.put("/control/services/2", json={"rate": "0.10"})).status_code == 200
    await run_sync(shop.channel, backup["id"])
    await demo_provider.fault("error_body", count=1, actions=["add"])
    cheap = (await shop.order(ann, serviceId=likes, link="https://x.com/cheap", quantity=1000)).json()
    sent = await shop.submit(cheap["id"])
    assert sent.status == opb.ORDER_STATUS_IN_PROGRESS
    assert len(await euro.orders()) == 1
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT provider_id, provider_rate_micros, provider_currency, exchange_rate FROM orders WHERE id = %s",
            (int(cheap["id"]),),
        )
        assert await cursor.fetchone() == (int(backup["id"]), 100_000, "EUR", Decimal(2))
    assert await shop.balance(ann) == ("4.675", "0.325")
    assert (await shop.verify()).ok
