"""Staff's order tools (``server/orders/admin.py``): SetOrderStatus, ResolveOrder, ResubmitOrder,
end to end through the edge, with exact money and the audit trail."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from server.common.db import Pool
from tests.fix_demo import DemoFactory, DemoHandle
from tests.fix_shop import Shop
from tests.integration.test_dripfeed import make_due, offer_dripfeed, place, runs_of, share, tick
from tests.integration.test_edge_http import assert_error
from tests.integration.test_providers import add_provider, euro_provider, run_sync
from tests.integration.test_subscriptions import subscribe

pytestmark = pytest.mark.integration


async def _into_review(shop: Shop, pool: Pool, order_id: str) -> None:
    """The state a server killed mid-submission long ago leaves, then a redelivered event: needs review."""
    async with pool.connection() as conn:
        await conn.execute("UPDATE orders SET status = 'submitting' WHERE id = %s", (int(order_id),))
        await conn.execute(
            "INSERT INTO order_submissions (order_id, provider_id, upstream_service_id, create_time)"
            " VALUES (%s, %s, '2', now() - interval '10 minutes')",
            (int(order_id), int(shop.provider_id)),  # type: ignore[attr-defined]
        )
    assert (await shop.submit(order_id)).status == 9  # needs review


async def _audit(shop: Shop, order_id: str) -> list[dict[str, Any]]:
    listed = await shop.http.get(
        "/api/v1/admin/audit", params={"target": f"order:{order_id}"}, headers=shop.admin
    )
    assert listed.status_code == 200, listed.text
    events: list[dict[str, Any]] = listed.json()["events"]
    return events


def _violation(response: Any, field: str) -> str:
    error = assert_error(response, 400, "INVALID_ARGUMENT")
    [details] = [d for d in error["details"] if d["@type"].endswith("BadRequest")]
    [violation] = details["fieldViolations"]
    assert violation["field"] == field, violation
    description: str = violation["description"]
    return description


async def test_an_upstream_id_staff_found_is_stored_as_the_provider_reports_it(
    shop: Shop, pool: Pool, demo_provider: DemoHandle
) -> None:
    """Staff's id was stored as typed: "00123" (as some panels print it) was asked about as "00123",
    the provider's reply is keyed "123", so the order was never matched again: polled forever,
    never settled, its hold never moved. Provider replies and staff links share one rule."""
    ann = await shop.user("ann@example.com", "5.00")
    await demo_provider.fault("timeout", count=1, actions=["add"])  # placed upstream, answer lost
    async with pool.connection() as conn:
        await conn.execute("UPDATE providers SET timeout_ms = 300, update_time = now()")
    lost = (
        await shop.order(ann, serviceId=shop.service_id("2"), link="https://x.com/lost", quantity=1000)
    ).json()
    assert (await shop.submit(lost["id"])).status == 9  # needs review
    [upstream] = await demo_provider.orders()
    route = f"/api/v1/admin/orders/{lost['id']}/resolve"
    spaced = await shop.http.post(
        route, json={"resolution": "found", "upstreamOrderId": "12 34", "reason": "r"}, headers=shop.admin
    )
    assert _violation(spaced, "upstream_order_id") == (
        "is required when the order was found: a positive number or up to 64 characters without spaces"
    )
    found = await shop.http.post(
        route,
        json={"resolution": "found", "upstreamOrderId": f" 00{upstream['order']} ", "reason": "their panel"},
        headers=shop.admin,
    )
    assert found.status_code == 200, found.text
    assert (found.json()["status"], found.json()["upstreamOrderId"]) == (
        "ORDER_STATUS_IN_PROGRESS",
        str(upstream["order"]),
    )
    [resolved] = await _audit(shop, lost["id"])
    assert resolved["after"]["upstream_order_id"] == str(upstream["order"])
    done = await shop.settle(lost["id"], ann)
    assert (done["status"], done["charged"], done["released"]) == ("ORDER_STATUS_COMPLETED", "0.325", "0.00")
    assert await shop.balance(ann) == ("4.675", "0.00")
    assert len(await demo_provider.orders()) == 1
    assert (await shop.verify()).ok


async def test_staff_cannot_find_an_order_under_an_upstream_id_another_order_has(
    shop: Shop, pool: Pool
) -> None:
    """Staff pasting the wrong row of the provider's panel linked an order in review to another
    order's upstream order: both were polled on it and both settled when it completed, so the
    customer paid for a delivery that was someone else's (the automatic reconciler never takes an
    id smm knows; staff's resolve did)."""
    ann = await shop.user("ann@example.com", "5.00")
    likes = shop.service_id("2")
    other = (await shop.order(ann, serviceId=likes, link="https://x.com/other", quantity=1000)).json()
    taken = (await shop.submit(other["id"])).upstream_order_id
    lost = (await shop.order(ann, serviceId=likes, link="https://x.com/lost", quantity=1000)).json()
    await _into_review(shop, pool, lost["id"])
    answer = await shop.http.post(
        f"/api/v1/admin/orders/{lost['id']}/resolve",
        json={"resolution": "found", "upstreamOrderId": f"0{taken}", "reason": "their panel"},
        headers=shop.admin,
    )
    error = assert_error(answer, 400, "FAILED_PRECONDITION", "UPSTREAM_ORDER_TAKEN")
    assert error["message"] == f"upstream order {taken} is order {other['id']}'s at that provider"
    staff_view = await shop.staff_order(lost["id"])
    assert (staff_view["status"], staff_view["upstreamOrderId"]) == ("ORDER_STATUS_NEEDS_REVIEW", "")
    assert await _audit(shop, lost["id"]) == []
    assert await shop.balance(ann) == ("4.35", "0.65")
    assert (await shop.verify()).ok


