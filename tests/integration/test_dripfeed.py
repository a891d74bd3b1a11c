"""Drip-feed smm sends itself: a service whose provider has no drip-feed, offered with drip-feed by
staff. Each run is an upstream order of its own; the order's money settles once, at the end."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import pytest
from smm.v1 import orders_service_pb2 as opb

from server.common.db import Pool
from tests.fix_demo import DemoFactory, DemoHandle
from tests.fix_grpc import system_metadata
from tests.fix_shop import Shop, ready_to_poll
from tests.integration.test_edge_http import assert_error
from tests.integration.test_events import eventually
from tests.integration.test_providers import add_provider, euro_provider, run_sync
from tests.integration.test_reseller import signed

pytestmark = pytest.mark.usefixtures("shop")
SEO = "4"  # the demo's "Website SEO Keyword Clicks": min 100, max 5000, no drip-feed upstream


async def offer_dripfeed(shop: Shop, upstream: str = SEO) -> str:
    service_id = shop.service_id(upstream)
    edited = await shop.http.patch(
        f"/api/v1/admin/services/{service_id}", json={"dripfeed": True}, headers=shop.admin
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["dripfeed"] is True
    admin = (await shop.http.get(f"/api/v1/admin/services/{service_id}", headers=shop.admin)).json()
    assert admin["upstreamDripfeed"] is False  # so smm sends the runs itself
    assert "dripfeed" in admin["adminEdited"]
    return service_id


async def place(
    shop: Shop, user: dict[str, str], service_id: str, link: str, *, quantity: int, runs: int, interval: int
) -> dict[str, Any]:
    placed = await shop.order(
        user,
        serviceId=service_id,
        keywords="smm panel",
        link=link,
        quantity=quantity,
        runs=runs,
        interval=interval,
    )
    assert placed.status_code == 200, placed.text
    order: dict[str, Any] = placed.json()
    return order


async def runs_of(pool: Pool, order_id: str) -> list[tuple[int, str, int, int | None]]:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT run_no, state, quantity, remains FROM order_runs WHERE order_id = %s ORDER BY run_no",
            (int(order_id),),
        )
        return list(await cursor.fetchall())


async def make_due(pool: Pool, order_id: str) -> None:
    """The clock moves on: every run is due now."""
    async with pool.connection() as conn:
        await conn.execute("UPDATE order_runs SET due_time = now() WHERE order_id = %s", (int(order_id),))


async def tick(shop: Shop) -> opb.PollOrdersResponse:
    await ready_to_poll(shop.pool)
    async with shop.pool.connection() as conn:
        await conn.execute("UPDATE order_runs SET next_poll_time = now() WHERE next_poll_time IS NOT NULL")
    reply: opb.PollOrdersResponse = await shop.orders.PollOrders(
        opb.PollOrdersRequest(), metadata=system_metadata()
    )
    return reply


async def get(shop: Shop, user: dict[str, str], order_id: str) -> dict[str, Any]:
    order: dict[str, Any] = (await shop.http.get(f"/api/v1/dashboard/orders/{order_id}", headers=user)).json()
    return order


async def run_to_the_end(shop: Shop, user: dict[str, str], order_id: str) -> dict[str, Any]:
    for _ in range(50):
        await make_due(shop.pool, order_id)
        await tick(shop)
        order = await get(shop, user, order_id)
        if order["status"] in {"ORDER_STATUS_COMPLETED", "ORDER_STATUS_PARTIAL", "ORDER_STATUS_CANCELED"}:
            return order
    raise AssertionError(f"the order did not end: {order}")


def share(price: Decimal, remains: int, units: int) -> Decimal:
    return (price * remains / units).quantize(Decimal("0.000001"), rounding="ROUND_HALF_UP")


async def test_runs_go_out_one_by_one_as_orders_of_their_own_and_the_order_completes_once(
    shop: Shop, demo_provider: DemoHandle, pool: Pool
) -> None:
    seo = await offer_dripfeed(shop)
    ann = await shop.user("ann@example.com", "10.00")
    order = await place(shop, ann, seo, "https://example.com/page", quantity=100, runs=3, interval=30)
    price = Decimal(order["price"])
    assert await shop.balance(ann) == (str(Decimal("10.00") - price), order["price"])
    assert [r[:3] for r in await runs_of(pool, order["id"])] == [
        (1, "scheduled", 100),
        (2, "scheduled", 100),
        (3, "scheduled", 100),
    ]

    sent = await shop.submit(order["id"])  # the order event: the first run is due at once
    assert sent.status == opb.ORDER_STATUS_IN_PROGRESS
    upstream = await demo_provider.orders()
    assert len(upstream) == 1
    assert upstream[0]["quantity"] == 100
    assert not upstream[0].get("runs")  # a plain order, not a drip-feed
    again = await shop.submit(order["id"])  # a redelivered event sends nothing new: run 2 is not due
    assert again.status == opb.ORDER_STATUS_IN_PROGRESS
    assert len(await demo_provider.orders()) == 1
    assert [r[1] for r in await runs_of(pool, order["id"])] == ["in_progress", "scheduled", "scheduled"]

    done = await run_to_the_end(shop, ann, order["id"])
    assert done["status"] == "ORDER_STATUS_COMPLETED"
    assert (Decimal(done["charged"]), Decimal(done["released"])) == (price, Decimal(0))
    assert len(await demo_provider.orders()) == 3
    assert [r[1:] for r in await runs_of(pool, order["id"])] == [("completed", 100, 0)] * 3
    assert await shop.balance(ann) == (str(Decimal("10.00") - price), "0.00")
    notes = [e["note"] for e in (await shop.staff_order(order["id"]))["timeline"]]
    assert any("run 3/3 sent to provider" in n for n in notes), notes
    assert (await shop.verify()).ok


async def test_partial_runs_release_exactly_what_was_not_delivered(shop: Shop, pool: Pool) -> None:
    seo = await offer_dripfeed(shop)
    ann = await shop.user("ann@example.com", "10.00")
    order = await place(shop, ann, seo, "https://example.com/partial", quantity=123, runs=2, interval=5)
    price = Decimal(order["price"])
    await shop.submit(order["id"])
    done = await run_to_the_end(shop, ann, order["id"])
    assert done["status"] == "ORDER_STATUS_PARTIAL"
    runs = await runs_of(pool, order["id"])
    assert [r[1] for r in runs] == ["partial", "partial"]
    remains = sum(r[3] or 0 for r in runs)
    assert 0 < remains < 246
    assert int(done["remains"]) == remains
    released = Decimal(done["released"])
    assert released == share(price, remains, 246)
    assert Decimal(done["charged"]) + released == price
    assert (await shop.verify()).ok


async def test_a_cancel_stops_the_remaining_runs_and_releases_their_share(
    shop: Shop, demo_provider: DemoHandle, pool: Pool
) -> None:
    seo = await offer_dripfeed(shop)
    ann = await shop.user("ann@example.com", "10.00")
    order = await place(shop, ann, seo, "https://example.com/stop", quantity=100, runs=3, interval=60)
    price = Decimal(order["price"])
    await shop.submit(order["id"])
    canceled = await shop.http.post(f"/api/v1/dashboard/orders/{order['id']}/cancel", json={}, headers=ann)
    assert canceled.status_code == 200, canceled.text
    assert [r[1] for r in await runs_of(pool, order["id"])] == ["in_progress", "canceled", "canceled"]
    done = await run_to_the_end(shop, ann, order["id"])  # the run already out still delivers
    assert done["status"] == "ORDER_STATUS_PARTIAL"
    assert len(await demo_provider.orders()) == 1
    assert Decimal(done["released"]) == share(price, 200, 300)
    assert (await shop.verify()).ok

    pending = await place(shop, ann, seo, "https://example.com/never", quantity=100, runs=2, interval=60)
    gone = await shop.http.post(f"/api/v1/dashboard/orders/{pending['id']}/cancel", json={}, headers=ann)
    assert gone.json()["status"] == "ORDER_STATUS_CANCELED"
    assert gone.json()["released"] == pending["price"]
    await make_due(pool, pending["id"])
    await tick(shop)
    assert len(await demo_provider.orders()) == 1  # nothing of it ever went out
    assert (await shop.verify()).ok


async def test_a_cancel_that_meets_the_order_finished_under_its_lock_says_so(shop: Shop, pool: Pool) -> None:
    """The order ends between the cancel's first read and its row lock: the cancel must see the
    locked row's status, not mark a finished order "cancel requested" and answer success."""
    seo = await offer_dripfeed(shop)
    ann = await shop.user("ann@example.com", "10.00")
    order = await place(shop, ann, seo, "https://example.com/late", quantity=100, runs=3, interval=60)
    await shop.submit(order["id"])
    async with pool.connection() as conn:
        async with conn.transaction():
            # Stands in for the poller finishing the order: the row is taken first, then committed.
            await conn.execute("UPDATE orders SET status = 'completed' WHERE id = %s", (int(order["id"]),))
            cancel = asyncio.create_task(
                shop.http.post(f"/api/v1/dashboard/orders/{order['id']}/cancel", json={}, headers=ann)
            )
            await asyncio.sleep(0.5)  # the cancel has read "in progress" and waits on the row
            assert not cancel.done()
        answer = await cancel
        cursor = await conn.execute("SELECT cancel_state FROM orders WHERE id = %s", (int(order["id"]),))
        assert await cursor.fetchone() == ("",)
    assert_error(answer, 400, "FAILED_PRECONDITION", "ORDER_NOT_CANCELLABLE")
    assert answer.json()["error"]["message"] == "Order is already completed"
    assert [r[1] for r in await runs_of(pool, order["id"])] == ["in_progress", "scheduled", "scheduled"]


