"""Two operations on the SAME order at once: the money must end exact (no double release, no release
after a settle, no hold left behind, no negative balance, ``ledger verify`` clean, status and money
agreeing). Real PostgreSQL and the demo provider over HTTP; each race runs truly concurrently
(asyncio.gather) several times with small random delays."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable
from decimal import Decimal
from typing import Any

import pytest
from smm.v1 import orders_service_pb2 as opb

from server.common.db import Pool
from tests.fix_demo import DemoHandle
from tests.fix_grpc import system_metadata
from tests.fix_shop import FINAL, Shop, ready_to_poll
from tests.integration.test_dripfeed import make_due, offer_dripfeed, place, runs_of
from tests.integration.test_reseller import signed

pytestmark = pytest.mark.integration

ROUNDS = 4
FINAL_DB = ("completed", "partial", "canceled", "failed", "expired")


async def later(coro: Awaitable[Any], max_delay_s: float = 0.03) -> Any:
    await asyncio.sleep(random.uniform(0, max_delay_s))
    return await coro


async def race(*coros: Awaitable[Any]) -> list[Any]:
    return list(await asyncio.gather(*(later(c) for c in coros), return_exceptions=True))


async def poll(shop: Shop) -> opb.PollOrdersResponse:
    reply: opb.PollOrdersResponse = await shop.orders.PollOrders(
        opb.PollOrdersRequest(), metadata=system_metadata()
    )
    return reply


async def ready_all(pool: Pool) -> None:
    await ready_to_poll(pool)
    async with pool.connection() as conn:
        await conn.execute("UPDATE order_runs SET next_poll_time = now() WHERE next_poll_time IS NOT NULL")


async def money(pool: Pool, order_id: str | int) -> tuple[str, int, int, int]:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT status, price_micros, charged_micros, released_micros FROM orders WHERE id = %s",
            (int(order_id),),
        )
        row = await cursor.fetchone()
    assert row is not None
    return row[0], int(row[1]), int(row[2]), int(row[3])


async def ledger_moves(pool: Pool, order_id: str | int) -> list[tuple[str, int]]:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT kind, amount_micros FROM ledger_transactions WHERE reference = %s ORDER BY id",
            (f"order:{order_id}",),
        )
        return [(k, int(a)) for k, a in await cursor.fetchall()]


async def wallet(pool: Pool, user_id: int) -> tuple[int, int]:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT available_micros, held_micros FROM wallets WHERE user_id = %s", (user_id,)
        )
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def assert_books(shop: Shop, pool: Pool, user_id: int, funded_micros: int) -> None:
    """The wallet equals what its orders say, to the micro-unit, and the ledger verifies."""
    verified = await shop.verify()
    assert verified.ok, list(verified.problems)
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT status, price_micros, charged_micros, released_micros FROM orders WHERE user_id = %s",
            (user_id,),
        )
        rows = await cursor.fetchall()
    charged = sum(int(r[2]) for r in rows)
    held = 0
    for status, price, c, r in rows:
        if status in FINAL_DB:
            assert c + r == price, (status, price, c, r)
        else:
            assert (c, r) == (0, 0), (status, price, c, r)
            held += price
    assert await wallet(pool, user_id) == (funded_micros - charged - held, held)


async def new_user(shop: Shop, email: str, funds: str) -> tuple[dict[str, str], int]:
    user = await shop.user(email, funds)
    async with shop.pool.connection() as conn:
        cursor = await conn.execute("SELECT id FROM users WHERE email = %s", (email,))
        row = await cursor.fetchone()
    assert row is not None
    return user, int(row[0])


async def wait_upstream(demo: DemoHandle, upstream_id: str, status: str, timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            found = [o for o in await demo.orders() if str(o["order"]) == upstream_id]
            if found and found[0]["status"] == status:
                return
            await asyncio.sleep(0.02)


async def settle_all(shop: Shop, pool: Pool, ids: list[str], user: dict[str, str]) -> None:
    for order_id in ids:
        status = (await money(pool, order_id))[0]
        if status not in FINAL_DB and status != "needs_review":
            await shop.settle(order_id, user)


async def enable_webhooks(shop: Shop, secret: str) -> str:
    enabled = await shop.http.patch(
        f"/api/v1/admin/providers/{shop.provider_id}",  # type: ignore[attr-defined]
        json={"webhookSecret": secret},
        headers=shop.admin,
    )
    assert enabled.status_code == 200, enabled.text
    return f"/api/v1/webhooks/provider/{shop.provider_id}"  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------ user cancel vs poller


@pytest.mark.parametrize("ending", ["completed", "partial", "cancel"])
async def test_user_cancel_races_the_poller_applying_a_final_status(
    shop: Shop, pool: Pool, demo_provider: DemoHandle, ending: str
) -> None:
    ann, ann_id = await new_user(shop, "ann@example.com", "20.00")
    likes = shop.service_id("2")  # cancel allowed upstream
    ids: list[str] = []
    for n in range(ROUNDS):
        order = (
            await shop.order(ann, serviceId=likes, link=f"https://x.com/{ending}/{n}", quantity=999)
        ).json()
        ids.append(order["id"])
        sent = await shop.submit(order["id"])
        assert sent.status == opb.ORDER_STATUS_IN_PROGRESS
        await asyncio.sleep(random.uniform(0.0, 0.2))  # somewhere along its way upstream
        await ready_all(pool)
        results = await race(
            shop.http.post(f"/api/v1/dashboard/orders/{order['id']}/cancel", json={}, headers=ann),
            poll(shop),
            poll(shop),
        )
        for r in results[1:]:
            assert not isinstance(r, BaseException), r
        done = await shop.settle(order["id"], ann)
        _status, price, charged, released = await money(pool, order["id"])
        assert done["status"] in FINAL
        assert charged + released == price
        kinds = [k for k, _ in await ledger_moves(pool, order["id"])]
        assert kinds.count("settle") <= 1, kinds
        assert kinds.count("release") <= 1, kinds
    await assert_books(shop, pool, ann_id, 20_000_000)


# ------------------------------------------------------------------------------ webhook vs poller


@pytest.mark.parametrize("ending", ["completed", "partial", "cancel"])
async def test_a_webhook_and_the_poller_apply_the_same_final_status_once(
    shop: Shop, pool: Pool, demo_provider: DemoHandle, ending: str
) -> None:
    secret = "whsec-races"
    hook = await enable_webhooks(shop, secret)
    ann, ann_id = await new_user(shop, "ann@example.com", "20.00")
    likes = shop.service_id("2")
    for n in range(ROUNDS):
        order = (
            await shop.order(ann, serviceId=likes, link=f"https://x.com/{ending}/{n}", quantity=999)
        ).json()
        sent = await shop.submit(order["id"])
        upstream_id = sent.upstream_order_id
        word = {"completed": "Completed", "partial": "Partial", "cancel": "Canceled"}[ending]
        await wait_upstream(demo_provider, upstream_id, word)
        [up] = [o for o in await demo_provider.orders() if str(o["order"]) == upstream_id]
        body = json.dumps(
            {"order": upstream_id, "status": word, "remains": str(up["remains"]), "start_count": "1000"}
        ).encode()
        await ready_all(pool)
        results = await race(
            shop.http.post(hook, content=body, headers=signed(secret, body)),
            shop.http.post(hook, content=body, headers=signed(secret, body)),
            poll(shop),
        )
        for r in results:
            assert not isinstance(r, BaseException), r
        applied = [r.json()["applied"] for r in results[:2]]
        assert applied.count(True) <= 1, applied
        status, price, charged, released = await money(pool, order["id"])
        assert status == {"completed": "completed", "partial": "partial", "cancel": "canceled"}[ending]
        assert charged + released == price
        kinds = [k for k, _ in await ledger_moves(pool, order["id"])]
        assert kinds.count("settle") <= 1, kinds
        assert kinds.count("release") <= 1, kinds
    await assert_books(shop, pool, ann_id, 20_000_000)


# ------------------------------------------------------------------------------ staff vs poller


@pytest.mark.parametrize(
    "staff_status", ["ORDER_STATUS_CANCELED", "ORDER_STATUS_PARTIAL", "ORDER_STATUS_COMPLETED"]
)
async def test_staff_set_status_races_the_poller(
    shop: Shop, pool: Pool, demo_provider: DemoHandle, staff_status: str
) -> None:
    ann, ann_id = await new_user(shop, "ann@example.com", "20.00")
    likes = shop.service_id("2")
    for n in range(ROUNDS):
        link = f"https://x.com/{'partial' if n % 2 else 'done'}/{n}"
        order = (await shop.order(ann, serviceId=likes, link=link, quantity=999)).json()
        sent = await shop.submit(order["id"])
        await wait_upstream(demo_provider, sent.upstream_order_id, "Partial" if n % 2 else "Completed")
        await ready_all(pool)
        body: dict[str, Any] = {"status": staff_status, "reason": "staff looked"}
        if staff_status == "ORDER_STATUS_PARTIAL":
            body["remains"] = "100"
        results = await race(
            shop.http.post(f"/api/v1/admin/orders/{order['id']}/status", json=body, headers=shop.admin),
            poll(shop),
        )
        assert not isinstance(results[1], BaseException), results[1]
        staff = results[0]
        assert staff.status_code in (200, 400), staff.text
        status, price, charged, released = await money(pool, order["id"])
        assert status in FINAL_DB
        assert charged + released == price
    await assert_books(shop, pool, ann_id, 20_000_000)


# ------------------------------------------------------------------------------ two poll ticks


async def test_two_poll_ticks_at_once_finish_each_order_once(
    shop: Shop, pool: Pool, demo_provider: DemoHandle
) -> None:
    ann, ann_id = await new_user(shop, "ann@example.com", "20.00")
    likes = shop.service_id("2")
    ids = []
    for n in range(9):
        ending = ("done", "partial", "cancel")[n % 3]
        order = (
            await shop.order(ann, serviceId=likes, link=f"https://x.com/{ending}/{n}", quantity=999)
        ).json()
        sent = await shop.submit(order["id"])
        ids.append(order["id"])
        word = {"done": "Completed", "partial": "Partial", "cancel": "Canceled"}[ending]
        await wait_upstream(demo_provider, sent.upstream_order_id, word)  # final upstream
    for _ in range(3):
        await ready_all(pool)
        results = await race(poll(shop), poll(shop), poll(shop))
        for r in results:
            assert not isinstance(r, BaseException), r
    for order_id in ids:
        status, price, charged, released = await money(pool, order_id)
        assert status in FINAL_DB, status
        assert charged + released == price
    await assert_books(shop, pool, ann_id, 20_000_000)


# ------------------------------------------------------------------------------ drip-feed smm sends


async def place_drip(
    shop: Shop, user: dict[str, str], service_id: str, link: str, *, quantity: int = 100, runs: int = 3
) -> dict[str, Any]:
    return await place(shop, user, service_id, link, quantity=quantity, runs=runs, interval=1)


async def drip_to_the_end(shop: Shop, pool: Pool, order_id: str) -> str:
    for _ in range(60):
        status = (await money(pool, order_id))[0]
        if status in FINAL_DB or status == "needs_review":
            return status
        await make_due(pool, order_id)
        await ready_all(pool)
        await poll(shop)
        await asyncio.sleep(0.05)
    raise AssertionError(f"order {order_id} did not end: {await runs_of(pool, order_id)}")


async def assert_drip_money(pool: Pool, order_id: str, price: int, units: int) -> None:
    """The order's release is exactly the share of what its runs did not deliver."""
    status, price_db, charged, released = await money(pool, order_id)
    assert price_db == price
    assert status in FINAL_DB, status
    runs = await runs_of(pool, order_id)
    remains = sum(r[3] if r[3] is not None else r[2] for r in runs)
    q, rem = divmod(price * remains, units)
    expected = min(price, q + (1 if 2 * rem >= units else 0))
    if status == "completed":
        expected = 0
    if status in ("canceled", "failed"):
        expected = price
    assert (status, charged, released) == (status, price - expected, expected), runs


