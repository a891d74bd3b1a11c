"""The dashboard's and staff's read views of orders: search, paging, statistics."""

from __future__ import annotations

from datetime import timedelta
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


async def test_stats_count_days_in_the_customers_time_zone(shop: Shop, pool: Pool) -> None:
    """Periods began at midnight UTC whatever the customer's zone: in Moscow an order placed at
    00:30 counted on the day before, and "today" began at 03:00. ``timeZone`` names the zone."""
    ann = await shop.user("ann@example.com", "5.00")
    likes = shop.service_id("2")
    ids = [
        int((await shop.order(ann, serviceId=likes, link=f"https://x.com/tz{n}", quantity=1000)).json()["id"])
        for n in range(2)
    ]
    async with pool.connection() as conn:
        # 00:30 today and 23:30 yesterday in Moscow: one UTC day (21:30 and 20:30), two Moscow days.
        for order_id, offset in ((ids[0], "30 minutes"), (ids[1], "-30 minutes")):
            await conn.execute(
                "UPDATE orders SET create_time = date_trunc('day', now() AT TIME ZONE 'Europe/Moscow')"
                " AT TIME ZONE 'Europe/Moscow' + %s::interval WHERE id = %s",
                (offset, order_id),
            )
        row = await (
            await conn.execute(
                "SELECT (now() AT TIME ZONE 'Europe/Moscow')::date,"
                " (create_time AT TIME ZONE 'UTC')::date FROM orders WHERE id = %s",
                (ids[0],),
            )
        ).fetchone()
    assert row is not None
    moscow_today, utc_day = row
    yesterday = moscow_today - timedelta(days=1)
    assert utc_day == yesterday

    async def spend(**params: str) -> list[tuple[str, str, str]]:
        response = await shop.http.get("/api/v1/dashboard/orders/stats", params=params, headers=ann)
        assert response.status_code == 200, response.text
        return [(s["start"], s["orders"], s["spent"]) for s in response.json()["spend"]]

    both_utc = [(yesterday.isoformat(), "2", "0.65")]
    assert await spend(period="day", periods="3") == both_utc
    assert await spend(period="day", periods="3", timeZone="UTC") == both_utc
    split = [(moscow_today.isoformat(), "1", "0.325"), (yesterday.isoformat(), "1", "0.325")]
    assert await spend(period="day", periods="3", timeZone="Europe/Moscow") == split
    # Letter case does not matter; the window is counted in the zone too: only Moscow's today.
    assert await spend(period="day", periods="1", timeZone="europe/moscow") == split[:1]


async def test_stats_refuse_a_time_zone_that_is_not_a_zone_name(shop: Shop) -> None:
    """PostgreSQL also reads POSIX offsets, where "UTC+3" is three hours *behind* UTC: only the
    names of its zone database are taken, each refused on the field and beside other errors."""
    ann = await shop.user("ann@example.com")
    zone = {
        "field": "time_zone",
        "description": "must be an IANA time zone name, like Europe/Moscow or UTC",
        "reason": "INVALID_FIELD",
    }
    for bad in ("Mars/Olympus_Mons", "UTC+3", "+03:00", "Europe/Moscow "):
        response = await shop.http.get(
            "/api/v1/dashboard/orders/stats", params={"timeZone": bad}, headers=ann
        )
        error = assert_error(response, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT")
        [bad_request] = [d for d in error["details"] if d["@type"].endswith("BadRequest")]
        assert bad_request["fieldViolations"] == [zone], bad
    response = await shop.http.get(
        "/api/v1/dashboard/orders/stats", params={"period": "year", "timeZone": "Nowhere"}, headers=ann
    )
    error = assert_error(response, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT")
    [bad_request] = [d for d in error["details"] if d["@type"].endswith("BadRequest")]
    assert [v["field"] for v in bad_request["fieldViolations"]] == ["period", "time_zone"]


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