async def test_a_run_whose_answer_is_lost_waits_for_staff_and_is_never_sent_twice(
    shop: Shop, demo_provider: DemoHandle, pool: Pool
) -> None:
    seo = await offer_dripfeed(shop)
    ann = await shop.user("ann@example.com", "10.00")
    order = await place(shop, ann, seo, "https://example.com/lost", quantity=100, runs=2, interval=1)
    await shop.submit(order["id"])
    async with pool.connection() as conn:  # a short provider timeout keeps the test fast
        await conn.execute("UPDATE providers SET timeout_ms = 300, update_time = now()")
    await demo_provider.fault("timeout", count=1, actions=["add"])  # run 2 is placed, its answer lost
    await make_due(pool, order["id"])
    await tick(shop)
    assert [r[1] for r in await runs_of(pool, order["id"])][1] == "needs_review"
    assert (await get(shop, ann, order["id"]))["status"] == "ORDER_STATUS_NEEDS_REVIEW"
    await tick(shop)
    assert await shop.submit(order["id"])  # a redelivered event
    assert len(await demo_provider.orders()) == 2  # run 2 exists upstream exactly once

    lost = max(await demo_provider.orders(), key=lambda o: int(o["order"]))
    resolved = await shop.http.post(
        f"/api/v1/admin/orders/{order['id']}/resolve",
        json={"resolution": "found", "upstreamOrderId": str(lost["order"]), "reason": "found in their panel"},
        headers=shop.admin,
    )
    assert resolved.status_code == 200, resolved.text
    done = await run_to_the_end(shop, ann, order["id"])
    assert done["status"] == "ORDER_STATUS_COMPLETED"
    assert len(await demo_provider.orders()) == 2
    assert (await shop.verify()).ok