@pytest.mark.parametrize("latency", [0.0, 0.3])
async def test_a_drip_feed_run_claimed_while_the_user_cancels(
    shop: Shop, pool: Pool, demo_provider: DemoHandle, latency: float
) -> None:
    seo = await offer_dripfeed(shop)
    ann, ann_id = await new_user(shop, "ann@example.com", "50.00")
    for n in range(ROUNDS):
        order = await place_drip(shop, ann, seo, f"https://example.com/drip/{n}")
        if n % 2:  # the first run out already; the others due now
            await shop.submit(order["id"])
            await make_due(pool, order["id"])
        if latency:
            await demo_provider.fault("latency", count=3, actions=["add"], delay_s=latency)
        results = await race(
            shop.submit(order["id"]),
            shop.http.post(f"/api/v1/dashboard/orders/{order['id']}/cancel", json={}, headers=ann),
            poll(shop),
        )
        for r in results:
            assert not isinstance(r, BaseException), r
        assert results[1].status_code == 200, results[1].text
        await demo_provider.clear_faults()
        await asyncio.sleep(0.3)
        end = await drip_to_the_end(shop, pool, order["id"])
        assert end in FINAL_DB, (end, await runs_of(pool, order["id"]))
        await assert_drip_money(pool, order["id"], int(Decimal(order["price"]) * 1_000_000), 300)
    await assert_books(shop, pool, ann_id, 50_000_000)


