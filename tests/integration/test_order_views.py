"""The dashboard's and staff's read views of orders: search, paging, statistics."""

from __future__ import annotations

from typing import Any

import pytest

from server.common.db import Pool
from tests.fix_shop import Shop
from tests.integration.test_edge_http import assert_error

pytestmark = pytest.mark.integration


async def _listed(shop: Shop, who: dict[str, str], path: str, **params: Any) -> list[list[str]]:
    """Every page of a list, as the ids on each page; asserts the last page has no token."""
    pages: list[list[str]] = []
    token = ""
    while True:
        response = await shop.http.get(path, params={**params, "pageToken": token}, headers=who)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([o["id"] for o in body["orders"]])
        token = body["nextPageToken"]
        if not token:
            return pages


async def test_a_search_longer_than_300_characters_is_matched_whole(shop: Shop) -> None:
    """The search was cut to its first 300 characters: a long link pasted whole also found every
    order whose link merely began the same way (the same post with other tracking parameters)."""
    ann = await shop.user("ann@example.com", "5.00")
    likes = shop.service_id("2")
    base = "https://instagram.com/p/abc?utm_source=" + "x" * 300
    wanted = (await shop.order(ann, serviceId=likes, link=base + "&n=1", quantity=1000)).json()
    await shop.order(ann, serviceId=likes, link=base + "&n=2", quantity=1000)

    async def found(query: str) -> list[str]:
        listed = await shop.http.get("/api/v1/dashboard/orders", params={"query": query}, headers=ann)
        assert listed.status_code == 200, listed.text
        return [o["id"] for o in listed.json()["orders"]]

    assert await found(base + "&n=1") == [wanted["id"]]
    assert await found(base + "&n=3") == []
    # Longer than any link may be (2048 bytes): nothing contains it, and it is no error.
    assert await found(base + "y" * 2000) == []


async def test_stats_name_the_field_that_is_wrong(shop: Shop) -> None:
    """Both checks were one violation on ``period``: ``periods=367`` was reported as the period's
    fault, so a form marked the wrong field."""
    ann = await shop.user("ann@example.com")

    async def violations(**params: str) -> list[dict[str, str]]:
        response = await shop.http.get("/api/v1/dashboard/orders/stats", params=params, headers=ann)
        error = assert_error(response, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT")
        [bad_request] = [d for d in error["details"] if d["@type"].endswith("BadRequest")]
        found: list[dict[str, str]] = bad_request["fieldViolations"]
        return found

    period = {"field": "period", "description": "must be day, week or month", "reason": "INVALID_FIELD"}
    periods = {"field": "periods", "description": "must be 1 to 366", "reason": "INVALID_FIELD"}
    assert await violations(periods="367") == [periods]
    assert await violations(period="week", periods="-1") == [periods]
    assert await violations(period="year") == [period]
    assert await violations(period="DAY", periods="400") == [period, periods]
    fine = await shop.http.get(
        "/api/v1/dashboard/orders/stats", params={"period": "month", "periods": "366"}, headers=ann
    )
    assert fine.status_code == 200, fine.text


async def test_pages_hold_every_order_once_when_orders_share_a_time(shop: Shop, pool: Pool) -> None:
    """Customer and staff lists page by id, so orders placed at the same instant are neither
    repeated nor skipped; the last page carries no token; staff filters combine."""
    ann = await shop.user("ann@example.com", "5.00")
    bob = await shop.user("bob@example.com", "5.00")
    likes = shop.service_id("2")
    anns = [
        (await shop.order(ann, serviceId=likes, link=f"https://x.com/a{n}", quantity=1000)).json()["id"]
        for n in range(5)
    ]
    bobs = [
        (await shop.order(bob, serviceId=likes, link=f"https://x.com/b{n}", quantity=1000)).json()["id"]
        for n in range(2)
    ]
    async with pool.connection() as conn:
        await conn.execute("UPDATE orders SET create_time = '2026-01-02T03:04:05Z'")
        await conn.execute(
            "UPDATE orders SET create_time = '2026-01-01T00:00:00Z' WHERE id = %s", (int(anns[0]),)
        )
    newest_first = list(reversed(anns))
    assert await _listed(shop, ann, "/api/v1/dashboard/orders", pageSize=2) == [
        newest_first[0:2],
        newest_first[2:4],
        newest_first[4:],
    ]
    assert await _listed(shop, ann, "/api/v1/dashboard/orders", pageSize=5) == [newest_first]
    admin = "/api/v1/admin/orders"
    everyone = list(reversed(anns + bobs))
    assert await _listed(shop, shop.admin, admin, pageSize=3) == [everyone[0:3], everyone[3:6], everyone[6:]]
    ann_id = (await shop.http.get("/api/v1/auth/me", headers=ann)).json()["id"]
    provider_id = shop.provider_id  # type: ignore[attr-defined]
    at_once = {"createTimeFrom": "2026-01-02T03:04:05Z", "createTimeTo": "2026-01-02T03:04:05.000001Z"}
    assert await _listed(shop, shop.admin, admin, userId=ann_id, providerId=provider_id, **at_once) == [
        newest_first[:4]
    ]
    assert await _listed(shop, shop.admin, admin, createTimeTo="2026-01-02T03:04:05Z") == [[anns[0]]]
    assert await _listed(shop, shop.admin, admin, providerId=str(int(provider_id) + 1)) == [[]]
    assert await _listed(shop, shop.admin, admin, status="ORDER_STATUS_COMPLETED") == [[]]
    first = (await shop.http.get(admin, params={"pageSize": 1, "userId": ann_id}, headers=shop.admin)).json()
    other = await shop.http.get(
        admin, params={"pageToken": first["nextPageToken"], "userId": "0"}, headers=shop.admin
    )
    error = assert_error(other, 400, "INVALID_ARGUMENT")
    assert error["message"] == "page_token: was issued for other filters"