async def test_a_run_refused_everywhere_fails_alone_and_staff_can_send_a_lost_one_again(
    shop: Shop, demo_provider: DemoHandle, pool: Pool
) -> None:
    seo = await offer_dripfeed(shop)
    ann = await shop.user("ann@example.com", "10.00")
    order = await place(shop, ann, seo, "https://example.com/mixed", quantity=100, runs=3, interval=1)
    price = Decimal(order["price"])
    await shop.submit(order["id"])  # run 1 out
    await demo_provider.fault("error_body", count=1, actions=["add"])  # run 2 refused, no fallback
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE order_runs SET due_time = now() WHERE order_id = %s AND run_no = 2", (int(order["id"]),)
        )
    await tick(shop)
    assert [r[1] for r in await runs_of(pool, order["id"])][1:] == ["failed", "scheduled"]

    async with pool.connection() as conn:  # run 3's submission died mid-call long ago (a killed process)
        await conn.execute(
            "UPDATE order_runs SET due_time = now(), state = 'submitting',"
            " update_time = now() - interval '10 minutes' WHERE order_id = %s AND run_no = 3",
            (int(order["id"]),),
        )
    await tick(shop)
    assert [r[1] for r in await runs_of(pool, order["id"])][1:] == ["failed", "needs_review"]
    resolved = await shop.http.post(
        f"/api/v1/admin/orders/{order['id']}/resolve",
        json={"resolution": "not_placed", "reason": "not in their panel"},
        headers=shop.admin,
    )
    assert resolved.status_code == 200, resolved.text
    done = await run_to_the_end(shop, ann, order["id"])
    assert done["status"] == "ORDER_STATUS_PARTIAL"
    assert len(await demo_provider.orders()) == 2  # runs 1 and 3
    assert Decimal(done["released"]) == share(price, 100, 300)
    assert (await shop.verify()).ok