async def test_several_runs_of_one_drip_feed_settle_at_once(
    shop: Shop, pool: Pool, demo_provider: DemoHandle
) -> None:
    seo = await offer_dripfeed(shop)
    ann, ann_id = await new_user(shop, "ann@example.com", "50.00")
    for n in range(ROUNDS):
        link = f"https://example.com/{'partial' if n % 2 else 'done'}/{n}"
        order = await place_drip(shop, ann, seo, link, quantity=101, runs=3)
        await make_due(pool, order["id"])
        await shop.submit(order["id"])  # all three runs due: all go out
        assert [r[1] for r in await runs_of(pool, order["id"])] == ["in_progress"] * 3
        await asyncio.sleep(0.3)  # every run final upstream
        await ready_all(pool)
        results = await race(poll(shop), poll(shop), poll(shop))
        for r in results:
            assert not isinstance(r, BaseException), r
        end = await drip_to_the_end(shop, pool, order["id"])
        assert end in FINAL_DB
        await assert_drip_money(pool, order["id"], int(Decimal(order["price"]) * 1_000_000), 303)
    await assert_books(shop, pool, ann_id, 50_000_000)


async def test_a_drip_feed_cancel_while_its_runs_finish(
    shop: Shop, pool: Pool, demo_provider: DemoHandle
) -> None:
    seo = await offer_dripfeed(shop)
    ann, ann_id = await new_user(shop, "ann@example.com", "50.00")
    for n in range(ROUNDS):
        order = await place_drip(shop, ann, seo, f"https://example.com/partial/{n}", quantity=101, runs=3)
        await shop.submit(order["id"])  # run 1 out
        async with pool.connection() as conn:
            await conn.execute(
                "UPDATE order_runs SET due_time = now() WHERE order_id = %s AND run_no = 2",
                (int(order["id"]),),
            )
        await poll(shop)  # run 2 out; run 3 scheduled
        await asyncio.sleep(0.3)
        await ready_all(pool)
        results = await race(
            shop.http.post(f"/api/v1/dashboard/orders/{order['id']}/cancel", json={}, headers=ann),
            poll(shop),
            poll(shop),
        )
        for r in results:
            assert not isinstance(r, BaseException), r
        end = await drip_to_the_end(shop, pool, order["id"])
        assert end in FINAL_DB
        await assert_drip_money(pool, order["id"], int(Decimal(order["price"]) * 1_000_000), 303)
    await assert_books(shop, pool, ann_id, 50_000_000)