async def test_an_order_cannot_be_resubmitted_to_a_provider_that_takes_no_orders(
    shop: Shop, pool: Pool, demo_provider: DemoHandle
) -> None:
    """A provider id that does not exist broke the order's foreign key: a 500. A disabled provider
    was accepted, then the dispatcher refused to send to it and failed the order: the customer's
    order was released and ended instead of going where staff meant it to."""
    ann = await shop.user("ann@example.com", "5.00")
    order = (
        await shop.order(ann, serviceId=shop.service_id("2"), link="https://x.com/r", quantity=1000)
    ).json()
    route = f"/api/v1/admin/orders/{order['id']}/resubmit"
    missing = await shop.http.post(
        route, json={"providerId": "999999", "upstreamServiceId": "2", "reason": "r"}, headers=shop.admin
    )
    error = assert_error(missing, 400, "FAILED_PRECONDITION", "UNKNOWN_PROVIDER")
    assert error["message"] == "no such provider"
    backup = await add_provider(shop.http, shop.admin, demo_provider, name="Backup")
    disabled = await shop.http.patch(
        f"/api/v1/admin/providers/{backup['id']}", json={"enabled": False}, headers=shop.admin
    )
    assert disabled.status_code == 200, disabled.text
    paused = await shop.http.post(
        route, json={"providerId": backup["id"], "upstreamServiceId": "2", "reason": "r"}, headers=shop.admin
    )
    error = assert_error(paused, 400, "FAILED_PRECONDITION", "PROVIDER_DISABLED")
    assert error["message"] == "the provider is disabled: it is sent no new orders"
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT status, provider_id, pinned_provider FROM orders WHERE id = %s", (int(order["id"]),)
        )
        assert await cursor.fetchone() == ("pending", int(shop.provider_id), False)  # type: ignore[attr-defined]
    assert await _audit(shop, order["id"]) == []
    assert await shop.balance(ann) == ("4.675", "0.325")
    assert (await shop.verify()).ok