async def test_a_provider_with_drip_feed_still_gets_one_drip_feed_order(
    shop: Shop, demo_provider: DemoHandle, pool: Pool
) -> None:
    ann = await shop.user("ann@example.com", "10.00")
    followers = shop.service_id("1")  # drip-feed upstream
    order = (
        await shop.order(ann, serviceId=followers, link="https://x.com/d", quantity=100, runs=3, interval=10)
    ).json()
    await shop.submit(order["id"])
    [upstream] = await demo_provider.orders()
    assert int(upstream["runs"]) == 3
    assert await runs_of(pool, order["id"]) == []


async def test_a_sync_keeps_the_drip_feed_staff_offered(shop: Shop, pool: Pool) -> None:
    from tests.integration.test_providers import run_sync

    seo = await offer_dripfeed(shop)
    await run_sync(shop.channel, shop.provider_id)  # type: ignore[attr-defined]
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT dripfeed, upstream_dripfeed FROM services WHERE id = %s", (int(seo),)
        )
        assert await cursor.fetchone() == (True, False)
        cursor = await conn.execute(
            "SELECT dripfeed, upstream_dripfeed FROM services WHERE id = %s", (int(shop.service_id("1")),)
        )
        assert await cursor.fetchone() == (True, True)


async def test_a_webhook_naming_no_order_is_refused_and_never_finishes_a_drip_feed_smm_sends(
    shop: Shop, pool: Pool
) -> None:
    """Such an order has no upstream id of its own (its runs do): a signed webhook for order ""
    once matched it and canceled it, releasing everything while its runs were still out."""
    secret = "whsec-dripfeed"
    enabled = await shop.http.patch(
        f"/api/v1/admin/providers/{shop.provider_id}",  # type: ignore[attr-defined]
        json={"webhookSecret": secret},
        headers=shop.admin,
    )
    assert enabled.json()["webhooksEnabled"] is True, enabled.text
    seo = await offer_dripfeed(shop)
    ann = await shop.user("ann@example.com", "10.00")
    order = await place(shop, ann, seo, "https://example.com/hook", quantity=100, runs=3, interval=60)
    await shop.submit(order["id"])
    hook = f"/api/v1/webhooks/provider/{shop.provider_id}"  # type: ignore[attr-defined]
    bodies = [
        json.dumps({"order": named, "status": "Canceled", "remains": "0"}).encode() for named in ("", "  ")
    ]
    bodies.append(b"[" * 100_000)  # signed but nested too deep to parse: it was a 500
    for body in bodies:
        refused = await shop.http.post(hook, content=body, headers=signed(secret, body))
        assert_error(refused, 400, "INVALID_ARGUMENT", "BAD_WEBHOOK")
    after = await get(shop, ann, order["id"])
    assert (after["status"], after["released"]) == ("ORDER_STATUS_IN_PROGRESS", "0.00")
    assert [r[1] for r in await runs_of(pool, order["id"])] == ["in_progress", "scheduled", "scheduled"]
    assert (await shop.verify()).ok


