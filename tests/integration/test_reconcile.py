"""Every fault kind of the demo provider on `add`: never a double order, and every order whose
answer was lost is found upstream again (automatically when the evidence is unambiguous, else by
staff from the candidates smm lists)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from smm.v1 import orders_service_pb2 as opb

from server.common.db import Pool
from server.orders.reconcile import charge_matches, id_window
from tests.fix_demo import DemoFactory, DemoHandle
from tests.fix_grpc import system_metadata
from tests.fix_shop import Shop
from tests.integration.test_providers import add_provider

pytestmark = pytest.mark.usefixtures("shop")
LOST = ("timeout", "http500", "malformed_json", "html")


async def place(shop: Shop, user: dict[str, str], link: str) -> dict[str, Any]:
    placed = await shop.order(user, serviceId=shop.service_id("2"), link=link, quantity=1000)
    assert placed.status_code == 200, placed.text
    order: dict[str, Any] = placed.json()
    return order


async def short_timeouts(pool: Pool) -> None:
    async with pool.connection() as conn:  # the "timeout" fault holds its reply longer than this
        await conn.execute("UPDATE providers SET timeout_ms = 300, update_time = now()")


async def settled_in_review(pool: Pool, order_id: str) -> None:
    """The provider has had time to show the order (the automatic pass waits two minutes)."""
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE orders SET update_time = now() - interval '3 minutes', reconcile_time = NULL WHERE id = %s",
            (int(order_id),),
        )


async def order_by_hand(demo: DemoHandle, *, quantity: int) -> None:
    """Someone orders service 2 (likes) for x.com/hand at the provider with the panel's key: an order of
    ours that smm does not know."""
    async with httpx.AsyncClient() as client:
        by_hand = await client.post(
            demo.api_url,
            data={"key": demo.api_key, "action": "add", "service": "2", "link": "https://x.com/hand",
                  "quantity": str(quantity)},
        )  # fmt: skip
    assert "order" in by_hand.json(), by_hand.text


async def tick(shop: Shop) -> None:
    await shop.orders.PollOrders(opb.PollOrdersRequest(), metadata=system_metadata())


async def status(shop: Shop, user: dict[str, str], order_id: str) -> str:
    order = (await shop.http.get(f"/api/v1/dashboard/orders/{order_id}", headers=user)).json()
    return str(order["status"])


@pytest.mark.parametrize("kind", LOST)
async def test_a_lost_answer_is_found_upstream_and_never_ordered_twice(
    shop: Shop, demo_provider: DemoHandle, pool: Pool, kind: str
) -> None:
    ann = await shop.user("ann@example.com", "5.00")
    await short_timeouts(pool)
    before = await place(shop, ann, "https://x.com/before")
    await shop.submit(before["id"])
    await demo_provider.fault(kind, count=1, actions=["add"])  # processed upstream, answer unusable
    lost = await place(shop, ann, "https://x.com/lost")
    reviewed = await shop.submit(lost["id"])
    assert reviewed.status == opb.ORDER_STATUS_NEEDS_REVIEW
    assert (await shop.submit(lost["id"])).status == opb.ORDER_STATUS_NEEDS_REVIEW  # a redelivery
    after = await place(shop, ann, "https://x.com/after")
    await shop.submit(after["id"])
    assert len(await demo_provider.orders()) == 3

    await tick(shop)  # too early: a provider may take a moment to show a new order
    assert await status(shop, ann, lost["id"]) == "ORDER_STATUS_NEEDS_REVIEW"
    await settled_in_review(pool, lost["id"])
    await tick(shop)
    order = (await shop.http.get(f"/api/v1/admin/orders/{lost['id']}", headers=shop.admin)).json()
    assert order["status"] in {"ORDER_STATUS_IN_PROGRESS", "ORDER_STATUS_COMPLETED"}, order
    upstream = {str(o["order"]): o["link"] for o in await demo_provider.orders()}
    assert upstream[order["upstreamOrderId"]] == "https://x.com/lost"
    assert any("reconciled automatically" in e["note"] for e in order["timeline"])
    done = await shop.settle(lost["id"], ann)
    assert done["status"] == "ORDER_STATUS_COMPLETED"
    assert len(await demo_provider.orders()) == 3  # never placed twice
    assert (await shop.verify()).ok


async def test_latency_is_only_slow_and_an_error_body_is_a_refusal(
    shop: Shop, demo_provider: DemoHandle, pool: Pool
) -> None:
    ann = await shop.user("ann@example.com", "5.00")
    await demo_provider.fault("latency", count=1, actions=["add"], delay_s=0.1)
    slow = await place(shop, ann, "https://x.com/slow")
    assert (await shop.submit(slow["id"])).status == opb.ORDER_STATUS_IN_PROGRESS
    await demo_provider.fault("error_body", count=1, actions=["add"])
    refused = await place(shop, ann, "https://x.com/refused")
    failed = await shop.submit(refused["id"])
    assert failed.status == opb.ORDER_STATUS_FAILED
    assert failed.released == refused["price"]
    assert len(await demo_provider.orders()) == 1
    assert (await shop.verify()).ok


async def test_staff_see_the_candidates_when_the_evidence_is_not_enough(
    shop: Shop, demo_provider: DemoHandle, pool: Pool
) -> None:
    ann = await shop.user("ann@example.com", "5.00")
    await short_timeouts(pool)
    before = await place(shop, ann, "https://x.com/before")
    await shop.submit(before["id"])
    await demo_provider.fault("timeout", count=1, actions=["add"])
    lost = await place(shop, ann, "https://x.com/lost")
    await shop.submit(lost["id"])
    # Someone also ordered by hand at the provider with the panel's key: two unknown orders of ours.
    await order_by_hand(demo_provider, quantity=50)
    await settled_in_review(pool, lost["id"])
    await tick(shop)  # no later order of smm's yet: the window is open, nothing is decided
    assert await status(shop, ann, lost["id"]) == "ORDER_STATUS_NEEDS_REVIEW"

    listed = await shop.http.get(f"/api/v1/admin/orders/{lost['id']}/upstream-candidates", headers=shop.admin)
    assert listed.status_code == 200, listed.text
    search = listed.json()
    assert search.get("windowClosed", False) is False
    assert search["note"] == "no later order yet"
    by_id = {c["upstreamOrderId"]: c for c in search["candidates"]}
    upstream = {str(o["order"]): o["link"] for o in await demo_provider.orders()}
    [lost_id] = [i for i, link in upstream.items() if link == "https://x.com/lost"]
    [hand_id] = [i for i, link in upstream.items() if link == "https://x.com/hand"]
    assert set(by_id) == {lost_id, hand_id}
    assert by_id[lost_id]["chargeMatches"] is True
    assert by_id[hand_id].get("chargeMatches", False) is False  # 50 likes cost less than 1000

    after = await place(shop, ann, "https://x.com/after")
    await shop.submit(after["id"])
    await settled_in_review(pool, lost["id"])
    await tick(shop)  # closed now, but two unknown orders of ours lie in it: staff decide
    assert await status(shop, ann, lost["id"]) == "ORDER_STATUS_NEEDS_REVIEW"
    resolved = await shop.http.post(
        f"/api/v1/admin/orders/{lost['id']}/resolve",
        json={"resolution": "found", "upstreamOrderId": lost_id, "reason": "the candidate with our charge"},
        headers=shop.admin,
    )
    assert resolved.status_code == 200, resolved.text
    assert (await shop.settle(lost["id"], ann))["status"] == "ORDER_STATUS_COMPLETED"
    assert (await shop.verify()).ok

    placed = await place(shop, ann, "https://x.com/fine")
    not_in_review = await shop.http.get(
        f"/api/v1/admin/orders/{placed['id']}/upstream-candidates", headers=shop.admin
    )
    assert not_in_review.status_code == 400
    assert not_in_review.json()["error"]["details"][0]["reason"] == "ORDER_NOT_IN_REVIEW"


def test_the_id_window_and_the_charge_rule() -> None:
    assert id_window(10, 14) == ([11, 12, 13], True, "")
    assert id_window(10, 200) == ([], False, "too many orders at the provider between #10 and #200")
    assert id_window(None, None)[0] == []
    ids, closed, note = id_window(10, None)
    assert (ids[0], ids[-1], closed, note) == (11, 110, False, "no later order yet")
    ids, closed, note = id_window(None, 5)
    assert (ids, closed, note) == ([1, 2, 3, 4], False, "no earlier order")
    assert charge_matches(1_000_000, 1_009_000)
    assert not charge_matches(1_000_000, 1_011_000)
    assert charge_matches(50, 120)  # tiny amounts: within 0.0001
    assert not charge_matches(None, 100)
    assert not charge_matches(100, None)


async def test_an_order_found_at_a_fallback_provider_is_followed_there(
    shop: Shop, demo_provider: DemoHandle, demo_provider_factory: DemoFactory, pool: Pool
) -> None:
    """The order row names the primary until an answer arrives; "found" once kept it, so the order
    was polled at the primary under the fallback's id, where another order (here a canceled one)
    had that number, and the user was refunded for what the fallback delivered."""
    backup_demo = await demo_provider_factory()
    backup = await add_provider(shop.http, shop.admin, backup_demo, name="Backup")
    likes = shop.service_id("2")
    await shop.with_fallback(likes, "2", backup["id"])
    async with pool.connection() as conn:
        await conn.execute("UPDATE providers SET timeout_ms = 300, update_time = now()")
    bob = await shop.user("bob@example.com", "5.00")  # #1 at the primary, ending canceled
    earlier = (await shop.order(bob, serviceId=likes, link="https://x.com/cancel-me", quantity=1000)).json()
    await shop.submit(earlier["id"])
    ann = await shop.user("ann@example.com", "5.00")
    await demo_provider.fault("error_body", count=1, actions=["add"])  # the primary refuses
    await backup_demo.fault("timeout", count=1, actions=["add"])  # the fallback takes it, answer lost
    order = (await shop.order(ann, serviceId=likes, link="https://x.com/lost", quantity=1000)).json()
    assert (await shop.submit(order["id"])).status == opb.ORDER_STATUS_NEEDS_REVIEW
    [lost_upstream] = await backup_demo.orders()  # #1 at the fallback too
    resolved = await shop.http.post(
        f"/api/v1/admin/orders/{order['id']}/resolve",
        json={"resolution": "found", "upstreamOrderId": str(lost_upstream["order"]), "reason": "seen"},
        headers=shop.admin,
    )
    assert resolved.status_code == 200, resolved.text
    staff_view = (await shop.http.get(f"/api/v1/admin/orders/{order['id']}", headers=shop.admin)).json()
    assert (staff_view["providerId"], staff_view["upstreamOrderId"]) == (
        backup["id"],
        str(lost_upstream["order"]),
    )
    done = await shop.settle(order["id"], ann)
    assert (done["status"], done["charged"], done["released"]) == ("ORDER_STATUS_COMPLETED", "0.325", "0.00")
    assert (await shop.verify()).ok


async def test_a_disabled_providers_lost_order_is_still_found(
    shop: Shop, demo_provider: DemoHandle, pool: Pool
) -> None:
    """Disabling the provider of an order in review left it there: the look-up was refused ("the
    provider is disabled"), and the customer's money stayed held until staff enabled it again."""
    ann = await shop.user("ann@example.com", "5.00")
    await short_timeouts(pool)
    before = await place(shop, ann, "https://x.com/before")
    await shop.submit(before["id"])
    await demo_provider.fault("timeout", count=1, actions=["add"])  # processed upstream, answer lost
    lost = await place(shop, ann, "https://x.com/lost")
    assert (await shop.submit(lost["id"])).status == opb.ORDER_STATUS_NEEDS_REVIEW
    after = await place(shop, ann, "https://x.com/after")
    await shop.submit(after["id"])
    disabled = await shop.http.patch(
        f"/api/v1/admin/providers/{shop.provider_id}",  # type: ignore[attr-defined]
        json={"enabled": False},
        headers=shop.admin,
    )
    assert (disabled.status_code, disabled.json()["status"]) == (200, "disabled")

    await settled_in_review(pool, lost["id"])
    await tick(shop)
    order = (await shop.http.get(f"/api/v1/admin/orders/{lost['id']}", headers=shop.admin)).json()
    assert any("reconciled automatically" in e["note"] for e in order["timeline"]), order["timeline"]
    done = await shop.settle(lost["id"], ann)
    assert (done["status"], done["charged"]) == ("ORDER_STATUS_COMPLETED", "0.325")
    assert len(await demo_provider.orders()) == 3  # never placed twice
    assert (await shop.verify()).ok


async def test_an_order_in_the_window_whose_status_cannot_be_read_leaves_the_choice_to_staff(
    shop: Shop, demo_provider: DemoHandle, pool: Pool
) -> None:
    """The automatic pass counted only the ids the provider's answer could be read for. With the lost
    order's own status in a word smm does not know and another unknown order of ours in the window
    (same service and quantity, so the same charge), "the only unknown order" was the other one: the
    lost order was resolved to an order that is not its own."""
    ann = await shop.user("ann@example.com", "5.00")
    await short_timeouts(pool)
    before = await place(shop, ann, "https://x.com/before")
    await shop.submit(before["id"])
    await demo_provider.fault("timeout", count=1, actions=["add"])
    lost = await place(shop, ann, "https://x.com/lost")
    await shop.submit(lost["id"])
    await order_by_hand(demo_provider, quantity=1000)  # the same charge as the lost order
    after = await place(shop, ann, "https://x.com/after")
    await shop.submit(after["id"])
    upstream = {o["link"]: str(o["order"]) for o in await demo_provider.orders()}
    await demo_provider.fault(
        "status_word",
        count=20,
        actions=["status"],
        message="On hold",
        order_ids=[upstream["https://x.com/lost"]],
    )
    await settled_in_review(pool, lost["id"])
    await tick(shop)
    assert await status(shop, ann, lost["id"]) == "ORDER_STATUS_NEEDS_REVIEW"
    listed = await shop.http.get(f"/api/v1/admin/orders/{lost['id']}/upstream-candidates", headers=shop.admin)
    search = listed.json()
    assert [c["upstreamOrderId"] for c in search["candidates"]] == [upstream["https://x.com/hand"]]
    assert (
        search["note"]
        == f"the provider's answer for 1 order in the window could not be read: {upstream['https://x.com/lost']}"
    )
    await demo_provider.clear_faults()
    assert (await shop.verify()).ok