async def test_a_resubmitted_order_keeps_the_upstream_service_id_the_provider_lists(
    shop: Shop, demo_provider: DemoHandle
) -> None:
    """Staff's upstream service id was stored as typed (" 002 " became "002"; the audit record kept
    " 002 "), unlike a service linked by hand, whose id matches the provider's list ("2")."""
    ann = await shop.user("ann@example.com", "5.00")
    order = (
        await shop.order(ann, serviceId=shop.service_id("2"), link="https://x.com/r", quantity=1000)
    ).json()
    backup = await add_provider(shop.http, shop.admin, demo_provider, name="Backup")
    route = f"/api/v1/admin/orders/{order['id']}/resubmit"
    spaced = await shop.http.post(
        route,
        json={"providerId": backup["id"], "upstreamServiceId": "2 b", "reason": "r"},
        headers=shop.admin,
    )
    assert _violation(spaced, "upstream_service_id") == (
        "is required: a positive number or up to 64 characters without spaces"
    )
    sent = await shop.http.post(
        route, json={"providerId": backup["id"], "upstreamServiceId": " 002 ", "reason": "the first is down"},
        headers=shop.admin,
    )  # fmt: skip
    assert sent.status_code == 200, sent.text
    assert (sent.json()["status"], sent.json()["providerId"]) == ("ORDER_STATUS_PENDING", backup["id"])
    async with shop.pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT upstream_service_id, pinned_provider FROM orders WHERE id = %s", (int(order["id"]),)
        )
        assert await cursor.fetchone() == ("2", True)
    [audited] = await _audit(shop, order["id"])
    assert audited["action"] == "order.resubmitted"
    after = audited["after"]
    assert (after["status"], int(after["provider_id"]), after["upstream_service_id"], after["reason"]) == (
        "pending",
        int(backup["id"]),
        "2",
        "the first is down",
    )
    placed = await shop.submit(order["id"])
    assert (placed.status, placed.provider_id) == (3, int(backup["id"]))
    assert await shop.balance(ann) == ("4.675", "0.325")
    assert (await shop.verify()).ok


async def test_a_drip_feed_whose_run_is_in_review_is_resolved_not_resubmitted(
    shop: Shop, pool: Pool, demo_provider: DemoHandle
) -> None:
    """Resubmit took a drip-feed smm sends itself out of review (pending, sent elsewhere) and left
    its run in review: nothing could resolve that run any more (resolve wants the order in review)
    and an order finishes only when every run has ended, so its hold was never settled or released."""
    seo = await offer_dripfeed(shop)
    ann = await shop.user("ann@example.com", "10.00")
    order = await place(shop, ann, seo, "https://example.com/review", quantity=100, runs=2, interval=1)
    await shop.submit(order["id"])  # run 1 out
    async with pool.connection() as conn:  # run 2's submission died mid-call long ago
        await conn.execute(
            "UPDATE order_runs SET due_time = now(), state = 'submitting',"
            " update_time = now() - interval '10 minutes' WHERE order_id = %s AND run_no = 2",
            (int(order["id"]),),
        )
    await tick(shop)
    assert [r[1] for r in await runs_of(pool, order["id"])] == ["in_progress", "needs_review"]
    backup = await add_provider(shop.http, shop.admin, demo_provider, name="Backup")
    answer = await shop.http.post(
        f"/api/v1/admin/orders/{order['id']}/resubmit",
        json={"providerId": backup["id"], "upstreamServiceId": "4", "reason": "r"},
        headers=shop.admin,
    )
    error = assert_error(answer, 400, "FAILED_PRECONDITION", "ORDER_NOT_RESUBMITTABLE")
    assert error["message"] == (
        "a drip-feed smm sends itself has a run in review: resolve it (found, not_placed or failed)"
    )
    assert (await shop.staff_order(order["id"]))["status"] == "ORDER_STATUS_NEEDS_REVIEW"
    resolved = await shop.http.post(
        f"/api/v1/admin/orders/{order['id']}/resolve",
        json={"resolution": "failed", "reason": "not in their panel"},
        headers=shop.admin,
    )
    assert resolved.status_code == 200, resolved.text
    async with asyncio.timeout(20):  # run 1 completes upstream; the order ends with it
        while True:
            await make_due(pool, order["id"])
            await tick(shop)
            ended = await shop.staff_order(order["id"])
            if ended["status"] == "ORDER_STATUS_PARTIAL":
                break
            await asyncio.sleep(0.1)
    price = Decimal(order["price"])  # run 2 (100 of 200) was not delivered: half comes back
    assert (ended["status"], Decimal(ended["released"]), Decimal(ended["charged"])) == (
        "ORDER_STATUS_PARTIAL",
        price / 2,
        price / 2,
    )
    assert int(ended["remains"]) == 100
    assert await shop.balance(ann) == (str(Decimal("10.00") - price / 2), "0.00")
    assert len(await demo_provider.orders()) == 1  # run 2 was never sent again
    assert (await shop.verify()).ok