async def test_a_run_refused_after_the_order_was_canceled_is_not_sent_to_a_fallback(
    shop: Shop, demo_provider: DemoHandle, demo_provider_factory: DemoFactory, pool: Pool
) -> None:
    """The user cancels while run 1 is out; the provider then refuses it. The refused run went
    back to scheduled and out to the fallback provider, after the cancel."""
    seo = await offer_dripfeed(shop)
    backup_demo = await demo_provider_factory()
    backup = await add_provider(shop.http, shop.admin, backup_demo, name="Backup")
    await shop.with_fallback(seo, SEO, backup["id"])
    ann = await shop.user("ann@example.com", "10.00")
    order = await place(shop, ann, seo, "https://example.com/late", quantity=100, runs=3, interval=60)
    await demo_provider.fault("error_body", count=1, actions=["add"], delay_s=1.0)  # a slow refusal
    first = asyncio.create_task(shop.submit(order["id"]))
    async with asyncio.timeout(5):  # run 1 is out
        while True:
            if (await runs_of(pool, order["id"]))[0][1] == "submitting":
                break
            await asyncio.sleep(0.02)
    canceled = await shop.http.post(f"/api/v1/dashboard/orders/{order['id']}/cancel", json={}, headers=ann)
    assert canceled.status_code == 200, canceled.text
    await first
    assert await backup_demo.orders() == []
    assert await demo_provider.orders() == []
    assert [r[1] for r in await runs_of(pool, order["id"])] == ["canceled"] * 3
    done = await get(shop, ann, order["id"])
    assert (done["status"], done["released"]) == ("ORDER_STATUS_CANCELED", order["price"])
    assert await shop.balance(ann) == ("10.00", "0.00")
    assert (await shop.verify()).ok


async def test_a_lost_run_staff_find_not_placed_after_the_user_canceled_is_canceled(
    shop: Shop, demo_provider: DemoHandle, pool: Pool
) -> None:
    """Run 2 was out when the user canceled, and its answer was lost; staff then resolved it "not
    placed", and it went out after the cancel."""
    seo = await offer_dripfeed(shop)
    ann = await shop.user("ann@example.com", "10.00")
    order = await place(shop, ann, seo, "https://example.com/stop", quantity=100, runs=2, interval=60)
    await shop.submit(order["id"])  # run 1 goes out
    await make_due(pool, order["id"])
    await demo_provider.fault("http500", count=1, actions=["add"], delay_s=1.0, process=False)  # run 2: lost
    sending = asyncio.create_task(shop.submit(order["id"]))
    async with asyncio.timeout(5):
        while True:
            if [r[1] for r in await runs_of(pool, order["id"])] == ["in_progress", "submitting"]:
                break
            await asyncio.sleep(0.02)
    canceled = await shop.http.post(f"/api/v1/dashboard/orders/{order['id']}/cancel", json={}, headers=ann)
    assert canceled.status_code == 200, canceled.text
    await sending
    assert (await get(shop, ann, order["id"]))["status"] == "ORDER_STATUS_NEEDS_REVIEW"
    resolved = await shop.http.post(
        f"/api/v1/admin/orders/{order['id']}/resolve",
        json={"resolution": "not_placed", "reason": "not in the provider's panel"},
        headers=shop.admin,
    )
    assert resolved.status_code == 200, resolved.text
    await shop.submit(order["id"])  # the event the resolution published
    assert len(await demo_provider.orders()) == 1
    assert [r[1] for r in await runs_of(pool, order["id"])] == ["in_progress", "canceled"]
    done = await run_to_the_end(shop, ann, order["id"])  # run 1 still delivers
    price = Decimal(order["price"])
    assert (done["status"], Decimal(done["released"])) == ("ORDER_STATUS_PARTIAL", share(price, 100, 200))
    assert (await shop.verify()).ok