# ------------------------------------------------------------------------------ subscriptions


async def test_a_subscription_end_applied_by_webhooks_and_polls_at_once(
    shop: Shop, pool: Pool, demo_provider: DemoHandle
) -> None:
    secret = "whsec-subs"
    hook = await enable_webhooks(shop, secret)
    ann, ann_id = await new_user(shop, "ann@example.com", "100.00")
    for n in range(ROUNDS):
        placed = await shop.order(
            ann, serviceId=shop.service_id("17"), username=f"partial.account{n}", min=50, max=100, posts=3,
            delay=30,
        )  # fmt: skip
        assert placed.status_code == 200, placed.text
        order = placed.json()
        sent = await shop.submit(order["id"])
        await wait_upstream(demo_provider, sent.upstream_order_id, "Partial")
        [up] = [o for o in await demo_provider.orders() if str(o["order"]) == sent.upstream_order_id]
        body = json.dumps(
            {"order": sent.upstream_order_id, "status": "Partial", "remains": str(up["remains"])}
        )
        await ready_all(pool)
        results = await race(
            shop.http.post(hook, content=body.encode(), headers=signed(secret, body.encode())),
            shop.http.post(hook, content=body.encode(), headers=signed(secret, body.encode())),
            poll(shop),
        )
        for r in results:
            assert not isinstance(r, BaseException), r
        status, price, charged, released = await money(pool, order["id"])
        assert status == "expired"
        q, rem = divmod(price * int(up["remains"]), 300)
        assert released == q + (1 if 2 * rem >= 300 else 0)
        assert charged + released == price
    await assert_books(shop, pool, ann_id, 100_000_000)