async def test_staff_remains_must_be_what_was_not_delivered_and_only_for_partial_or_expired(
    shop: Shop,
) -> None:
    """A negative remains passed the "required" check and released nothing: a Partial charged in
    full. A remains with Completed (or any other status) was stored on the order, which then
    showed a charged-in-full order with part undelivered to the customer and the reseller API."""
    ann = await shop.user("ann@example.com", "5.00")
    order = (
        await shop.order(ann, serviceId=shop.service_id("2"), link="https://x.com/p", quantity=1000)
    ).json()
    await shop.submit(order["id"])
    route = f"/api/v1/admin/orders/{order['id']}/status"
    for remains in ("-250", "1001"):
        odd = await shop.http.post(
            route,
            json={"status": "ORDER_STATUS_PARTIAL", "remains": remains, "reason": "r"},
            headers=shop.admin,
        )
        assert _violation(odd, "remains") == "must be 1 to 1000 for partial: what was not delivered"
    for status in ("ORDER_STATUS_COMPLETED", "ORDER_STATUS_CANCELED", "ORDER_STATUS_PROCESSING"):
        extra = await shop.http.post(
            route, json={"status": status, "remains": "300", "reason": "r"}, headers=shop.admin
        )
        assert _violation(extra, "remains") == "is only for partial and expired: what was not delivered"
    staff_view = await shop.staff_order(order["id"])
    assert (staff_view["status"], staff_view["charged"], staff_view["released"]) == (
        "ORDER_STATUS_IN_PROGRESS",
        "0.00",
        "0.00",
    )
    assert await _audit(shop, order["id"]) == []
    done = await shop.http.post(
        route, json={"status": "ORDER_STATUS_PARTIAL", "remains": "1000", "reason": "none arrived"},
        headers=shop.admin,
    )  # fmt: skip
    assert (done.json()["status"], done.json()["charged"], done.json()["released"]) == (
        "ORDER_STATUS_PARTIAL",
        "0.00",
        "0.325",
    )
    assert await shop.balance(ann) == ("5.00", "0.00")
    assert (await shop.verify()).ok


async def test_staff_move_an_order_only_between_the_tracked_statuses_of_its_kind(shop: Shop) -> None:
    """Active and paused are a subscription's, processing an order's. An order staff set active
    could never end partial (active has no move there: the provider's "Partial" was ignored on
    every poll), and a subscription set processing could never expire (processing has no move to
    expired): each kept its hold until staff finished it by hand."""
    ann = await shop.user("ann@example.com", "100.00")
    order = (
        await shop.order(ann, serviceId=shop.service_id("2"), link="https://x.com/k", quantity=1000)
    ).json()
    await shop.submit(order["id"])
    subscription = await subscribe(shop, ann)
    refused = [
        (order["id"], "ORDER_STATUS_ACTIVE", "in_progress", "active"),
        (order["id"], "ORDER_STATUS_PAUSED", "in_progress", "paused"),
        (subscription["id"], "ORDER_STATUS_PROCESSING", "in_progress", "processing"),
    ]
    for order_id, status, was, wanted in refused:
        answer = await shop.http.post(
            f"/api/v1/admin/orders/{order_id}/status",
            json={"status": status, "reason": "r"},
            headers=shop.admin,
        )
        error = assert_error(answer, 400, "FAILED_PRECONDITION", "ORDER_STATE_CONFLICT")
        assert error["message"] == (
            "staff set a final status, or move an order that is with its provider between the tracked"
            " statuses of its kind (in progress, processing; a subscription's in progress, active,"
            " paused); use resolve or resubmit for the rest"
        )
        [info] = [d for d in error["details"] if d["@type"].endswith("ErrorInfo")]
        assert (info["metadata"]["from"], info["metadata"]["to"]) == (was, wanted)
    paused = await shop.http.post(
        f"/api/v1/admin/orders/{subscription['id']}/status",
        json={"status": "ORDER_STATUS_PAUSED", "reason": "the provider paused it"},
        headers=shop.admin,
    )
    assert paused.json()["status"] == "ORDER_STATUS_PAUSED", paused.text
    processing = await shop.http.post(
        f"/api/v1/admin/orders/{order['id']}/status",
        json={"status": "ORDER_STATUS_PROCESSING", "reason": "their panel"},
        headers=shop.admin,
    )
    assert processing.json()["status"] == "ORDER_STATUS_PROCESSING", processing.text
    assert (await shop.verify()).ok