async def test_a_run_the_provider_calls_partial_without_remains_is_not_charged_in_full(
    shop: Shop, demo_provider: DemoHandle, pool: Pool
) -> None:
    """A run answered "Partial" with remains "Unknown" was ended with remains 0: the user paid the
    run in full for what the provider only partly delivered. It now waits (with a note for staff)
    until the provider says how much is left."""
    seo = await offer_dripfeed(shop)
    ann = await shop.user("ann@example.com", "10.00")
    order = await place(shop, ann, seo, "https://example.com/partial", quantity=150, runs=2, interval=60)
    price = Decimal(order["price"])
    await shop.submit(order["id"])  # run 1 out; run 2 in an hour

    async def upstream_partial() -> bool:
        return bool((await demo_provider.orders())[0]["status"] == "Partial")

    await eventually(upstream_partial, 20)
    await demo_provider.fault("unknown_remains", count=3, actions=["status"])
    for _ in range(3):
        await tick(shop)
    assert [r[1:] for r in await runs_of(pool, order["id"])] == [
        ("in_progress", 150, None),
        ("scheduled", 150, None),
    ]
    waiting = await get(shop, ann, order["id"])
    assert waiting["status"] == "ORDER_STATUS_IN_PROGRESS"
    assert "Partial without what remains" in (await shop.staff_order(order["id"]))["statusNote"]
    assert await shop.balance(ann) == (str(Decimal("10.00") - price), order["price"])  # still held

    done = await run_to_the_end(shop, ann, order["id"])  # the provider says it now
    assert done["status"] == "ORDER_STATUS_PARTIAL"
    runs = await runs_of(pool, order["id"])
    assert [r[1] for r in runs] == ["partial", "partial"]
    upstream = {str(o["order"]): int(o["remains"]) for o in await demo_provider.orders()}
    assert sum(r[3] or 0 for r in runs) == sum(upstream.values()) > 0
    assert Decimal(done["released"]) == share(price, sum(upstream.values()), 300)
    assert (await shop.verify()).ok


async def notes_of(pool: Pool, order_id: str) -> list[str]:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT note FROM order_events WHERE order_id = %s ORDER BY id", (int(order_id),)
        )
        return [r[0] for r in await cursor.fetchall()]


async def terms_of(pool: Pool, order_id: str) -> tuple[int | None, int | None, str, Decimal | None]:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT provider_id, provider_rate_micros, provider_currency, exchange_rate FROM orders WHERE id = %s",
            (int(order_id),),
        )
        row = await cursor.fetchone()
        assert row is not None
        return row[0], row[1], row[2], row[3]


async def test_a_run_is_not_sent_to_a_fallback_costing_more_than_its_share_of_the_price(
    shop: Shop, demo_provider: DemoHandle, demo_provider_factory: DemoFactory, pool: Pool
) -> None:
    """A refused run went to the fallback whatever it cost: a fallback charging 5.00 a 1000 took a
    run of 100 (0.50) priced at 0.39, losing money on every run. Like an order, the run now skips
    a fallback known to cost more than its share of the order's price."""
    backup_demo = await demo_provider_factory()
    assert (await backup_demo.control.put("/control/services/4", json={"rate": "5.00"})).status_code == 200
    backup = await add_provider(shop.http, shop.admin, backup_demo, name="Backup")
    await run_sync(shop.channel, backup["id"])  # smm knows what the fallback charges
    seo = await offer_dripfeed(shop)
    await shop.with_fallback(seo, SEO, backup["id"])
    ann = await shop.user("ann@example.com", "10.00")
    order = await place(shop, ann, seo, "https://example.com/dear", quantity=100, runs=3, interval=60)
    assert order["price"] == "1.17"  # 3.90 a 1000 x 300: 0.39 a run

    await demo_provider.fault("error_body", count=1, actions=["add"])  # run 1 refused by the primary
    sent = await shop.submit(order["id"])
    assert await backup_demo.orders() == []
    assert sent.status == opb.ORDER_STATUS_PENDING  # runs 2 and 3 are still to go
    assert await demo_provider.orders() == []
    assert await runs_of(pool, order["id"]) == [
        (1, "failed", 100, 100),
        (2, "scheduled", 100, None),
        (3, "scheduled", 100, None),
    ]
    notes = await notes_of(pool, order["id"])
    assert (
        f"run 1/3: provider {backup['id']} skipped: it would cost 0.50, more than the run's price 0.39"
        in notes
    )
    assert "run 1/3 failed: no provider accepted the run" in notes
    assert await shop.balance(ann) == ("8.83", "1.17")

    done = await run_to_the_end(shop, ann, order["id"])  # runs 2 and 3 at the primary
    assert (done["status"], done["charged"], done["released"]) == ("ORDER_STATUS_PARTIAL", "0.78", "0.39")
    assert len(await demo_provider.orders()) == 2
    assert await backup_demo.orders() == []
    primary = int(shop.provider_id)  # type: ignore[attr-defined]
    assert await terms_of(pool, order["id"]) == (primary, 3_000_000, "USD", Decimal(1))  # as it was priced
    assert await shop.balance(ann) == ("9.22", "0.00")
    assert (await shop.verify()).ok