# ------------------------------------------------------------------------------ staff resolve vs poll


async def test_staff_resolve_races_the_automatic_reconciler_and_the_poller(
    shop: Shop, pool: Pool, demo_provider: DemoHandle
) -> None:
    ann, ann_id = await new_user(shop, "ann@example.com", "20.00")
    likes = shop.service_id("2")
    async with pool.connection() as conn:
        await conn.execute("UPDATE providers SET timeout_ms = 300, update_time = now()")
    for n in range(ROUNDS):
        before = (await shop.order(ann, serviceId=likes, link=f"https://x.com/b{n}", quantity=1000)).json()
        await shop.submit(before["id"])
        await demo_provider.fault("timeout", count=1, actions=["add"])
        lost = (await shop.order(ann, serviceId=likes, link=f"https://x.com/l{n}", quantity=1000)).json()
        assert (await shop.submit(lost["id"])).status == opb.ORDER_STATUS_NEEDS_REVIEW
        after = (await shop.order(ann, serviceId=likes, link=f"https://x.com/a{n}", quantity=1000)).json()
        await shop.submit(after["id"])
        async with pool.connection() as conn:
            await conn.execute(
                "UPDATE orders SET update_time = now() - interval '3 minutes', reconcile_time = NULL "
                "WHERE id = %s",
                (int(lost["id"]),),
            )
        await asyncio.sleep(0.3)
        await ready_all(pool)
        resolution = {"resolution": "failed", "reason": "staff say it failed"}
        results = await race(
            shop.http.post(f"/api/v1/admin/orders/{lost['id']}/resolve", json=resolution, headers=shop.admin),
            poll(shop),
            poll(shop),
        )
        assert not isinstance(results[1], BaseException), results[1]
        status, price, charged, released = await money(pool, lost["id"])
        if status not in FINAL_DB:
            await shop.settle(lost["id"], ann)
        status, price, charged, released = await money(pool, lost["id"])
        assert charged + released == price
        await settle_all(shop, pool, [before["id"], after["id"]], ann)
    await assert_books(shop, pool, ann_id, 20_000_000)


# ------------------------------------------------------------------------------ refill vs completion


async def test_a_refill_asked_while_the_order_completes(
    shop: Shop, pool: Pool, demo_provider: DemoHandle
) -> None:
    ann, ann_id = await new_user(shop, "ann@example.com", "20.00")
    followers = shop.service_id("1")  # refill allowed
    for n in range(ROUNDS):
        order = (await shop.order(ann, serviceId=followers, link=f"https://x.com/r{n}", quantity=300)).json()
        sent = await shop.submit(order["id"])
        await wait_upstream(demo_provider, sent.upstream_order_id, "Completed")
        await ready_all(pool)
        results = await race(
            shop.http.post(f"/api/v1/dashboard/orders/{order['id']}/refill", json={}, headers=ann),
            poll(shop),
            shop.http.post(f"/api/v1/dashboard/orders/{order['id']}/refill", json={}, headers=ann),
        )
        assert not isinstance(results[1], BaseException), results[1]
        status, price, charged, released = await money(pool, order["id"])
        assert (status, charged, released) == ("completed", price, 0)
    await assert_books(shop, pool, ann_id, 20_000_000)


# ------------------------------------------------------------------------------ staff "Partial" vs poller "Partial"