async def test_a_pending_drip_feed_resubmitted_sends_its_runs_to_the_provider_staff_chose(
    shop: Shop, pool: Pool, demo_provider: DemoHandle
) -> None:
    """Resubmit reset the order's attempt but not its runs': a run that had been refused by the
    primary (attempt 1) and was waiting for a fallback that could not be reached was counted past
    the one provider staff chose, and failed as "no provider accepted the run" without being sent."""
    seo = await offer_dripfeed(shop)
    ann = await shop.user("ann@example.com", "10.00")
    order = await place(shop, ann, seo, "https://example.com/elsewhere", quantity=100, runs=2, interval=1)
    async with pool.connection() as conn:  # run 1: refused by the primary, its fallback unreachable
        await conn.execute(
            "UPDATE order_runs SET attempt = 1, due_time = now() + interval '1 minute' WHERE order_id = %s",
            (int(order["id"]),),
        )
    backup = await add_provider(shop.http, shop.admin, demo_provider, name="Backup")
    sent = await shop.http.post(
        f"/api/v1/admin/orders/{order['id']}/resubmit",
        json={"providerId": backup["id"], "upstreamServiceId": "4", "reason": "the primary refuses it"},
        headers=shop.admin,
    )
    assert sent.status_code == 200, sent.text
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE order_runs SET due_time = now() WHERE order_id = %s AND run_no = 1", (int(order["id"]),)
        )
    out = await shop.submit(order["id"])
    assert (out.status, out.provider_id) == (3, int(backup["id"]))  # in progress, at the backup
    assert [r[1] for r in await runs_of(pool, order["id"])] == ["in_progress", "scheduled"]
    assert len(await demo_provider.orders()) == 1
    price = Decimal(order["price"])
    assert await shop.balance(ann) == (str(Decimal("10.00") - price), order["price"])
    assert (await shop.verify()).ok


async def _in_review_with_its_add_out(
    shop: Shop, pool: Pool, demo_provider: DemoHandle
) -> tuple[dict[str, str], dict[str, Any], asyncio.Task[Any]]:
    """An order whose ``add`` the provider has taken but not yet answered (2.5 s), and a redelivered
    event that sent it to review meanwhile: (user, order, the first submission still out)."""
    ann = await shop.user("ann@example.com", "5.00")
    await demo_provider.fault("timeout", count=1, actions=["add"])  # placed upstream, answer lost
    async with pool.connection() as conn:
        await conn.execute("UPDATE providers SET timeout_ms = 2500, update_time = now()")
    lost: dict[str, Any] = (
        await shop.order(ann, serviceId=shop.service_id("2"), link="https://x.com/out", quantity=1000)
    ).json()
    first = asyncio.create_task(shop.submit(lost["id"]))
    async with asyncio.timeout(5):  # the call is out and the provider has the order
        while True:
            if await demo_provider.orders():
                break
            await asyncio.sleep(0.02)
    assert (await shop.submit(lost["id"])).status == 9  # a redelivery: needs review
    return ann, lost, first