async def test_a_run_a_cheaper_fallback_takes_records_that_fallback_s_terms_on_the_order(
    shop: Shop, demo_provider: DemoHandle, demo_provider_factory: DemoFactory, pool: Pool
) -> None:
    """The first run's provider becomes the order's, and the order kept the primary's rate,
    currency and exchange rate when a fallback took that run: staff read the wrong cost."""
    euro, backup = await euro_provider(shop.http, shop.admin, demo_provider_factory, "4", "0.10")
    await run_sync(shop.channel, backup["id"])  # 0.20 a 1000: a run of 100 costs 0.02, under its 0.39
    seo = await offer_dripfeed(shop)
    await shop.with_fallback(seo, SEO, backup["id"])
    ann = await shop.user("ann@example.com", "10.00")
    order = await place(shop, ann, seo, "https://example.com/cheap", quantity=100, runs=3, interval=60)
    assert order["price"] == "1.17"

    await demo_provider.fault("error_body", count=1, actions=["add"])
    sent = await shop.submit(order["id"])
    assert sent.status == opb.ORDER_STATUS_IN_PROGRESS
    [taken] = await euro.orders()
    assert await demo_provider.orders() == []
    assert f"run 1/3 sent to provider {backup['id']} (order {taken['order']})" in await notes_of(
        pool, order["id"]
    )
    assert await terms_of(pool, order["id"]) == (int(backup["id"]), 100_000, "EUR", Decimal(2))

    done = await run_to_the_end(shop, ann, order["id"])  # runs 2 and 3 at the primary
    assert (done["status"], done["charged"], done["released"]) == ("ORDER_STATUS_COMPLETED", "1.17", "0.00")
    assert len(await demo_provider.orders()) == 2
    assert await shop.balance(ann) == ("8.83", "0.00")
    assert (await shop.verify()).ok


async def test_a_disabled_providers_runs_already_out_still_finish(shop: Shop, pool: Pool) -> None:
    """Runs already at a provider staff disable are followed to their end; the runs not yet sent
    are not sent (the provider takes nothing new) and their share goes back to the customer."""
    seo = await offer_dripfeed(shop)
    ann = await shop.user("ann@example.com", "10.00")
    order = await place(shop, ann, seo, "https://example.com/off", quantity=100, runs=2, interval=30)
    price = Decimal(order["price"])
    await shop.submit(order["id"])  # run 1 goes out
    provider_id = shop.provider_id  # type: ignore[attr-defined]
    disabled = await shop.http.patch(
        f"/api/v1/admin/providers/{provider_id}", json={"enabled": False}, headers=shop.admin
    )
    assert disabled.status_code == 200, disabled.text
    done = await run_to_the_end(shop, ann, order["id"])
    assert [r[:2] for r in await runs_of(pool, order["id"])] == [(1, "completed"), (2, "failed")]
    assert done["status"] == "ORDER_STATUS_PARTIAL"
    assert (Decimal(done["charged"]), Decimal(done["released"])) == (price / 2, price / 2)
    assert await shop.balance(ann) == (str(Decimal("10.00") - price / 2), "0.00")
    assert (await shop.verify()).ok