async def test_staff_and_the_poller_finishing_one_order_at_once_move_its_money_once(
    shop: Shop, pool: Pool, demo_provider: DemoHandle
) -> None:
    """The poller applies the provider's "Partial" while staff set the same order "Partial" by hand.
    Whichever comes second must be refused: the order is final. When the poller won, staff's finish
    ran again on the final order (a status may "move" to itself), found no settle under
    ``order:<id>:settle`` and settled the price out of ANOTHER order's hold."""
    ann, ann_id = await new_user(shop, "ann@example.com", "50.00")
    likes = shop.service_id("2")
    bystander = (await shop.order(ann, serviceId=likes, link="https://x.com/big", quantity=20000)).json()
    for n in range(ROUNDS):
        # The provider leaves a third; staff say 100 are left: two different splits of one price.
        order = (
            await shop.order(ann, serviceId=likes, link=f"https://x.com/partial{n}", quantity=999)
        ).json()
        sent = await shop.submit(order["id"])
        await wait_upstream(demo_provider, sent.upstream_order_id, "Partial")
        await ready_all(pool)

        async def staff(order_id: str) -> Any:
            await asyncio.sleep(random.uniform(0.15, 0.25))  # arrives while / just after the poll
            return await shop.http.post(
                f"/api/v1/admin/orders/{order_id}/status",
                json={
                    "status": "ORDER_STATUS_PARTIAL",
                    "remains": "1",
                    "reason": "their panel shows it partial",
                },
                headers=shop.admin,
            )

        _polled, staff_reply = await asyncio.gather(poll(shop), staff(order["id"]))
        assert staff_reply.status_code in (200, 400), staff_reply.text
        if staff_reply.status_code == 400:
            assert staff_reply.json()["error"]["details"][0]["reason"] == "ORDER_STATE_CONFLICT"
        status, price, charged, released = await money(pool, order["id"])
        moves = await ledger_moves(pool, order["id"])
        problems = list((await shop.verify()).problems)
        assert status == "partial"
        # One finish only: one settle and one release, whoever won.
        assert [k for k, _ in moves] == ["hold", "settle", "release"], (
            f"staff answered {staff_reply.status_code}: {staff_reply.text[:200]}; ledger {moves}; "
            f"order charged {charged} released {released} of {price}; wallet {await wallet(pool, ann_id)}; "
            f"verify {problems}"
        )
        assert charged + released == price
    status, *_ = await money(pool, bystander["id"])
    assert status == "pending"
    await assert_books(shop, pool, ann_id, 50_000_000)


# ------------------------------------------------------------------------------ "Partial" without remains


async def test_a_subscription_partial_without_remains_is_not_charged_in_full_whoever_comes_first(
    shop: Shop, pool: Pool, demo_provider: DemoHandle
) -> None:
    """A webhook says "Partial" without what remains while the poller asks and gets the remains.
    For an ordinary order the webhook's answer is held back for staff (never guessed); for a
    subscription (Partial -> expired) it is applied as remains 0, so when the webhook wins the race
    the user pays the whole price for what the provider only partly delivered."""
    secret = "whsec-subs-none"
    hook = await enable_webhooks(shop, secret)
    ann, ann_id = await new_user(shop, "ann@example.com", "100.00")
    for n in range(2):
        placed = await shop.order(
            ann, serviceId=shop.service_id("17"), username=f"partial.acct{n}", min=50, max=100, posts=3,
            delay=30,
        )  # fmt: skip
        assert placed.status_code == 200, placed.text
        order = placed.json()
        sent = await shop.submit(order["id"])
        await wait_upstream(demo_provider, sent.upstream_order_id, "Partial")
        [up] = [o for o in await demo_provider.orders() if str(o["order"]) == sent.upstream_order_id]
        body = json.dumps({"order": sent.upstream_order_id, "status": "Partial"}).encode()
        await ready_all(pool)
        results = await asyncio.gather(
            shop.http.post(hook, content=body, headers=signed(secret, body)), later(poll(shop), 0.05)
        )
        status, price, charged, released = await money(pool, order["id"])
        q, rem = divmod(price * int(up["remains"]), 300)
        expected = q + (1 if 2 * rem >= 300 else 0)
        assert (status, released) in (("expired", expected), ("active", 0), ("in_progress", 0)), (
            f"webhook {results[0].json()}: {status} charged {charged} released {released} of {price}; "
            f"provider remains {up['remains']} of 300 -> release {expected}"
        )
    await assert_books(shop, pool, ann_id, 100_000_000)