async def test_staff_find_an_order_only_once_its_providers_answer_is_in(
    shop: Shop, pool: Pool, demo_provider: DemoHandle
) -> None:
    """A redelivered event sends an order whose ``add`` is still out to review at once. Staff who
    found it upstream then had it in progress, until the call's own answer came back unknown and
    sent it to review again: no longer polled, its hold kept, and "needs review" shown for an
    order staff had settled the question of. Found now waits for that answer (at most 5 minutes):
    an accepted answer resolves the order itself."""
    ann, lost, first = await _in_review_with_its_add_out(shop, pool, demo_provider)
    [upstream] = await demo_provider.orders()
    body = {"resolution": "found", "upstreamOrderId": str(upstream["order"]), "reason": "their panel"}
    route = f"/api/v1/admin/orders/{lost['id']}/resolve"
    early = await shop.http.post(route, json=body, headers=shop.admin)
    error = assert_error(early, 400, "FAILED_PRECONDITION", "ORDER_SUBMISSION_OUT")
    assert error["message"] == (
        f"the order's submission to provider {shop.provider_id} is still waiting for the provider's"  # type: ignore[attr-defined]
        " answer: resolve it once that has come (at most 5 minutes)"
    )
    answered = await first
    assert (answered.status, answered.status_note) == (
        9,
        "the provider's answer is unknown: timed out after 2.5 s",
    )
    found = await shop.http.post(route, json=body, headers=shop.admin)
    assert found.json()["status"] == "ORDER_STATUS_IN_PROGRESS", found.text
    done = await shop.settle(lost["id"], ann)
    assert (done["status"], done["charged"], done["released"]) == ("ORDER_STATUS_COMPLETED", "0.325", "0.00")
    assert await shop.balance(ann) == ("4.675", "0.00")
    assert len(await demo_provider.orders()) == 1
    assert [e["action"] for e in await _audit(shop, lost["id"])] == ["order.resolved"]
    assert (await shop.verify()).ok


async def _terms(pool: Pool, order_id: str) -> tuple[Any, ...] | None:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT provider_id, provider_rate_micros, provider_currency, exchange_rate FROM orders WHERE id = %s",
            (int(order_id),),
        )
        return await cursor.fetchone()


async def test_an_order_staff_send_to_another_provider_records_that_providers_terms(
    shop: Shop, demo_provider_factory: DemoFactory, pool: Pool
) -> None:
    """Resubmit set the order's provider before it was sent, so the acceptance read the new provider
    as the one the order was priced for and kept the first provider's rate, currency and exchange
    rate: staff and reconciliation read the wrong cost (here USD 0.25 for an order costing EUR 0.10)."""
    euro, backup = await euro_provider(shop.http, shop.admin, demo_provider_factory, "2", "0.10")
    await run_sync(shop.channel, backup["id"])  # smm knows what it charges
    ann = await shop.user("ann@example.com", "5.00")
    order = (
        await shop.order(ann, serviceId=shop.service_id("2"), link="https://x.com/eu", quantity=1000)
    ).json()
    primary = await _terms(pool, order["id"])
    assert primary is not None
    assert primary[2] == "USD"
    sent = await shop.http.post(
        f"/api/v1/admin/orders/{order['id']}/resubmit",
        json={"providerId": backup["id"], "upstreamServiceId": "2", "reason": "the primary is down"},
        headers=shop.admin,
    )
    assert sent.status_code == 200, sent.text
    assert (await shop.submit(order["id"])).status == 3  # in progress at the backup
    assert len(await euro.orders()) == 1
    assert await _terms(pool, order["id"]) == (int(backup["id"]), 100_000, "EUR", Decimal(2))
    assert await shop.balance(ann) == ("4.675", "0.325")
    assert (await shop.verify()).ok


async def test_an_order_staff_find_at_a_fallback_records_the_fallbacks_terms(
    shop: Shop, demo_provider: DemoHandle, demo_provider_factory: DemoFactory, pool: Pool
) -> None:
    """Found upstream moved the order to the provider of the lost submission (a fallback) but kept
    the primary's rate, currency and exchange rate, unlike an acceptance the provider answered."""
    euro, backup = await euro_provider(shop.http, shop.admin, demo_provider_factory, "2", "0.10")
    await run_sync(shop.channel, backup["id"])
    likes = shop.service_id("2")
    await shop.with_fallback(likes, "2", backup["id"])
    async with pool.connection() as conn:
        await conn.execute("UPDATE providers SET timeout_ms = 300, update_time = now()")
    ann = await shop.user("ann@example.com", "5.00")
    await demo_provider.fault("error_body", count=1, actions=["add"])  # the primary refuses
    await euro.fault("timeout", count=1, actions=["add"])  # the fallback places it, answer lost
    lost = (await shop.order(ann, serviceId=likes, link="https://x.com/fb", quantity=1000)).json()
    assert (await shop.submit(lost["id"])).status == 9  # needs review
    [upstream] = await euro.orders()
    found = await shop.http.post(
        f"/api/v1/admin/orders/{lost['id']}/resolve",
        json={"resolution": "found", "upstreamOrderId": str(upstream["order"]), "reason": "their panel"},
        headers=shop.admin,
    )
    assert (found.json()["status"], found.json()["providerId"]) == ("ORDER_STATUS_IN_PROGRESS", backup["id"])
    assert await _terms(pool, lost["id"]) == (int(backup["id"]), 100_000, "EUR", Decimal(2))
    done = await shop.settle(lost["id"], ann)
    assert (done["status"], done["charged"], done["released"]) == ("ORDER_STATUS_COMPLETED", "0.325", "0.00")
    assert await shop.balance(ann) == ("4.675", "0.00")
    assert (await shop.verify()).ok