async def test_a_fallback_provider_with_a_run_out_is_not_deleted_until_the_run_ends(
    shop: Shop, demo_provider: DemoHandle, demo_provider_factory: DemoFactory, pool: Pool
) -> None:
    """Deleting a provider waited for the orders whose provider it is; a run smm sent to it as a
    fallback (the order's provider is the primary) was not counted, so the run was never asked
    about again and its order never ended, its hold held for ever."""
    euro, backup = await euro_provider(shop.http, shop.admin, demo_provider_factory, "4", "0.10")
    await run_sync(shop.channel, backup["id"])
    seo = await offer_dripfeed(shop)
    await shop.with_fallback(seo, SEO, backup["id"])
    ann = await shop.user("ann@example.com", "10.00")
    order = await place(shop, ann, seo, "https://example.com/fallen", quantity=100, runs=2, interval=60)
    await shop.submit(order["id"])  # run 1 at the primary, which is the order's provider
    await demo_provider.fault("error_body", count=1, actions=["add"])
    await make_due(pool, order["id"])
    await tick(shop)  # run 2 refused by the primary, taken by the fallback
    # The same tick polls run 1, which the demo may have finished by then on a slow machine.
    first, second = [r[:2] for r in await runs_of(pool, order["id"])]
    assert first in ((1, "in_progress"), (1, "completed"))
    assert second == (2, "in_progress")
    assert len(await euro.orders()) == 1

    disabled = await shop.http.patch(
        f"/api/v1/admin/providers/{backup['id']}", json={"enabled": False}, headers=shop.admin
    )
    assert disabled.status_code == 200, disabled.text
    refused = await shop.http.delete(f"/api/v1/admin/providers/{backup['id']}", headers=shop.admin)
    assert_error(refused, 400, "FAILED_PRECONDITION", "PROVIDER_HAS_OPEN_ORDERS")

    done = await run_to_the_end(shop, ann, order["id"])
    assert done["status"] == "ORDER_STATUS_COMPLETED"
    deleted = await shop.http.delete(f"/api/v1/admin/providers/{backup['id']}", headers=shop.admin)
    assert deleted.json()["status"] == "deleted"
    assert (await shop.verify()).ok


async def test_a_drip_feed_in_review_can_be_canceled_and_its_runs_not_sent_stop(
    shop: Shop, demo_provider: DemoHandle, pool: Pool
) -> None:
    """A run's answer was lost (the order in review) and the customer cancels: "Order cannot be
    cancelled" (the service's cancel is the provider's, which a drip-feed smm sends never uses), and
    the runs not sent went out later. The runs not sent stop now; the run in review is staff's."""
    seo = await offer_dripfeed(shop)  # the demo's SEO service takes no cancel upstream
    ann = await shop.user("ann@example.com", "10.00")
    order = await place(shop, ann, seo, "https://example.com/review", quantity=100, runs=3, interval=1)
    await shop.submit(order["id"])  # run 1 goes out
    async with pool.connection() as conn:
        await conn.execute("UPDATE providers SET timeout_ms = 300, update_time = now()")
        await conn.execute(  # run 2 is due, run 3 not yet
            "UPDATE order_runs SET due_time = now() WHERE order_id = %s AND run_no = 2", (int(order["id"]),)
        )
    await demo_provider.fault("timeout", count=1, actions=["add"], process=False)  # run 2: answer lost
    await shop.submit(order["id"])
    assert [r[1] for r in await runs_of(pool, order["id"])] == ["in_progress", "needs_review", "scheduled"]
    canceled = await shop.http.post(f"/api/v1/dashboard/orders/{order['id']}/cancel", json={}, headers=ann)
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "ORDER_STATUS_NEEDS_REVIEW"
    assert [r[1] for r in await runs_of(pool, order["id"])] == ["in_progress", "needs_review", "canceled"]
    resolved = await shop.http.post(
        f"/api/v1/admin/orders/{order['id']}/resolve",
        json={"resolution": "not_placed", "reason": "not in the provider's panel"},
        headers=shop.admin,
    )
    assert resolved.status_code == 200, resolved.text
    await shop.submit(order["id"])  # the event the resolution published: run 2 is not sent now
    assert [r[1] for r in await runs_of(pool, order["id"])] == ["in_progress", "canceled", "canceled"]
    done = await run_to_the_end(shop, ann, order["id"])
    price = Decimal(order["price"])
    assert (done["status"], Decimal(done["released"])) == ("ORDER_STATUS_PARTIAL", share(price, 200, 300))
    assert len(await demo_provider.orders()) == 1
    assert (await shop.verify()).ok
