"""Subscriptions end to end: the provider's subscription words, the money of their end, alerts.

The demo provider here moves an order one step an hour, so a subscription stays "Pending" upstream
(everything still to deliver) and each test says what the provider answers with a fault.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from smm.v1 import orders_service_pb2 as opb
from smm.v1 import system_service_pb2 as spb
from smm.v1 import system_service_pb2_grpc as spb_grpc

from server.common.db import Pool
from tests.fix_demo import TEST_CONFIG, DemoHandle, start_demo
from tests.fix_grpc import system_metadata
from tests.fix_shop import Shop, ready_to_poll, stuck_alerts
from tests.integration.test_reseller import call, reseller_key


@pytest.fixture
async def demo_provider() -> AsyncIterator[DemoHandle]:
    """The demo provider with hour-long steps: what it answers is what a fault says."""
    handle = await start_demo(replace(TEST_CONFIG, step_s=3600))
    yield handle
    await handle.stop()


async def subscribe(shop: Shop, user: dict[str, str], **extra: Any) -> dict[str, Any]:
    placed = await shop.order(
        user,
        serviceId=shop.service_id("17"),
        username="steady.account",
        min=50,
        max=100,
        posts=3,
        delay=30,
        **extra,
    )
    assert placed.status_code == 200, placed.text
    order: dict[str, Any] = placed.json()
    await shop.submit(order["id"])
    return order


async def poll(shop: Shop, order_id: str, user: dict[str, str]) -> dict[str, Any]:
    await ready_to_poll(shop.pool)
    await shop.orders.PollOrders(opb.PollOrdersRequest(), metadata=system_metadata())
    order: dict[str, Any] = (await shop.http.get(f"/api/v1/dashboard/orders/{order_id}", headers=user)).json()
    return order


async def expires_undelivered(shop: Shop, placed: dict[str, Any], user: dict[str, str]) -> None:
    """The next poll ends the subscription expired with nothing delivered: all of it released."""
    ended = await poll(shop, placed["id"], user)
    assert (ended["status"], ended["charged"], ended["released"]) == (
        "ORDER_STATUS_EXPIRED",
        "0.00",
        placed["price"],
    )
    assert await shop.balance(user) == ("100.00", "0.00")
    assert (await shop.verify()).ok


async def test_a_subscription_the_provider_calls_expired_releases_what_it_did_not_deliver(
    shop: Shop, demo_provider: DemoHandle
) -> None:
    """ "Expired" was read as "Completed": the whole hold (max x posts) was charged even though the
    provider said nothing of it had been delivered."""
    ann = await shop.user("ann@example.com", "100.00")
    placed = await subscribe(shop, ann)
    assert (await poll(shop, placed["id"], ann))["status"] == "ORDER_STATUS_ACTIVE"
    await demo_provider.fault("status_word", count=1, actions=["status"], message="Expired")
    # The demo still has all 100 x 3 to deliver: remains 300 of 300.
    await expires_undelivered(shop, placed, ann)


async def test_a_subscription_the_provider_pauses_is_paused_and_resumes(
    shop: Shop, demo_provider: DemoHandle
) -> None:
    """ "Paused" was read as "In progress": smm showed a paused subscription active, and one staff
    had set paused never went back to active whatever the provider said."""
    ann = await shop.user("ann@example.com", "100.00")
    placed = await subscribe(shop, ann)
    assert (await poll(shop, placed["id"], ann))["status"] == "ORDER_STATUS_ACTIVE"
    await demo_provider.fault("status_word", count=1, actions=["status"], message="Paused")
    assert (await poll(shop, placed["id"], ann))["status"] == "ORDER_STATUS_PAUSED"
    await demo_provider.fault("status_word", count=1, actions=["status"], message="Active")
    assert (await poll(shop, placed["id"], ann))["status"] == "ORDER_STATUS_ACTIVE"
    await demo_provider.fault("status_word", count=1, actions=["status"], message="Paused")
    assert (await poll(shop, placed["id"], ann))["status"] == "ORDER_STATUS_PAUSED"
    # The standard word for a running order resumes it too.
    assert (await poll(shop, placed["id"], ann))["status"] == "ORDER_STATUS_ACTIVE"
    assert await shop.balance(ann) == (str(Decimal("100.00") - Decimal(placed["price"])), placed["price"])


async def test_an_active_subscription_is_stuck_only_once_its_expiry_is_a_day_past(
    shop: Shop, pool: Pool
) -> None:
    """Subscriptions run for days by design: every active one was reported stuck a day after it
    was placed, and staff learnt to ignore the alert, including for one past its expiry."""
    ann = await shop.user("ann@example.com", "100.00")
    in_three_days = f"{datetime.now(UTC).date() + timedelta(days=3):%d/%m/%Y}"
    expiring = await subscribe(shop, ann, expiry=in_three_days)
    open_ended = await subscribe(shop, ann)
    for placed in (expiring, open_ended):
        assert (await poll(shop, placed["id"], ann))["status"] == "ORDER_STATUS_ACTIVE"
    system = spb_grpc.SystemServiceStub(shop.channel)
    period = 30 * 60_000_000

    async def aged_and_ticked(hours: int, expiry_days: int | None = None) -> None:
        nonlocal period
        async with pool.connection() as conn:
            await conn.execute(
                "UPDATE orders SET create_time = now() - make_interval(hours => %s) WHERE id = ANY(%s)",
                (hours, [int(expiring["id"]), int(open_ended["id"])]),
            )
            if expiry_days is not None:
                expiry = f"{datetime.now(UTC).date() + timedelta(days=expiry_days):%d/%m/%Y}"
                await conn.execute(
                    "UPDATE orders SET upstream_params = jsonb_set(upstream_params, '{expiry}', to_jsonb(%s::text))"
                    " WHERE id = %s",
                    (expiry, int(expiring["id"])),
                )
        period += 30
        await system.RunJob(
            spb.RunJobRequest(job="order-poll", period_start=period), metadata=system_metadata()
        )

    await aged_and_ticked(25)  # a day old, running, expiring in three days
    assert await stuck_alerts(pool) == []
    await aged_and_ticked(24 * 30)  # a month old, still running upstream
    assert await stuck_alerts(pool) == []
    await aged_and_ticked(24 * 30, expiry_days=-1)  # its expiry day ended less than a day ago
    assert await stuck_alerts(pool) == []
    await aged_and_ticked(24 * 30, expiry_days=-2)  # more than a day past its expiry: stuck
    assert await stuck_alerts(pool) == [[int(expiring["id"])]]


async def test_a_subscription_that_never_started_upstream_is_still_stuck(shop: Shop, pool: Pool) -> None:
    """Not an active one: the provider took it but never said it runs."""
    ann = await shop.user("ann@example.com", "100.00")
    placed = await subscribe(shop, ann)  # in progress: not polled yet
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE orders SET create_time = now() - interval '25 hours' WHERE id = %s", (int(placed["id"]),)
        )
    system = spb_grpc.SystemServiceStub(shop.channel)
    await system.RunJob(
        spb.RunJobRequest(job="order-poll", period_start=30 * 60_000_000 + 30), metadata=system_metadata()
    )
    assert await stuck_alerts(pool) == [[int(placed["id"])]]


async def test_a_reseller_sees_an_expired_subscription_with_a_release_as_partial(
    shop: Shop, demo_provider: DemoHandle
) -> None:
    """An expired subscription whose undelivered share was released was answered "Completed" with
    a charge below the price: a reseller's script takes "Completed" as delivered in full and never
    refunds its own customer the share smm gave back. "Partial" is the word for that."""
    key, ann = await reseller_key(shop, "ann@example.com", "100.00")
    added = await call(
        shop.http, key, action="add", service=shop.service_id("17"), username="steady.account",
        min=50, max=100, posts=3, delay=30,
    )  # fmt: skip
    order_id = str(added["order"])
    await shop.submit(order_id)
    assert (await poll(shop, order_id, ann))["status"] == "ORDER_STATUS_ACTIVE"
    running = await call(shop.http, key, action="status", order=order_id)
    assert running["status"] == "In progress"
    # The provider's "Partial" (as its "Expired") ends a subscription expired, the rest released.
    await demo_provider.fault("status_word", count=1, actions=["status"], message="Partial")
    ended = await poll(shop, order_id, ann)
    assert ended["status"] == "ORDER_STATUS_EXPIRED"
    answered = await call(shop.http, key, action="status", order=order_id)
    assert (answered["status"], Decimal(answered["charge"]), answered["remains"]) == ("Partial", 0, "300")


async def test_a_running_subscription_the_provider_no_longer_answers_for_is_stuck(
    shop: Shop, pool: Pool
) -> None:
    """Not reported while the provider says it runs; reported once it has not for the whole period
    (here: the provider does not know the order any more, which only leaves a note)."""
    ann = await shop.user("ann@example.com", "100.00")
    lost, running = await subscribe(shop, ann), await subscribe(shop, ann)
    for placed in (lost, running):
        assert (await poll(shop, placed["id"], ann))["status"] == "ORDER_STATUS_ACTIVE"
    ids = [int(lost["id"]), int(running["id"])]
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE orders SET create_time = now() - interval '30 hours', update_time = now() - interval '25 hours'"
            " WHERE id = ANY(%s)",
            (ids,),
        )
        await conn.execute("UPDATE orders SET upstream_order_id = '999999' WHERE id = %s", (ids[0],))
    for placed in (lost, running):
        assert (await poll(shop, placed["id"], ann))["status"] == "ORDER_STATUS_ACTIVE"
    assert (await shop.staff_order(lost["id"]))["statusNote"].startswith(
        "the provider does not know the order"
    )
    system = spb_grpc.SystemServiceStub(shop.channel)
    await system.RunJob(
        spb.RunJobRequest(job="order-poll", period_start=30 * 60_000_000 + 30), metadata=system_metadata()
    )
    assert await stuck_alerts(pool) == [[ids[0]]]


async def test_a_subscription_the_provider_calls_processing_still_ends_and_releases(
    shop: Shop, demo_provider: DemoHandle
) -> None:
    """ "Processing" moved a fresh subscription to processing, from where the state machine has no
    move to active, paused or expired: every later answer was ignored and the hold never left."""
    ann = await shop.user("ann@example.com", "100.00")
    placed = await subscribe(shop, ann)
    await demo_provider.fault("status_word", count=1, actions=["status"], message="Processing")
    assert (await poll(shop, placed["id"], ann))["status"] == "ORDER_STATUS_ACTIVE"  # it runs
    await demo_provider.fault("status_word", count=1, actions=["status"], message="Expired")
    await expires_undelivered(shop, placed, ann)


async def test_staff_expiring_a_subscription_must_say_what_was_not_delivered(
    shop: Shop, demo_provider: DemoHandle
) -> None:
    """Only Partial required ``remains``: staff setting Expired without it (0 on the wire) charged
    the whole hold, max x posts, whatever the provider had delivered."""
    ann = await shop.user("ann@example.com", "100.00")
    placed = await subscribe(shop, ann)
    assert (await poll(shop, placed["id"], ann))["status"] == "ORDER_STATUS_ACTIVE"
    route = f"/api/v1/admin/orders/{placed['id']}/status"
    unsaid = await shop.http.post(
        route, json={"status": "ORDER_STATUS_EXPIRED", "reason": "r"}, headers=shop.admin
    )
    assert unsaid.status_code == 400, unsaid.text
    assert unsaid.json()["error"]["details"][0]["metadata"]["fields"] == "remains"
    said = await shop.http.post(
        route,
        json={"status": "ORDER_STATUS_EXPIRED", "remains": "100", "reason": "the provider's panel: 100 left"},
        headers=shop.admin,
    )
    assert said.status_code == 200, said.text
    price = Decimal(placed["price"])  # for 100 x 3: a third was not delivered
    assert (Decimal(said.json()["released"]), Decimal(said.json()["charged"])) == (
        price / 3,
        price - price / 3,
    )
    assert (await shop.verify()).ok


async def test_a_subscription_stays_one_when_its_service_changes_type(
    shop: Shop, demo_provider: DemoHandle
) -> None:
    """An order read its kind from its service's type as it is now: once staff (or a sync, which
    takes the provider's type) changed the service, a running subscription was no longer one. The
    provider's "Paused" was ignored (in progress is no move from active), its "Expired" read as
    "Completed" charged the whole hold with nothing delivered, and a staff partial end released
    the price over one unit instead of max x posts."""
    ann = await shop.user("ann@example.com", "100.00")
    expiring, paused = await subscribe(shop, ann), await subscribe(shop, ann)
    for placed in (expiring, paused):
        assert (await poll(shop, placed["id"], ann))["status"] == "ORDER_STATUS_ACTIVE"
    service = shop.service_id("17")
    edited = await shop.http.patch(
        f"/api/v1/admin/services/{service}", json={"type": "SERVICE_TYPE_DEFAULT"}, headers=shop.admin
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["type"] == "SERVICE_TYPE_DEFAULT"
    await demo_provider.fault("status_word", count=1, actions=["status"], message="Paused")
    assert (await poll(shop, paused["id"], ann))["status"] == "ORDER_STATUS_PAUSED"
    staff_ended = await shop.http.post(
        f"/api/v1/admin/orders/{paused['id']}/status",
        json={"status": "ORDER_STATUS_EXPIRED", "remains": "100", "reason": "the provider's panel"},
        headers=shop.admin,
    )
    assert staff_ended.status_code == 200, staff_ended.text
    price = Decimal(paused["price"])  # 100 of max 100 x 3 posts not delivered: a third
    assert Decimal(staff_ended.json()["released"]) == price / 3
    await demo_provider.fault("status_word", count=1, actions=["status"], message="Expired")
    ended = await poll(shop, expiring["id"], ann)  # nothing of it delivered: all of it released
    assert (ended["status"], ended["charged"], ended["released"]) == (
        "ORDER_STATUS_EXPIRED",
        "0.00",
        expiring["price"],
    )
    assert await shop.balance(ann) == (str(Decimal("100.00") - price + price / 3), "0.00")
    assert (await shop.verify()).ok