async def test_staff_cannot_finish_a_drip_feed_whose_run_is_being_sent(
    shop: Shop, pool: Pool, demo_provider: DemoHandle
) -> None:
    """A drip-feed smm sends itself stays pending while its first run's ``add`` is out. Staff's
    "canceled" then released the whole order while the provider took the run and delivered it:
    the customer had both (an order that is submitting cannot be finished by staff, for this)."""
    seo = await offer_dripfeed(shop)
    ann = await shop.user("ann@example.com", "10.00")
    order = await place(shop, ann, seo, "https://example.com/staff-drip", quantity=100, runs=2, interval=60)
    await demo_provider.fault("latency", count=1, actions=["add"], delay_s=1.0)
    sending = asyncio.create_task(shop.submit(order["id"]))
    await asyncio.sleep(0.4)
    assert [r[1] for r in await runs_of(pool, order["id"])] == ["submitting", "scheduled"]
    staff = await shop.http.post(
        f"/api/v1/admin/orders/{order['id']}/status",
        json={"status": "ORDER_STATUS_CANCELED", "reason": "customer asked"},
        headers=shop.admin,
    )
    await sending
    assert_error(staff, 400, "FAILED_PRECONDITION", "ORDER_STATE_CONFLICT")
    assert len(await demo_provider.orders()) == 1  # the run went out and is delivered
    seen = await shop.staff_order(order["id"])
    assert (seen["status"], seen["released"]) == ("ORDER_STATUS_IN_PROGRESS", "0.00")
    assert (await shop.verify()).ok


async def test_expired_is_a_subscriptions_end_only(shop: Shop) -> None:
    """Staff could end an ordinary order "expired", a subscription's status: the order then sat in
    a status of the other kind, counted among expired subscriptions in staff's filters and stats."""
    ann = await shop.user("ann@example.com", "100.00")
    order = (
        await shop.order(ann, serviceId=shop.service_id("2"), link="https://x.com/e", quantity=1000)
    ).json()
    await shop.submit(order["id"])
    route = f"/api/v1/admin/orders/{order['id']}/status"
    refused = await shop.http.post(
        route, json={"status": "ORDER_STATUS_EXPIRED", "remains": "500", "reason": "r"}, headers=shop.admin
    )
    error = assert_error(refused, 400, "FAILED_PRECONDITION", "ORDER_STATE_CONFLICT")
    assert "expired" in error["message"]
    assert (await shop.staff_order(order["id"]))["status"] == "ORDER_STATUS_IN_PROGRESS"
    partial = await shop.http.post(
        route, json={"status": "ORDER_STATUS_PARTIAL", "remains": "500", "reason": "r"}, headers=shop.admin
    )
    assert partial.json()["status"] == "ORDER_STATUS_PARTIAL", partial.text

    subscription = await subscribe(shop, ann)
    expired = await shop.http.post(
        f"/api/v1/admin/orders/{subscription['id']}/status",
        json={"status": "ORDER_STATUS_EXPIRED", "remains": "1", "reason": "r"},
        headers=shop.admin,
    )
    assert expired.json()["status"] == "ORDER_STATUS_EXPIRED", expired.text
    assert (await shop.verify()).ok


async def _staff_cancel(shop: Shop, order_id: str) -> dict[str, Any]:
    canceled = await shop.http.post(
        f"/api/v1/admin/orders/{order_id}/status",
        json={"status": "ORDER_STATUS_CANCELED", "reason": "customer asked"},
        headers=shop.admin,
    )
    assert canceled.status_code == 200, canceled.text
    order: dict[str, Any] = canceled.json()
    return order


