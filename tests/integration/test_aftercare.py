"""Customer cancels end to end, with money, against a demo provider whose orders stay Pending
upstream for a minute: a cancel always finds them running there, so its outcome is the cancel's
alone, not a race with the order finishing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from server.common.db import Pool
from server.orders.aftercare import REVIEW_REFUSAL
from tests.fix_demo import TEST_CONFIG, DemoHandle, start_demo
from tests.fix_shop import Shop
from tests.integration.test_edge_http import assert_error
from tests.integration.test_reseller import call, reseller_key

pytestmark = pytest.mark.integration


@pytest.fixture
async def demo_provider() -> AsyncIterator[DemoHandle]:
    """The demo provider of ``shop`` here: its orders take a minute per step."""
    handle = await start_demo(replace(TEST_CONFIG, step_s=60.0))
    yield handle
    await handle.stop()


async def _circuit(pool: Pool, phase: str) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE provider_health SET circuit_phase = %s, circuit_failures = 0,"
            " circuit_opened_time = CASE WHEN %s = 'open' THEN now() END",
            (phase, phase),
        )


async def test_a_cancel_that_never_left_smm_is_not_taken_as_requested(
    shop: Shop, demo_provider: DemoHandle, pool: Pool
) -> None:
    """With the provider's circuit open the cancel never left smm (``Unknown(sent=False)``), yet it
    was recorded as "requested": the reseller was told ``"cancel": "1"``, and every later cancel
    returned at once without asking the provider, so the order ran on and was charged in full."""
    key, ann = await reseller_key(shop, "ann@example.com", "5.00")
    order_id = (
        await call(
            shop.http, key, action="add", service=shop.service_id("1"), link="https://x.com/k", quantity=1000
        )
    )["order"]
    await shop.submit(str(order_id))
    url = f"/api/v1/dashboard/orders/{order_id}/cancel"

    await _circuit(pool, "open")
    refused = await shop.http.post(url, json={}, headers=ann)
    assert_error(refused, 400, "FAILED_PRECONDITION", "ORDER_NOT_CANCELLABLE")
    assert await call(shop.http, key, action="cancel", order=order_id) == {
        "error": "The order's provider cannot be reached now; try again in a moment"
    }
    assert await demo_provider.requests("cancel") == 0
    seen = (await shop.http.get(f"/api/v1/dashboard/orders/{order_id}", headers=ann)).json()
    assert (seen["status"], seen["cancelState"]) == ("ORDER_STATUS_IN_PROGRESS", "")

    await _circuit(pool, "closed")
    assert await call(shop.http, key, action="cancel", order=order_id) == {"cancel": "1"}
    assert await demo_provider.requests("cancel") == 1
    done = await shop.settle(str(order_id), ann)
    assert (done["status"], done["price"], done["charged"], done["released"]) == (
        "ORDER_STATUS_CANCELED",
        "1.17",
        "0.00",
        "1.17",
    )
    assert await shop.balance(ann) == ("5.00", "0.00")
    assert (await shop.verify()).ok


async def test_a_cancel_of_an_order_in_review_says_why_not_try_again(
    shop: Shop, demo_provider: DemoHandle, pool: Pool
) -> None:
    """Only reconcile or staff move an order out of review, so "try again in a moment" sent the
    customer (and a reseller script) round in circles; the refusal now says what is happening."""
    key, ann = await reseller_key(shop, "ann@example.com", "5.00")
    await demo_provider.fault("timeout", count=1, actions=["add"])  # placed upstream, answer lost
    async with pool.connection() as conn:
        await conn.execute("UPDATE providers SET timeout_ms = 300, update_time = now()")
    order_id = (
        await call(
            shop.http, key, action="add", service=shop.service_id("1"), link="https://x.com/r", quantity=1000
        )
    )["order"]
    await shop.submit(str(order_id))
    seen = (await shop.http.get(f"/api/v1/dashboard/orders/{order_id}", headers=ann)).json()
    assert seen["status"] == "ORDER_STATUS_NEEDS_REVIEW"

    refused = await shop.http.post(f"/api/v1/dashboard/orders/{order_id}/cancel", json={}, headers=ann)
    assert_error(refused, 400, "FAILED_PRECONDITION", "ORDER_NOT_CANCELLABLE")
    assert refused.json()["error"]["message"] == REVIEW_REFUSAL
    assert await call(shop.http, key, action="cancel", order=order_id) == {"error": REVIEW_REFUSAL}
    assert await demo_provider.requests("cancel") == 0
    assert await shop.balance(ann) == ("3.83", "1.17")  # the hold stays until the review ends
    assert (await shop.verify()).ok


async def test_a_disabled_providers_order_can_still_be_cancelled(
    shop: Shop, demo_provider: DemoHandle
) -> None:
    """Disabling a provider stops sending it orders; its customers' orders already there were left
    uncancellable ("The order's provider is not available") and ran on, charged in full."""
    key, ann = await reseller_key(shop, "ann@example.com", "5.00")
    order_id = (
        await call(
            shop.http, key, action="add", service=shop.service_id("1"), link="https://x.com/d", quantity=1000
        )
    )["order"]
    await shop.submit(str(order_id))
    provider_id = shop.provider_id  # type: ignore[attr-defined]
    disabled = await shop.http.patch(
        f"/api/v1/admin/providers/{provider_id}", json={"enabled": False}, headers=shop.admin
    )
    assert (disabled.status_code, disabled.json()["status"]) == (200, "disabled")

    assert await call(shop.http, key, action="cancel", order=order_id) == {"cancel": "1"}
    assert await demo_provider.requests("cancel") == 1
    done = await shop.settle(str(order_id), ann)
    assert (done["status"], done["charged"], done["released"]) == ("ORDER_STATUS_CANCELED", "0.00", "1.17")
    assert await shop.balance(ann) == ("5.00", "0.00")
    assert (await shop.verify()).ok


async def test_a_second_cancel_at_the_same_time_does_not_undo_the_first(
    shop: Shop, demo_provider: DemoHandle, pool: Pool
) -> None:
    """Two cancels of one order at once (a double click, or ``orders=5,5``) both asked the provider:
    the one it answered second was refused ("Order can no longer be canceled": the first had
    canceled it) and, written last, marked the order's cancel "rejected" while the provider was
    canceling it, and the reseller was told one cancel failed."""
    key, ann = await reseller_key(shop, "ann@example.com", "5.00")
    order_id = (
        await call(
            shop.http, key, action="add", service=shop.service_id("2"), link="https://x.com/2x", quantity=1000
        )
    )["order"]
    await shop.submit(str(order_id))
    # The first cancel to arrive is answered after the second: it finds the order canceled there.
    await demo_provider.fault("latency", count=1, actions=["cancel"], delay_s=0.5)
    assert await call(shop.http, key, action="cancel", orders=f"{order_id},{order_id}") == [
        {"order": order_id, "cancel": 1},
        {"order": order_id, "cancel": 1},
    ]
    assert await demo_provider.requests("cancel") == 2
    seen = (await shop.http.get(f"/api/v1/dashboard/orders/{order_id}", headers=ann)).json()
    assert seen["cancelState"] == "requested"
    done = await shop.settle(str(order_id), ann)
    assert (done["status"], done["charged"], done["released"]) == ("ORDER_STATUS_CANCELED", "0.00", "0.325")
    assert await shop.balance(ann) == ("5.00", "0.00")
    assert (await shop.verify()).ok


async def test_a_cancel_before_the_order_was_sent_answers_it_canceled(shop: Shop) -> None:
    """The customer cancels an order not yet sent: it is canceled and its price released, and the
    reply (CancelOrder's order) says so. It was read before the cancel committed: "pending",
    nothing released, though the order was canceled."""
    ann = await shop.user("ann@example.com", "10.00")
    placed = await shop.order(ann, serviceId=shop.service_id("2"), link="https://x.com/early", quantity=1000)
    assert placed.status_code == 200, placed.text
    order = placed.json()
    canceled = await shop.http.post(f"/api/v1/dashboard/orders/{order['id']}/cancel", json={}, headers=ann)
    assert canceled.status_code == 200, canceled.text
    answer = canceled.json()
    assert (answer["status"], answer["released"]) == ("ORDER_STATUS_CANCELED", order["price"])
    assert await shop.balance(ann) == ("10.00", "0.00")
    assert (await shop.verify()).ok
