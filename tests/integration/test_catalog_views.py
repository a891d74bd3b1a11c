"""The catalog's read views (public lists, staff lists and searches) and staff's user search."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from server.common.db import Pool
from server.main import ServerHandle
from tests.integration.test_accounts import bearer, register
from tests.integration.test_admin_users import admin_token
from tests.integration.test_provider_breaker import stored_provider

pytestmark = pytest.mark.integration


@pytest.fixture
async def admin(http: httpx.AsyncClient, grpc_server: ServerHandle, settings: object) -> dict[str, str]:
    return bearer(await admin_token(http, grpc_server, settings))


async def _category(http: httpx.AsyncClient, admin: dict[str, str], name: str, **extra: Any) -> str:
    created = await http.post(
        "/api/v1/admin/categories", json={"name": name, "enabled": True, **extra}, headers=admin
    )
    assert created.status_code == 200, created.text
    category_id: str = created.json()["id"]
    return category_id


async def _service(
    http: httpx.AsyncClient, admin: dict[str, str], category_id: str, name: str, **extra: Any
) -> str:
    created = await http.post(
        "/api/v1/admin/services",
        json={
            "name": name,
            "type": "SERVICE_TYPE_DEFAULT",
            "categoryId": category_id,
            "rate": "1.00",
            "minQuantity": "10",
            "maxQuantity": "100",
            "enabled": True,
            **extra,
        },
        headers=admin,
    )
    assert created.status_code == 200, created.text
    service_id: str = created.json()["id"]
    return service_id


async def test_a_long_staff_user_search_is_matched_whole(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """The search was cut to its first 200 characters: a long address pasted whole also found every
    user whose address or name merely began with the same 200 characters."""
    stem = "ann@" + ".".join(c * 63 for c in "abc") + ".example"  # 203 characters
    wanted = (await register(http, f"{stem}1.com"))["user"]["id"]
    await register(http, f"{stem}2.com")

    async def found(query: str) -> list[str]:
        listed = await http.get("/api/v1/admin/users", params={"query": query}, headers=admin)
        assert listed.status_code == 200, listed.text
        return [u["id"] for u in listed.json()["users"]]

    # The first 200 characters are shared by both addresses.
    assert await found(f"{stem}1.com") == [wanted]
    assert await found(f"{stem}3.com") == []
    # Longer than any address (320) or name can be: nothing contains it, and it is no error.
    assert await found(f"{stem}1.com" + "x" * 200) == []


async def test_a_long_staff_service_search_is_matched_whole(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """The staff service search was cut to its first 200 characters: a long name pasted whole also
    found every service whose name began with the same 200 characters."""
    category = await _category(http, admin, "Long names")
    stem = "Instagram followers " * 11  # 220 characters
    wanted = await _service(http, admin, category, stem + "real")
    await _service(http, admin, category, stem + "bots")

    async def found(query: str) -> list[str]:
        listed = await http.get("/api/v1/admin/services", params={"query": query}, headers=admin)
        assert listed.status_code == 200, listed.text
        return [s["service"]["id"] for s in listed.json()["services"]]

    assert await found(stem + "real") == [wanted]
    assert await found(stem + "none") == []
    # Longer than any service name (300): nothing contains it, and it is no error.
    assert await found(stem + "real" + "x" * 100) == []


async def test_staff_list_every_category_including_those_customers_do_not_see(
    http: httpx.AsyncClient, admin: dict[str, str], grpc_server: ServerHandle, settings: object
) -> None:
    """The only category list was the public one, which shows categories with something on sale:
    a disabled or empty category was invisible to staff, who could not find its id to enable or
    delete it."""
    selling = await _category(http, admin, "Selling", sortOrder=2)
    await _service(http, admin, selling, "Likes")
    empty = await _category(http, admin, "Empty", sortOrder=1)
    hidden = await _category(http, admin, "Hidden", sortOrder=1)
    await _service(http, admin, hidden, "Views")
    turned_off = await http.patch(
        f"/api/v1/admin/categories/{hidden}", json={"enabled": False}, headers=admin
    )
    assert turned_off.status_code == 200, turned_off.text

    public = (await http.get("/api/v1/public/categories")).json()["categories"]
    assert [c["id"] for c in public] == [selling]
    listed = await http.get("/api/v1/admin/categories", headers=admin)
    assert listed.status_code == 200, listed.text
    assert [(c["id"], c["name"], c["enabled"]) for c in listed.json()["categories"]] == [
        (empty, "Empty", True),  # sort order 1, then by id
        (hidden, "Hidden", False),
        (selling, "Selling", True),
    ]
    support = bearer(await admin_token(http, grpc_server, settings, role="support"))
    assert (await http.get("/api/v1/admin/categories", headers=support)).status_code == 200
    customer = bearer((await register(http, "ann@example.com"))["token"])
    refused = await http.get("/api/v1/admin/categories", headers=customer)
    assert refused.status_code == 403, refused.text


@pytest.mark.parametrize("name", ["Likes\x07", "Likes\nand views", "Likes\tfast", "\u200b", " \u200b\u2060 "])
async def test_a_name_staff_type_is_one_visible_line(
    http: httpx.AsyncClient, admin: dict[str, str], pool: Pool, name: str
) -> None:
    """A bell, a line break or a tab in a category or service name broke the catalog's one-line
    rows (and emails naming the service); a name of only a zero-width space showed customers a
    blank entry. A name a sync stored earlier does not stop staff from changing other fields."""
    refused = await http.post("/api/v1/admin/categories", json={"name": name, "enabled": True}, headers=admin)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["details"][0]["metadata"] == {
        "field": "category.name",
        "fields": "category.name",
    }
    category = await _category(http, admin, "Instagram")
    service = await _service(http, admin, category, "Likes")
    renamed = await http.patch(f"/api/v1/admin/services/{service}", json={"name": name}, headers=admin)
    assert renamed.status_code == 400, renamed.text
    assert renamed.json()["error"]["details"][0]["metadata"] == {
        "field": "service.name",
        "fields": "service.name",
    }

    async with pool.connection() as conn:  # as a provider's list may have named it
        await conn.execute("UPDATE services SET name = %s WHERE id = %s", ("Likes\x07", int(service)))
    repriced = await http.patch(f"/api/v1/admin/services/{service}", json={"rate": "2.00"}, headers=admin)
    assert (repriced.status_code, repriced.json()["rate"]) == (200, "2.00"), repriced.text


async def _staff_list(http: httpx.AsyncClient, admin: dict[str, str], **params: Any) -> httpx.Response:
    return await http.get("/api/v1/admin/services", params=params, headers=admin)


async def test_a_staff_page_of_many_services_reads_as_each_one_does(
    http: httpx.AsyncClient, admin: dict[str, str], pool: Pool
) -> None:
    """The staff list read each listed service with one more query (up to 1,000 per page); it now
    reads a page's services and fallbacks in one statement each. Every row still reads exactly as
    the service's own page shows it: links, fallbacks in order, categories, disabled services."""
    provider_id = await stored_provider(pool)
    categories = [await _category(http, admin, name) for name in ("Instagram", "TikTok")]
    ids = [
        int(await _service(http, admin, categories[i % 2], f"Service {i}", enabled=i % 3 != 0))
        for i in range(24)
    ]
    async with pool.connection() as conn, conn.transaction():
        for i, service_id in enumerate(ids):
            if i % 2:
                await conn.execute(
                    "UPDATE services SET provider_id = %s, upstream_service_id = %s WHERE id = %s",
                    (provider_id, f"p{i}", service_id),
                )
            for position in range(i % 4):  # none, or one to three fallbacks, in order
                await conn.execute(
                    "INSERT INTO service_fallbacks (service_id, position, provider_id, upstream_service_id)"
                    " VALUES (%s, %s, %s, %s)",
                    (service_id, position, provider_id, f"f{i}-{3 - position}"),
                )

    whole = await _staff_list(http, admin, pageSize=1000)
    assert whole.status_code == 200, whole.text
    listed = whole.json()["services"]
    assert [int(s["service"]["id"]) for s in listed] == sorted(ids, reverse=True)
    for row in listed:
        alone = await http.get(f"/api/v1/admin/services/{row['service']['id']}", headers=admin)
        assert alone.status_code == 200, alone.text
        assert row == alone.json()
    by_id = {int(s["service"]["id"]): s for s in listed}
    assert [f["upstreamServiceId"] for f in by_id[ids[3]]["fallbacks"]] == ["f3-3", "f3-2", "f3-1"]
    assert by_id[ids[3]]["provider"]["upstreamServiceId"] == "p3"

    paged: list[dict[str, Any]] = []
    params: dict[str, Any] = {"pageSize": 5}
    while True:
        page = (await _staff_list(http, admin, **params)).json()
        paged += page["services"]
        if not page["nextPageToken"]:
            break
        params["pageToken"] = page["nextPageToken"]
    assert paged == listed