async def test_staff_cancel_of_a_drip_feed_keeps_the_price_of_runs_delivered(
    shop: Shop, pool: Pool, demo_provider: DemoHandle
) -> None:
    """Staff's "canceled" on a drip-feed smm sends itself released the whole price, the runs the
    provider had delivered included: the customer kept them for nothing. It stops the runs not sent;
    the runs delivered stay charged and a run still out ends by its provider's status."""
    seo = await offer_dripfeed(shop)
    ann = await shop.user("ann@example.com", "10.00")
    order = await place(shop, ann, seo, "https://example.com/drip-done", quantity=100, runs=3, interval=60)
    price = Decimal(order["price"])
    await shop.submit(order["id"])
    for _ in range(50):  # run 1 is delivered; runs 2 and 3 are not due for an hour
        await tick(shop)
        if (await runs_of(pool, order["id"]))[0][1] == "completed":
            break
    ended = await _staff_cancel(shop, order["id"])
    assert ended["status"] == "ORDER_STATUS_PARTIAL"
    released = share(price, 200, 300)
    assert (Decimal(ended["charged"]), Decimal(ended["released"])) == (price - released, released)
    assert [r[1] for r in await runs_of(pool, order["id"])] == ["completed", "canceled", "canceled"]
    assert Decimal((await shop.balance(ann))[0]) == Decimal("10.00") - price + released

    out = await place(shop, ann, seo, "https://example.com/drip-out", quantity=100, runs=2, interval=60)
    await shop.submit(out["id"])
    stopping = await _staff_cancel(shop, out["id"])  # run 1 is with the provider
    assert (stopping["status"], stopping["released"]) == ("ORDER_STATUS_IN_PROGRESS", "0.00")
    assert [r[1] for r in await runs_of(pool, out["id"])] == ["in_progress", "canceled"]
    notes = [e["note"] for e in (await shop.staff_order(out["id"]))["timeline"]]
    assert any("canceled by staff" in n and "customer asked" in n for n in notes), notes
    for _ in range(50):
        await tick(shop)
        seen = await shop.staff_order(out["id"])
        if seen["status"] != "ORDER_STATUS_IN_PROGRESS":
            break
    half = share(Decimal(out["price"]), 100, 200)
    assert (seen["status"], Decimal(seen["released"])) == ("ORDER_STATUS_PARTIAL", half)
    assert len(await demo_provider.orders()) == 2  # one run of each order went out, no more
    assert (await shop.verify()).ok

    never = await place(shop, ann, seo, "https://example.com/drip-never", quantity=100, runs=2, interval=60)
    gone = await _staff_cancel(shop, never["id"])  # nothing went out: canceled, everything released
    assert (gone["status"], gone["released"]) == ("ORDER_STATUS_CANCELED", never["price"])
    assert (await shop.verify()).ok


@pytest.mark.parametrize("action", ["not_placed", "failed", "resubmit"])
async def test_staff_settle_an_order_only_once_its_providers_answer_is_in(
    shop: Shop, pool: Pool, demo_provider: DemoHandle, action: str
) -> None:
    """As for "found": while a redelivered event's review meets a call still out, "not_placed" and a
    resubmit sent the order again (the provider then had it twice, both paid for), and "failed"
    released the price of an order the provider was taking."""
    _, lost, first = await _in_review_with_its_add_out(shop, pool, demo_provider)
    if action == "resubmit":
        route, body = (
            f"/api/v1/admin/orders/{lost['id']}/resubmit",
            {
                "providerId": shop.provider_id,  # type: ignore[attr-defined]
                "upstreamServiceId": "2",
                "reason": "try again",
            },
        )
    else:
        route, body = f"/api/v1/admin/orders/{lost['id']}/resolve", {"resolution": action, "reason": "r"}
    early = await shop.http.post(route, json=body, headers=shop.admin)
    assert_error(early, 400, "FAILED_PRECONDITION", "ORDER_SUBMISSION_OUT")
    assert (await first).status == 9  # its own answer: unknown, still in review
    seen = await shop.staff_order(lost["id"])
    assert (seen["status"], seen["released"]) == ("ORDER_STATUS_NEEDS_REVIEW", "0.00")
    assert len(await demo_provider.orders()) == 1
    assert await _audit(shop, lost["id"]) == []
    assert (await shop.verify()).ok