async def test_staff_filter_their_service_list_by_enabled_or_disabled(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """Staff could not list only the enabled, or only the disabled, services. A page token is
    refused with another value of the filter, as with the other filters."""
    category = await _category(http, admin, "Instagram")
    likes = await _service(http, admin, category, "Likes")
    views = await _service(http, admin, category, "Views", enabled=False)
    saves = await _service(http, admin, category, "Saves")

    async def ids(**params: Any) -> list[str]:
        listed = await _staff_list(http, admin, **params)
        assert listed.status_code == 200, listed.text
        return [s["service"]["id"] for s in listed.json()["services"]]

    assert await ids() == [saves, views, likes]
    assert await ids(enabled="false") == [views]
    assert await ids(enabled="true") == [saves, likes]
    assert await ids(enabled="true", query="Views") == []

    first = (await _staff_list(http, admin, enabled="true", pageSize=1)).json()
    assert [s["service"]["id"] for s in first["services"]] == [saves]
    token = first["nextPageToken"]
    assert await ids(enabled="true", pageSize=1, pageToken=token) == [likes]
    for other in ({"enabled": "false"}, {}):
        refused = await _staff_list(http, admin, pageSize=1, pageToken=token, **other)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["message"] == "page_token: was issued for other filters"
    unfiltered = (await _staff_list(http, admin, pageSize=1)).json()["nextPageToken"]
    refused = await _staff_list(http, admin, pageSize=1, pageToken=unfiltered, enabled="false")
    assert refused.status_code == 400, refused.text
