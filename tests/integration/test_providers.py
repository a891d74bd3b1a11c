"""Providers through the edge against the demo provider over loopback HTTP: add, test, list
upstream services, sync (by the worker and directly), pricing, quarantine, admin edits kept,
services gone upstream, exchange rates, the circuit breaker, and the API key kept secret."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import grpc
import httpx
import pytest
from smm.v1 import providers_service_pb2 as pb
from smm.v1 import providers_service_pb2_grpc as pb_grpc
from smm.v1 import system_service_pb2 as spb
from smm.v1 import system_service_pb2_grpc as spb_grpc

from core.config import Settings
from server.common.db import Pool
from server.main import ServerHandle
from tests.fix_demo import DemoFactory, DemoHandle
from tests.fix_grpc import system_metadata
from tests.fix_nats import running_worker
from tests.integration.test_accounts import bearer
from tests.integration.test_admin_users import admin_token
from tests.integration.test_edge_http import assert_error

pytestmark = pytest.mark.integration


@pytest.fixture
async def admin(http: httpx.AsyncClient, grpc_server: ServerHandle, settings: Settings) -> dict[str, str]:
    return bearer(await admin_token(http, grpc_server, settings))


async def add_provider(
    http: httpx.AsyncClient, admin: dict[str, str], demo: DemoHandle, **extra: Any
) -> dict[str, Any]:
    body = {
        "name": "Demo",
        "apiUrl": demo.api_url,
        "apiKey": demo.api_key,
        "currency": "USD",
        "enabled": True,
        "enableNewServices": True,
        **extra,
    }
    response = await http.post("/api/v1/admin/providers", json=body, headers=admin)
    assert response.status_code == 200, response.text
    provider: dict[str, Any] = response.json()
    return provider


async def euro_provider(
    http: httpx.AsyncClient,
    admin: dict[str, str],
    demo_provider_factory: DemoFactory,
    service: str,
    rate: str,
) -> tuple[DemoHandle, dict[str, Any]]:
    """A second provider, "Euro", whose account is in EUR (at 2 USD a euro here), charging ``rate``
    EUR a 1000 for its ``service``, not synced yet: (its demo server, the provider)."""
    euro = await demo_provider_factory(currency="EUR")
    assert (await euro.control.put(f"/control/services/{service}", json={"rate": rate})).status_code == 200
    set_rate = await http.post(
        "/api/v1/admin/exchange-rates", json={"currency": "EUR", "rate": "2"}, headers=admin
    )
    assert set_rate.status_code == 200, set_rate.text
    return euro, await add_provider(http, admin, euro, name="Euro", currency="EUR")


async def sync_once(channel: grpc.aio.Channel, provider_id: str) -> pb.SyncRun:
    """Queue and run a sync directly, as the provider-sync worker would, whatever its outcome."""
    stub = pb_grpc.ProvidersServiceStub(channel)
    queued = await stub.SyncProvider(pb.SyncProviderRequest(id=int(provider_id)), metadata=system_metadata())
    run: pb.SyncRun = await stub.RunSync(pb.RunSyncRequest(id=queued.id), metadata=system_metadata())
    return run


async def run_sync(channel: grpc.aio.Channel, provider_id: str) -> pb.SyncRun:
    """A sync that must succeed."""
    run = await sync_once(channel, provider_id)
    assert run.status == "succeeded", run.error
    return run


async def public_services(http: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    listed = (await http.get("/api/v1/public/services")).json()["services"]
    return {s["name"]: s for s in listed}


async def admin_services(http: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, dict[str, Any]]:
    listed = (await http.get("/api/v1/admin/services", params={"pageSize": "500"}, headers=admin)).json()
    return {s["provider"]["upstreamServiceId"]: s for s in listed["services"] if "provider" in s}


async def test_admin_adds_a_provider_syncs_it_and_its_services_go_on_sale(
    http: httpx.AsyncClient,
    admin: dict[str, str],
    demo_provider: DemoHandle,
    worker_settings: Settings,
    pool: Pool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    provider = await add_provider(http, admin, demo_provider)
    assert provider["health"]["circuitState"] == "closed"
    assert "apiKey" not in provider
    pid = provider["id"]

    tested = (await http.post(f"/api/v1/admin/providers/{pid}/test", json={}, headers=admin)).json()
    assert tested["ok"] is True
    assert (tested["outcome"], tested["balance"], tested["currency"]) == ("accepted", "1000.00", "USD")
    shown = (await http.get(f"/api/v1/admin/providers/{pid}", headers=admin)).json()
    assert (shown["balance"], shown["health"]["calls"]) == ("1000.00", "1")

    upstream = (await http.get(f"/api/v1/admin/providers/{pid}/upstream-services", headers=admin)).json()
    assert len(upstream["services"]) == 18
    assert upstream["services"][0] == {
        "service": "1", "name": "Instagram Followers [Refill 30 days]", "type": "Default",
        "category": "Instagram", "rate": "0.90", "min": "50", "max": "10000", "refill": True, "cancel": True,
        "dripfeed": True, "description": "",
    }  # fmt: skip

    preview = (await http.post(f"/api/v1/admin/providers/{pid}/sync-preview", json={}, headers=admin)).json()
    assert preview["summary"]["created"] == 18
    assert {c["action"] for c in preview["changes"]} == {"create"}
    assert await public_services(http) == {}  # a preview changes nothing

    async with running_worker(worker_settings, "provider-sync"):
        queued = (await http.post(f"/api/v1/admin/providers/{pid}/syncs", json={}, headers=admin)).json()
        assert queued["status"] == "queued"
        for _ in range(200):
            run = (
                await http.get(f"/api/v1/admin/providers/{pid}/syncs/{queued['id']}", headers=admin)
            ).json()
            if run["status"] in ("succeeded", "failed"):
                break
            await asyncio.sleep(0.05)
    assert run["status"] == "succeeded", run
    assert (run["created"], run["total"], run["processed"]) == (18, 18, 18)

    on_sale = await public_services(http)
    assert len(on_sale) == 18
    followers = on_sale["Instagram Followers [Refill 30 days]"]
    # Cost 0.90 with the default 30% markup, rounded up to 0.0001.
    assert (followers["rate"], followers["type"], followers["categoryName"]) == (
        "1.17",
        "SERVICE_TYPE_DEFAULT",
        "Instagram",
    )
    assert (followers["refill"], followers["refillDays"], followers["cancel"]) == (True, 30, True)
    assert on_sale["Instagram Story Views Package"]["type"] == "SERVICE_TYPE_PACKAGE"

    runs = (await http.get(f"/api/v1/admin/providers/{pid}/syncs", headers=admin)).json()["syncRuns"]
    assert [r["trigger"] for r in runs] == ["manual"]

    # The provider's key appears nowhere: not in responses, the database (but encrypted), events or logs.
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT api_key_ciphertext FROM providers")
        [(ciphertext,)] = await cursor.fetchall()
        cursor = await conn.execute(
            "SELECT coalesce(string_agg(row_to_json(a)::text, ''), '') FROM audit_events a"
        )
        [(audit_text,)] = await cursor.fetchall()
        cursor = await conn.execute("SELECT payload FROM outbox_events")
        payloads = b"".join(bytes(r[0]) for r in await cursor.fetchall())
    assert ciphertext.startswith("test1:")
    key = demo_provider.api_key
    assert key not in ciphertext
    assert key not in audit_text
    assert key.encode() not in payloads
    assert key not in caplog.text
    listed = (await http.get("/api/v1/admin/providers", headers=admin)).text
    assert key not in listed


async def test_sync_updates_quarantines_disables_and_keeps_admin_edits(
    http: httpx.AsyncClient, admin: dict[str, str], demo_provider: DemoHandle, channel: grpc.aio.Channel
) -> None:
    provider = await add_provider(http, admin, demo_provider)
    await run_sync(channel, provider["id"])
    before = await admin_services(http, admin)
    likes_id = before["2"]["service"]["id"]
    # Staff rename the likes service: a sync must never undo that.
    renamed = await http.patch(
        f"/api/v1/admin/services/{likes_id}", json={"name": "Our Best Likes"}, headers=admin
    )
    assert renamed.status_code == 200, renamed.text

    control = demo_provider.control
    assert (await control.put("/control/services/1", json={"rate": "0.99"})).status_code == 200  # +10%
    assert (
        await control.put("/control/services/2", json={"rate": "0.50", "name": "Likes v2"})
    ).status_code == 200
    assert (await control.delete("/control/services/3")).status_code == 200
    new = {"name": "Brand New Views", "rate": "0.02", "min": 100, "max": 100000, "category": "TikTok"}
    assert (await control.put("/control/services/999", json=new)).status_code == 200

    preview = (
        await http.post(f"/api/v1/admin/providers/{provider['id']}/sync-preview", json={}, headers=admin)
    ).json()
    actions = {c["upstreamServiceId"]: c["action"] for c in preview["changes"]}
    assert actions == {"1": "update", "2": "quarantine", "3": "disable", "999": "create"}

    run = await run_sync(channel, provider["id"])
    assert (run.created, run.updated, run.quarantined, run.disabled, run.unchanged) == (1, 1, 1, 1, 15)

    after = await admin_services(http, admin)
    assert (after["1"]["providerRate"], after["1"]["cost"], after["1"]["service"]["rate"]) == (
        "0.99",
        "0.99",
        "1.287",
    )
    likes = after["2"]
    assert likes["quarantined"] is True
    assert "rose from 0.25 to 0.50" in likes["quarantineReason"]
    assert (likes["pendingProviderRate"], likes["service"]["rate"]) == (
        "0.50",
        "0.325",
    )  # the old price holds
    assert likes["service"]["name"] == "Our Best Likes"
    assert likes["adminEdited"] == ["name"]
    assert after["3"]["service"]["enabled"] is False
    assert "goneUpstreamTime" in after["3"]
    assert after["999"]["service"]["categoryName"] == "TikTok"

    on_sale = await public_services(http)
    assert "Our Best Likes" not in on_sale  # quarantined: not sold
    assert "Instagram Story Views Package" not in on_sale  # gone upstream: disabled, kept
    assert on_sale["Brand New Views"]["rate"] == "0.026"

    # Staff accept the new price: back on sale, priced by the rules.
    accepted = await http.post(f"/api/v1/admin/services/{likes_id}/accept-price", json={}, headers=admin)
    assert accepted.status_code == 200, accepted.text
    assert (accepted.json()["quarantined"], accepted.json()["service"]["rate"]) == (False, "0.65")
    again = await http.post(f"/api/v1/admin/services/{likes_id}/accept-price", json={}, headers=admin)
    assert_error(again, 400, "FAILED_PRECONDITION", "SERVICE_NOT_QUARANTINED")

    # Nothing new upstream: the next sync changes nothing at all.
    quiet = await run_sync(channel, provider["id"])
    assert (quiet.created, quiet.updated, quiet.quarantined, quiet.disabled, quiet.unchanged) == (
        0,
        0,
        0,
        0,
        18,
    )

    # Back upstream: on sale again.
    assert (await control.put("/control/services/3", json={"name": "Views Package", "rate": "1.50",
                                                            "min": 1, "max": 1, "type": "Package"})).status_code == 200  # fmt: skip
    back = await run_sync(channel, provider["id"])
    assert back.updated == 1
    assert "Views Package" in await public_services(http)  # with the new upstream name (not edited by staff)


async def test_a_provider_in_another_currency_needs_an_exchange_rate(
    http: httpx.AsyncClient,
    admin: dict[str, str],
    demo_provider_factory: DemoFactory,
    channel: grpc.aio.Channel,
) -> None:
    demo = await demo_provider_factory(currency="EUR")  # its account (balance) is in EUR
    provider = await add_provider(http, admin, demo, currency="EUR")
    failed = await sync_once(channel, provider["id"])
    assert failed.status == "failed"
    assert "set an exchange rate for EUR" in failed.error

    bad = await http.post(
        "/api/v1/admin/exchange-rates", json={"currency": "EUR", "rate": "1.1e0"}, headers=admin
    )
    assert_error(bad, 400, "INVALID_ARGUMENT")
    own = await http.post(
        "/api/v1/admin/exchange-rates", json={"currency": "USD", "rate": "1"}, headers=admin
    )
    assert_error(own, 400, "INVALID_ARGUMENT")
    set_rate = await http.post(
        "/api/v1/admin/exchange-rates", json={"currency": "EUR", "rate": "1.10"}, headers=admin
    )
    assert set_rate.status_code == 200, set_rate.text
    rates = (await http.get("/api/v1/admin/exchange-rates", headers=admin)).json()
    assert rates["panelCurrency"] == "USD"
    assert [(r["currency"], r["rate"]) for r in rates["exchangeRates"]] == [("EUR", "1.1")]

    await run_sync(channel, provider["id"])
    followers = (await admin_services(http, admin))["1"]
    # 0.90 EUR at 1.1 = 0.99 USD cost; +30% = 1.287.
    assert (followers["providerRate"], followers["providerCurrency"], followers["exchangeRate"]) == (
        "0.90",
        "EUR",
        "1.1",
    )
    assert (followers["cost"], followers["service"]["rate"]) == ("0.99", "1.287")


async def test_a_provider_answering_in_another_currency_than_configured_is_not_priced(
    http: httpx.AsyncClient,
    admin: dict[str, str],
    demo_provider_factory: DemoFactory,
    channel: grpc.aio.Channel,
) -> None:
    """A provider set up as USD whose account is in EUR (it says so with its balance): the sync
    priced its EUR rates as USD, selling every service about 8 % below what the provider charges."""
    demo = await demo_provider_factory(currency="EUR")
    rate = await http.post(
        "/api/v1/admin/exchange-rates", json={"currency": "EUR", "rate": "1.0825"}, headers=admin
    )
    assert rate.status_code == 200, rate.text
    provider = await add_provider(http, admin, demo)  # configured as USD
    preview = await http.post(
        f"/api/v1/admin/providers/{provider['id']}/sync-preview", json={}, headers=admin
    )
    assert_error(preview, 400, "FAILED_PRECONDITION", "PROVIDER_CURRENCY_MISMATCH")
    failed = await sync_once(channel, provider["id"])
    assert (failed.status, failed.created) == ("failed", 0), failed.error
    assert "reports its account in EUR, not USD" in failed.error
    assert await admin_services(http, admin) == {}

    # Staff correct the currency: the sync converts at the EUR rate.
    fixed = await http.patch(
        f"/api/v1/admin/providers/{provider['id']}", json={"currency": "EUR"}, headers=admin
    )
    assert fixed.status_code == 200, fixed.text
    await run_sync(channel, provider["id"])
    followers = (await admin_services(http, admin))["1"]
    # 0.90 EUR at 1.0825 = 0.97425 USD cost; +30 % = 1.266525, rounded up to 1.2666.
    assert (followers["providerCurrency"], followers["cost"], followers["service"]["rate"]) == (
        "EUR",
        "0.97425",
        "1.2666",
    )


async def test_pricing_rules_and_bulk_changes_reprice(
    http: httpx.AsyncClient, admin: dict[str, str], demo_provider: DemoHandle, channel: grpc.aio.Channel
) -> None:
    provider = await add_provider(http, admin, demo_provider)
    await run_sync(channel, provider["id"])
    services = await admin_services(http, admin)
    followers = services["1"]["service"]
    rules = (await http.get("/api/v1/admin/pricing-rules", headers=admin)).json()["pricingRules"]
    assert [(r["markupPercent"], r["roundTo"]) for r in rules] == [("30", "0.0001")]

    category_rule = await http.post(
        "/api/v1/admin/pricing-rules",
        json={
            "categoryId": followers["categoryId"],
            "markupPercent": "50",
            "fixedAmount": "0.05",
            "roundTo": "0.01",
        },
        headers=admin,
    )
    assert category_rule.status_code == 200, category_rule.text
    repriced = (await admin_services(http, admin))["1"]["service"]["rate"]
    assert repriced == "1.40"  # 0.90 + 45% ... 0.90 x 1.5 + 0.05 = 1.40
    duplicate = await http.post(
        "/api/v1/admin/pricing-rules",
        json={"categoryId": followers["categoryId"], "markupPercent": "10"},
        headers=admin,
    )
    assert_error(duplicate, 409, "ALREADY_EXISTS", "PRICING_RULE_EXISTS")

    service_rule = await http.post(
        "/api/v1/admin/pricing-rules",
        json={"serviceId": followers["id"], "markupPercent": "100"},
        headers=admin,
    )
    assert (await admin_services(http, admin))["1"]["service"]["rate"] == "1.80"
    await http.delete(f"/api/v1/admin/pricing-rules/{service_rule.json()['id']}", headers=admin)
    await http.delete(f"/api/v1/admin/pricing-rules/{category_rule.json()['id']}", headers=admin)
    assert (await admin_services(http, admin))["1"]["service"]["rate"] == "1.17"
    default_id = rules[0]["id"]
    refused = await http.delete(f"/api/v1/admin/pricing-rules/{default_id}", headers=admin)
    assert_error(refused, 400, "FAILED_PRECONDITION", "DEFAULT_RULE")

    ids = [services["1"]["service"]["id"], services["2"]["service"]["id"]]
    set_rate = await http.post(
        "/api/v1/admin/services/bulk",
        json={"serviceIds": ids, "action": "set_rate", "rate": "2.00"},
        headers=admin,
    )
    assert set_rate.json() == {"updatedCount": 2}
    hand_priced = (await admin_services(http, admin))["1"]
    assert (hand_priced["service"]["rate"], hand_priced["manualPrice"]) == ("2.00", True)
    # A rule change leaves hand-set prices alone.
    await http.patch(f"/api/v1/admin/pricing-rules/{default_id}", json={"markupPercent": "40"}, headers=admin)
    assert (await admin_services(http, admin))["1"]["service"]["rate"] == "2.00"
    assert (await admin_services(http, admin))["4"]["service"]["rate"] == "4.20"  # 3.00 + 40%
    adjusted = await http.post(
        "/api/v1/admin/services/bulk",
        json={"serviceIds": ids, "action": "adjust_rate", "percent": "-10"},
        headers=admin,
    )
    assert adjusted.json() == {"updatedCount": 2}
    assert (await admin_services(http, admin))["1"]["service"]["rate"] == "1.80"
    back = await http.post(
        "/api/v1/admin/services/bulk", json={"serviceIds": ids, "action": "use_pricing_rules"}, headers=admin
    )
    assert back.json() == {"updatedCount": 2}
    assert (await admin_services(http, admin))["1"]["service"]["rate"] == "1.26"
    disabled = await http.post(
        "/api/v1/admin/services/bulk", json={"serviceIds": ids, "action": "disable"}, headers=admin
    )
    assert disabled.json() == {"updatedCount": 2}
    assert len(await public_services(http)) == 16
    unknown = await http.post(
        "/api/v1/admin/services/bulk", json={"serviceIds": ids, "action": "x"}, headers=admin
    )
    assert_error(unknown, 400, "INVALID_ARGUMENT")


async def test_a_service_staff_move_to_another_category_is_priced_by_that_categorys_rule(
    http: httpx.AsyncClient, admin: dict[str, str], demo_provider: DemoHandle, channel: grpc.aio.Channel
) -> None:
    """A rule-priced service staff moved into a category with its own rule kept the old category's
    price until the next sync silently repriced it: the customer saw (and paid) a price no rule in
    force gives. The move reprices it at once; a hand-set price stays."""
    provider = await add_provider(http, admin, demo_provider)
    await run_sync(channel, provider["id"])
    services = await admin_services(http, admin)
    followers, likes = services["1"]["service"], services["2"]["service"]  # costs 0.90 and 0.25
    premium = await http.post(
        "/api/v1/admin/categories", json={"name": "Premium", "enabled": True}, headers=admin
    )
    assert premium.status_code == 200, premium.text
    rule = await http.post(
        "/api/v1/admin/pricing-rules",
        json={"categoryId": premium.json()["id"], "markupPercent": "100", "roundTo": "0.01"},
        headers=admin,
    )
    assert rule.status_code == 200, rule.text
    hand = await http.patch(f"/api/v1/admin/services/{likes['id']}", json={"rate": "0.40"}, headers=admin)
    assert hand.status_code == 200, hand.text

    for service in (followers, likes):
        moved = await http.patch(
            f"/api/v1/admin/services/{service['id']}",
            json={"categoryId": premium.json()["id"]},
            headers=admin,
        )
        assert moved.status_code == 200, moved.text
    after = await admin_services(http, admin)
    assert after["1"]["service"]["rate"] == "1.80"  # 0.90 + 100 %, the Premium rule
    assert after["2"]["service"]["rate"] == "0.40"  # set by hand: kept
    quiet = await run_sync(channel, provider["id"])  # and a sync has nothing left to change
    assert (quiet.updated, (await admin_services(http, admin))["1"]["service"]["rate"]) == (0, "1.80")


async def test_providers_mapping_fallbacks_and_deletes(
    http: httpx.AsyncClient, admin: dict[str, str], demo_provider: DemoHandle, channel: grpc.aio.Channel
) -> None:
    provider = await add_provider(http, admin, demo_provider)
    second = await add_provider(http, admin, demo_provider, name="Backup")
    await run_sync(channel, provider["id"])
    service_id = (await admin_services(http, admin))["1"]["service"]["id"]
    mapped = await http.post(
        f"/api/v1/admin/services/{service_id}/providers",
        json={"provider": {"providerId": provider["id"], "upstreamServiceId": "1"},
              "fallbacks": [{"providerId": second["id"], "upstreamServiceId": "7"}]},
        headers=admin,
    )  # fmt: skip
    assert mapped.status_code == 200, mapped.text
    assert mapped.json()["fallbacks"] == [{"providerId": second["id"], "upstreamServiceId": "7"}]
    taken = await http.post(
        f"/api/v1/admin/services/{service_id}/providers",
        json={"provider": {"providerId": provider["id"], "upstreamServiceId": "2"}},
        headers=admin,
    )
    assert_error(taken, 409, "ALREADY_EXISTS", "PROVIDER_SERVICE_TAKEN")
    missing = await http.post(
        f"/api/v1/admin/services/{service_id}/providers",
        json={"provider": {"providerId": "999999", "upstreamServiceId": "1"}},
        headers=admin,
    )
    assert_error(missing, 400, "FAILED_PRECONDITION", "UNKNOWN_PROVIDER")

    # A disabled provider's services are not sold; a deleted one is gone from the list.
    disabled = await http.patch(
        f"/api/v1/admin/providers/{provider['id']}", json={"enabled": False}, headers=admin
    )
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["status"] == "disabled"
    assert await public_services(http) == {}
    deleted = await http.delete(f"/api/v1/admin/providers/{provider['id']}", headers=admin)
    assert deleted.json()["status"] == "deleted"
    names = [
        p["name"] for p in (await http.get("/api/v1/admin/providers", headers=admin)).json()["providers"]
    ]
    assert names == ["Backup"]
    assert_error(await http.get(f"/api/v1/admin/providers/{provider['id']}", headers=admin), 404, "NOT_FOUND")

    category = (await admin_services(http, admin))["1"]["service"]["categoryId"]
    not_empty = await http.delete(f"/api/v1/admin/categories/{category}", headers=admin)
    assert_error(not_empty, 400, "FAILED_PRECONDITION", "CATEGORY_NOT_EMPTY")
    assert (await http.delete(f"/api/v1/admin/services/{service_id}", headers=admin)).status_code == 200
    assert_error(await http.get(f"/api/v1/admin/services/{service_id}", headers=admin), 404, "NOT_FOUND")


async def test_provider_settings_are_validated(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    bad = await http.post(
        "/api/v1/admin/providers",
        json={"name": "", "apiUrl": "ftp://x", "apiKey": "", "currency": "dollars", "protocol": "soap"},
        headers=admin,
    )
    error = assert_error(bad, 400, "INVALID_ARGUMENT")
    [details] = [d for d in error["details"] if d["@type"].endswith("BadRequest")]
    fields = {v["field"] for v in details["fieldViolations"]}
    assert fields == {
        "provider.name",
        "provider.api_url",
        "provider.api_key",
        "provider.currency",
        "provider.protocol",
    }


@pytest.mark.parametrize(
    ("url", "description"),
    [
        ("https://user:secret@panel.example/api/v2", "must not carry a user name or password"),
        ("https://:secret@panel.example/api/v2", "must not carry a user name or password"),
        ("https://panel.example/api/v2#v2", "must not have a #fragment"),
        ("https://panel.example:99999/api/v2", "must be an http(s) URL"),
        ("https://:443/api/v2", "must be an http(s) URL"),
        ("http://169.254.169.254/latest/meta-data/", "must not be a link-local address"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "must not be a link-local address"),
        ("http://[::ffff:169.254.169.254]/api/v2", "must not be a link-local address"),
    ],
)
async def test_a_provider_url_carries_no_credential_and_can_be_called(
    http: httpx.AsyncClient, admin: dict[str, str], demo_provider: DemoHandle, url: str, description: str
) -> None:
    """The URL is shown to staff, audited and logged with every failed call: a password in it was a
    credential in all three (the key itself is stored encrypted and never shown)."""
    body = {"name": "Panel", "apiUrl": url, "apiKey": "k", "currency": "USD"}
    refused = await http.post("/api/v1/admin/providers", json=body, headers=admin)
    error = assert_error(refused, 400, "INVALID_ARGUMENT")
    [details] = [d for d in error["details"] if d["@type"].endswith("BadRequest")]
    [violation] = details["fieldViolations"]
    assert violation["field"] == "provider.api_url"
    assert violation["description"].startswith(description), violation
    provider = await add_provider(http, admin, demo_provider)
    patched = await http.patch(
        f"/api/v1/admin/providers/{provider['id']}", json={"apiUrl": url}, headers=admin
    )
    assert (
        assert_error(patched, 400, "INVALID_ARGUMENT")["details"][0]["metadata"]["field"]
        == "provider.api_url"
    )
    listed = (await http.get(f"/api/v1/admin/providers/{provider['id']}", headers=admin)).json()
    assert listed["apiUrl"] == demo_provider.api_url


async def test_a_provider_saved_before_the_url_rules_can_still_be_changed_otherwise(
    http: httpx.AsyncClient, admin: dict[str, str], demo_provider: DemoHandle, pool: Pool
) -> None:
    provider = await add_provider(http, admin, demo_provider)
    old = demo_provider.api_url.replace("http://", "http://user:pw@")
    async with pool.connection() as conn:  # as an older smm stored it
        await conn.execute("UPDATE providers SET api_url = %s WHERE id = %s", (old, int(provider["id"])))
    renamed = await http.patch(
        f"/api/v1/admin/providers/{provider['id']}", json={"name": "Renamed"}, headers=admin
    )
    assert renamed.status_code == 200, renamed.text
    assert (renamed.json()["name"], renamed.json()["apiUrl"]) == ("Renamed", old)


async def test_the_circuit_opens_after_repeated_failures_and_closes_after_a_good_probe(
    http: httpx.AsyncClient, admin: dict[str, str], demo_provider: DemoHandle, pool: Pool
) -> None:
    provider = await add_provider(http, admin, demo_provider, timeoutMs=1000)
    pid = provider["id"]
    await demo_provider.fault("http500", count=5, actions=["balance"])
    for _ in range(5):
        failed = (await http.post(f"/api/v1/admin/providers/{pid}/test", json={}, headers=admin)).json()
        assert failed["outcome"] == "unknown"
    requests_before = (await demo_provider.control.get("/control/stats")).json()
    refused = (await http.post(f"/api/v1/admin/providers/{pid}/test", json={}, headers=admin)).json()
    assert (refused["outcome"], refused["ok"]) == ("unknown", False)
    assert "circuit" in refused["message"]
    # Refused without a request going out.
    assert (await demo_provider.control.get("/control/stats")).json() == requests_before
    health = (await http.get(f"/api/v1/admin/providers/{pid}", headers=admin)).json()["health"]
    assert (health["circuitState"], health["calls"], health["failures"]) == ("open", "5", "5")
    assert health["lastError"].startswith("balance:")

    # Every server copy sees the same circuit (it lives in PostgreSQL); after the wait a probe goes out.
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE provider_health SET circuit_opened_time = now() - interval '1 hour' WHERE provider_id = %s",
            (int(pid),),
        )
    probe = (await http.post(f"/api/v1/admin/providers/{pid}/test", json={}, headers=admin)).json()
    assert probe["ok"] is True
    health = (await http.get(f"/api/v1/admin/providers/{pid}", headers=admin)).json()["health"]
    assert health["circuitState"] == "closed"


# ---------------------------------------------------------------------------- sync keeps staff decisions


async def public_soon(
    http: httpx.AsyncClient, check: Callable[[dict[str, dict[str, Any]]], bool]
) -> dict[str, dict[str, Any]]:
    """The public list once ``check`` holds: the edge's cached copy goes when the catalog event arrives."""
    for _ in range(100):
        listed = await public_services(http)
        if check(listed):
            return listed
        await asyncio.sleep(0.05)
    raise AssertionError(sorted(listed))


LIKES_BACK = {"name": "Instagram Likes", "rate": "0.25", "min": 10, "max": 50000, "category": "Instagram"}


async def gone_and_back(demo: DemoHandle, channel: grpc.aio.Channel, provider_id: str) -> pb.SyncRun:
    """The likes service (upstream 2) disappears upstream for a sync, then comes back."""
    assert (await demo.control.delete("/control/services/2")).status_code == 200
    gone = await run_sync(channel, provider_id)
    assert gone.disabled == 1
    assert (await demo.control.put("/control/services/2", json=LIKES_BACK)).status_code == 200
    return await run_sync(channel, provider_id)


async def test_only_the_syncs_own_disabling_is_undone_when_a_service_returns_upstream(
    http: httpx.AsyncClient, admin: dict[str, str], demo_provider: DemoHandle, channel: grpc.aio.Channel
) -> None:
    provider = await add_provider(http, admin, demo_provider)
    await run_sync(channel, provider["id"])
    services = await admin_services(http, admin)
    likes_id = services["2"]["service"]["id"]

    # On sale when it went: the sync took it off sale, so its return puts it back.
    await gone_and_back(demo_provider, channel, provider["id"])
    assert (await admin_services(http, admin))["2"]["service"]["enabled"] is True
    await public_soon(http, lambda listed: "Instagram Likes" in listed)

    # Staff took it off sale before it went: it stays off.
    off = await http.patch(f"/api/v1/admin/services/{likes_id}", json={"enabled": False}, headers=admin)
    assert off.status_code == 200, off.text
    await gone_and_back(demo_provider, channel, provider["id"])
    assert (await admin_services(http, admin))["2"]["service"]["enabled"] is False
    await public_soon(http, lambda listed: "Instagram Likes" not in listed)

    # On sale, gone, then staff say "off" while it is gone (already disabled): it stays off.
    on = await http.patch(f"/api/v1/admin/services/{likes_id}", json={"enabled": True}, headers=admin)
    assert on.status_code == 200, on.text
    assert (await demo_provider.control.delete("/control/services/2")).status_code == 200
    await run_sync(channel, provider["id"])
    off = await http.patch(f"/api/v1/admin/services/{likes_id}", json={"enabled": False}, headers=admin)
    assert off.status_code == 200, off.text
    assert (await demo_provider.control.put("/control/services/2", json=LIKES_BACK)).status_code == 200
    await run_sync(channel, provider["id"])
    assert (await admin_services(http, admin))["2"]["service"]["enabled"] is False

    # The same through the bulk action.
    bulk_on = {"serviceIds": [likes_id], "action": "enable"}
    assert (await http.post("/api/v1/admin/services/bulk", json=bulk_on, headers=admin)).status_code == 200
    assert (await demo_provider.control.delete("/control/services/2")).status_code == 200
    await run_sync(channel, provider["id"])
    bulk_off = {"serviceIds": [likes_id], "action": "disable"}
    assert (await http.post("/api/v1/admin/services/bulk", json=bulk_off, headers=admin)).status_code == 200
    assert (await demo_provider.control.put("/control/services/2", json=LIKES_BACK)).status_code == 200
    await run_sync(channel, provider["id"])
    assert (await admin_services(http, admin))["2"]["service"]["enabled"] is False


async def test_a_service_never_enabled_stays_off_sale_after_it_returns_upstream(
    http: httpx.AsyncClient, admin: dict[str, str], demo_provider: DemoHandle, channel: grpc.aio.Channel
) -> None:
    provider = await add_provider(http, admin, demo_provider, enableNewServices=False)
    await run_sync(channel, provider["id"])
    assert await public_services(http) == {}
    back = await gone_and_back(demo_provider, channel, provider["id"])
    assert back.status == "succeeded"
    assert (await admin_services(http, admin))["2"]["service"]["enabled"] is False
    assert await public_services(http) == {}


async def test_an_empty_service_list_fails_the_sync_and_keeps_the_catalog_on_sale(
    http: httpx.AsyncClient, admin: dict[str, str], demo_provider: DemoHandle, channel: grpc.aio.Channel
) -> None:
    """A provider answering `[]` (an outage, a deploy) used to disable its whole catalog until the
    next good sync; now the run fails with the reason and nothing changes."""
    provider = await add_provider(http, admin, demo_provider)
    await run_sync(channel, provider["id"])
    before = await admin_services(http, admin)
    on_sale = await public_services(http)
    assert len(on_sale) == 18
    for upstream_id in before:
        assert (await demo_provider.control.delete(f"/control/services/{upstream_id}")).status_code == 200

    preview = await http.post(
        f"/api/v1/admin/providers/{provider['id']}/sync-preview", json={}, headers=admin
    )
    assert_error(preview, 400, "FAILED_PRECONDITION", "EMPTY_SERVICE_LIST")
    failed = await sync_once(channel, provider["id"])
    assert failed.status == "failed"
    assert "listed no services; nothing was changed" in failed.error
    assert (failed.disabled, failed.updated) == (0, 0)
    assert await admin_services(http, admin) == before
    assert await public_services(http) == on_sale


async def test_an_existing_service_whose_offer_becomes_unusable_is_taken_off_sale(
    http: httpx.AsyncClient, admin: dict[str, str], demo_provider: DemoHandle, channel: grpc.aio.Channel
) -> None:
    provider = await add_provider(http, admin, demo_provider)
    await run_sync(channel, provider["id"])
    likes_id = (await admin_services(http, admin))["2"]["service"]["id"]
    assert (await public_services(http))["Instagram Likes"]["rate"] == "0.325"
    control = demo_provider.control
    # A type smm does not know, at 20x the cost; and a quantity range smm cannot sell.
    assert (
        await control.put("/control/services/2", json={"type": "Likes Premium", "rate": "5.00"})
    ).status_code == 200
    huge = {"min": 2_000_000_000_000, "max": 3_000_000_000_000}
    assert (await control.put("/control/services/1", json=huge)).status_code == 200

    preview = (
        await http.post(f"/api/v1/admin/providers/{provider['id']}/sync-preview", json={}, headers=admin)
    ).json()
    actions = {c["upstreamServiceId"]: c["action"] for c in preview["changes"]}
    assert actions == {"1": "quarantine", "2": "quarantine"}

    run = await run_sync(channel, provider["id"])
    assert (run.skipped, run.quarantined, run.updated, run.unchanged) == (2, 0, 0, 16)
    services = await admin_services(http, admin)
    likes = services["2"]
    assert likes["quarantined"] is True
    assert "unsupported service type 'LIKES_PREMIUM'" in likes["quarantineReason"]
    assert "bad quantity range 2000000000000..3000000000000" in services["1"]["quarantineReason"]
    unusable = ("Instagram Likes", "Instagram Followers [Refill 30 days]")
    await public_soon(http, lambda listed: not any(name in listed for name in unusable))
    # There is no usable price to accept.
    refused = await http.post(f"/api/v1/admin/services/{likes_id}/accept-price", json={}, headers=admin)
    assert_error(refused, 400, "FAILED_PRECONDITION", "SERVICE_NOT_QUARANTINED")
    # Nothing new: still off sale, nothing rewritten.
    again = await run_sync(channel, provider["id"])
    assert (again.skipped, again.updated, again.unchanged) == (2, 0, 16)

    # Usable again at the old cost: released and priced by the rules.
    assert (await control.put("/control/services/1", json={"min": 50, "max": 10000})).status_code == 200
    # Usable again at a far higher cost: the jump quarantines it for staff, as any jump does.
    assert (await control.put("/control/services/2", json={"type": "Default"})).status_code == 200
    fixed = await run_sync(channel, provider["id"])
    assert (fixed.updated, fixed.quarantined) == (1, 1)
    services = await admin_services(http, admin)
    assert services["1"]["quarantined"] is False
    assert (services["2"]["quarantined"], services["2"]["pendingProviderRate"]) == (True, "5.00")
    listed = await public_soon(http, lambda listed: "Instagram Followers [Refill 30 days]" in listed)
    assert listed["Instagram Followers [Refill 30 days]"]["rate"] == "1.17"
    assert "Instagram Likes" not in listed


async def test_an_entry_with_a_malformed_rate_is_quarantined_not_taken_for_gone(
    http: httpx.AsyncClient, admin: dict[str, str], demo_provider: DemoHandle, channel: grpc.aio.Channel
) -> None:
    """An entry the provider still lists but with a rate smm cannot read (negative, or beyond any
    amount) was dropped by the parser, so the sync took the service for gone upstream: disabled as
    "gone upstream", nothing skipped or reported, and a new entry vanished without a word. It is
    unusable: skipped and reported, and a service linked to it is quarantined with the reason."""
    provider = await add_provider(http, admin, demo_provider)
    await run_sync(channel, provider["id"])
    control = demo_provider.control
    assert (await control.put("/control/services/2", json={"rate": "-0.25"})).status_code == 200
    assert (await control.put("/control/services/1", json={"rate": "5000000000"})).status_code == 200
    odd = {"name": "Odd", "rate": "-1", "min": 1, "max": 10, "category": "Other"}
    assert (await control.put("/control/services/779", json=odd)).status_code == 200

    run = await run_sync(channel, provider["id"])
    assert (run.skipped, run.disabled, run.created) == (3, 0, 0)
    services = await admin_services(http, admin)
    for upstream in ("1", "2"):
        assert services[upstream]["quarantined"] is True, services[upstream]
        assert "bad rate" in services[upstream]["quarantineReason"]
        assert "goneUpstreamTime" not in services[upstream]
    assert "779" not in services
    await public_soon(http, lambda listed: "Instagram Likes" not in listed)

    # Readable again at the old cost: released, on sale at the rules' price.
    assert (await control.put("/control/services/2", json={"rate": "0.25"})).status_code == 200
    fixed = await run_sync(channel, provider["id"])
    assert (fixed.updated, fixed.skipped) == (1, 2)
    listed = await public_soon(http, lambda listed: "Instagram Likes" in listed)
    assert listed["Instagram Likes"]["rate"] == "0.325"


async def test_unstorable_text_upstream_is_dropped_and_the_sync_still_applies(
    http: httpx.AsyncClient, admin: dict[str, str], demo_provider: DemoHandle, channel: grpc.aio.Channel
) -> None:
    provider = await add_provider(http, admin, demo_provider)
    await run_sync(channel, provider["id"])
    control = demo_provider.control
    assert (
        await control.put("/control/services/1", json={"rate": "1.80"})
    ).status_code == 200  # cost doubles
    odd = {"name": "SEO\u0000clicks", "category": "Web\u0000 traffic"}
    assert (await control.put("/control/services/4", json=odd)).status_code == 200
    run = await run_sync(channel, provider["id"])  # asserts it succeeded
    assert run.quarantined == 1
    services = await admin_services(http, admin)
    assert services["1"]["quarantined"] is True  # the doubled cost was seen
    seo = services["4"]["service"]
    assert (seo["name"], seo["categoryName"]) == ("SEOclicks", "Web traffic")


async def test_an_absurd_upstream_rate_is_skipped_and_the_sync_still_applies(
    http: httpx.AsyncClient,
    admin: dict[str, str],
    demo_provider_factory: DemoFactory,
    channel: grpc.aio.Channel,
) -> None:
    demo = await demo_provider_factory(currency="EUR")
    # A provider billing in a currency worth 20,000 panel units (like USD for an IDR panel).
    rate = await http.post(
        "/api/v1/admin/exchange-rates", json={"currency": "EUR", "rate": "20000"}, headers=admin
    )
    assert rate.status_code == 200, rate.text
    provider = await add_provider(http, admin, demo, currency="EUR")
    await run_sync(channel, provider["id"])
    assert "Instagram Likes" in await public_services(http)
    control = demo.control
    assert (
        await control.put("/control/services/1", json={"rate": "1.80"})
    ).status_code == 200  # cost doubles
    # A placeholder price some panels use for "not for sale", on a new entry and on a known one.
    absurd = {"name": "Placeholder", "rate": "999999999", "min": 1, "max": 10, "category": "Other"}
    assert (await control.put("/control/services/777", json=absurd)).status_code == 200
    assert (await control.put("/control/services/2", json={"rate": "999999999"})).status_code == 200
    run = await run_sync(channel, provider["id"])
    assert (run.skipped, run.quarantined, run.created) == (2, 1, 0)
    services = await admin_services(http, admin)
    assert "777" not in services
    assert services["1"]["quarantined"] is True
    assert services["2"]["quarantined"] is True
    assert "is too large" in services["2"]["quarantineReason"]
    await public_soon(http, lambda listed: "Instagram Likes" not in listed)


async def test_a_staff_created_service_linked_to_a_provider_keeps_what_staff_set(
    http: httpx.AsyncClient, admin: dict[str, str], demo_provider: DemoHandle, channel: grpc.aio.Channel
) -> None:
    provider = await add_provider(http, admin, demo_provider)
    category = await http.post(
        "/api/v1/admin/categories", json={"name": "Premium", "enabled": True}, headers=admin
    )
    assert category.status_code == 200, category.text
    created = await http.post(
        "/api/v1/admin/services",
        json={
            "name": "Our Premium Followers",
            "description": "Hand-picked",
            "type": "SERVICE_TYPE_DEFAULT",
            "categoryId": category.json()["id"],
            "rate": "3.00",
            "minQuantity": "50",
            "maxQuantity": "10000",
            "enabled": True,
        },
        headers=admin,
    )
    assert created.status_code == 200, created.text
    service_id = created.json()["id"]
    linked = await http.post(
        f"/api/v1/admin/services/{service_id}/providers",
        json={"provider": {"providerId": provider["id"], "upstreamServiceId": "1"}},
        headers=admin,
    )
    assert linked.status_code == 200, linked.text
    await run_sync(channel, provider["id"])
    view = (await http.get(f"/api/v1/admin/services/{service_id}", headers=admin)).json()
    after = view["service"]
    assert (after["name"], after["description"], after["categoryName"], after["rate"]) == (
        "Our Premium Followers",
        "Hand-picked",
        "Premium",
        "3.00",
    )
    assert (view["manualPrice"], view["cost"]) == (True, "0.90")
    assert after["refill"] is True  # what the provider decides still follows it
    # A hand-set price: a cost above it quarantines rather than selling at a loss.
    assert (await demo_provider.control.put("/control/services/1", json={"rate": "3.10"})).status_code == 200
    await run_sync(channel, provider["id"])
    view = (await http.get(f"/api/v1/admin/services/{service_id}", headers=admin)).json()
    assert (view["quarantined"], view["service"]["rate"]) == (True, "3.00")
    await public_soon(http, lambda listed: "Our Premium Followers" not in listed)
    # Accepting the new cost under the hand-set price would sell at a loss: refused until staff
    # set a price that covers it.
    below = await http.post(f"/api/v1/admin/services/{service_id}/accept-price", json={}, headers=admin)
    error = assert_error(below, 400, "FAILED_PRECONDITION", "PRICE_BELOW_COST")
    assert error["details"][0]["metadata"] == {"rate": "3.00", "cost": "3.10"}
    raised = await http.patch(f"/api/v1/admin/services/{service_id}", json={"rate": "3.50"}, headers=admin)
    assert raised.status_code == 200, raised.text
    accepted = await http.post(f"/api/v1/admin/services/{service_id}/accept-price", json={}, headers=admin)
    assert (accepted.json()["quarantined"], accepted.json()["service"]["rate"]) == (False, "3.50")


async def test_a_price_set_by_hand_below_the_providers_cost_is_refused(
    http: httpx.AsyncClient, admin: dict[str, str], demo_provider: DemoHandle, channel: grpc.aio.Channel
) -> None:
    """A hand-set price under what the provider charges was accepted and sold: every order lost the
    difference, and no sync noticed (it quarantines only when the provider's cost changes). A price
    set by hand must cover the service's known cost, as accepting a new cost already requires."""
    provider = await add_provider(http, admin, demo_provider)
    await run_sync(channel, provider["id"])
    services = await admin_services(http, admin)
    followers, likes = services["1"], services["2"]  # costs 0.90 and 0.25, priced 1.17 and 0.325
    route = f"/api/v1/admin/services/{followers['service']['id']}"

    below = await http.patch(route, json={"rate": "0.50"}, headers=admin)
    error = assert_error(below, 400, "FAILED_PRECONDITION", "PRICE_BELOW_COST")
    [info] = [d for d in error["details"] if d.get("reason") == "PRICE_BELOW_COST"]
    assert info["metadata"] == {"rate": "0.50", "cost": "0.90"}
    ids = [followers["service"]["id"], likes["service"]["id"]]
    set_rate = await http.post(
        "/api/v1/admin/services/bulk", json={"serviceIds": ids, "action": "set_rate", "rate": "0.50"},
        headers=admin,
    )  # fmt: skip
    error = assert_error(set_rate, 400, "FAILED_PRECONDITION", "PRICE_BELOW_COST")
    [info] = [d for d in error["details"] if d.get("reason") == "PRICE_BELOW_COST"]
    assert info["metadata"] == {"rate": "0.50", "cost": "0.90", "service_ids": followers["service"]["id"]}
    cut = await http.post(
        "/api/v1/admin/services/bulk", json={"serviceIds": ids, "action": "adjust_rate", "percent": "-50"},
        headers=admin,
    )  # fmt: skip
    error = assert_error(cut, 400, "FAILED_PRECONDITION", "PRICE_BELOW_COST")
    [info] = [d for d in error["details"] if d.get("reason") == "PRICE_BELOW_COST"]
    # 1.17 - 50 % = 0.585 < 0.90 and 0.325 - 50 % = 0.1625 < 0.25: both named, the first's figures.
    assert info["metadata"] == {"rate": "0.585", "cost": "0.90", "service_ids": ",".join(ids)}
    after = await admin_services(http, admin)  # nothing changed, not even the services that fit
    assert [(after[u]["service"]["rate"], after[u]["manualPrice"]) for u in ("1", "2")] == [
        ("1.17", False),
        ("0.325", False),
    ]
    assert (await public_services(http))["Instagram Followers [Refill 30 days]"]["rate"] == "1.17"

    at_cost = await http.patch(route, json={"rate": "0.90"}, headers=admin)  # at cost is allowed
    assert at_cost.status_code == 200, at_cost.text
    assert at_cost.json()["rate"] == "0.90"


async def test_upstream_ids_staff_type_are_stored_as_the_provider_lists_them(
    http: httpx.AsyncClient, admin: dict[str, str], demo_provider: DemoHandle, channel: grpc.aio.Channel
) -> None:
    """A hand link to "0001" never matched the provider's service 1: the sync disabled the linked
    service as gone upstream and created a duplicate of it."""
    provider = await add_provider(http, admin, demo_provider)
    backup = await add_provider(http, admin, demo_provider, name="Backup")
    category = await http.post(
        "/api/v1/admin/categories", json={"name": "Hand", "enabled": True}, headers=admin
    )
    created = await http.post(
        "/api/v1/admin/services",
        json={"name": "Hand Followers", "type": "SERVICE_TYPE_DEFAULT", "categoryId": category.json()["id"],
              "rate": "3.00", "minQuantity": "50", "maxQuantity": "10000", "enabled": True},
        headers=admin,
    )  # fmt: skip
    service_id = created.json()["id"]
    route = f"/api/v1/admin/services/{service_id}/providers"
    for bad in ("0", "-3", "1 2", "x" * 65, "  "):
        refused = await http.post(
            route, json={"provider": {"providerId": provider["id"], "upstreamServiceId": bad}}, headers=admin
        )
        error = assert_error(refused, 400, "INVALID_ARGUMENT")
        [bad_request] = [d for d in error["details"] if "fieldViolations" in d]
        assert [v["field"] for v in bad_request["fieldViolations"]] == ["provider"], bad
    twice = await http.post(
        route,
        json={"provider": {"providerId": backup["id"], "upstreamServiceId": "7"},
              "fallbacks": [{"providerId": backup["id"], "upstreamServiceId": "007"}]},
        headers=admin,
    )  # fmt: skip
    assert_error(twice, 400, "INVALID_ARGUMENT")
    linked = await http.post(
        route,
        json={"provider": {"providerId": provider["id"], "upstreamServiceId": " 0001 "},
              "fallbacks": [{"providerId": backup["id"], "upstreamServiceId": "007"}]},
        headers=admin,
    )  # fmt: skip
    assert linked.status_code == 200, linked.text
    assert linked.json()["provider"] == {"providerId": provider["id"], "upstreamServiceId": "1"}
    assert linked.json()["fallbacks"] == [{"providerId": backup["id"], "upstreamServiceId": "7"}]

    run = await run_sync(channel, provider["id"])
    assert (run.created, run.disabled) == (17, 0)  # the 18th is the hand-linked one
    view = (await http.get(f"/api/v1/admin/services/{service_id}", headers=admin)).json()
    assert (view["service"]["name"], view["service"]["enabled"], view["cost"]) == (
        "Hand Followers",
        True,
        "0.90",
    )
    assert "goneUpstreamTime" not in view
    assert "Instagram Followers [Refill 30 days]" not in await public_services(http)  # no duplicate


async def test_staff_renames_and_moves_of_categories_survive_syncs(
    http: httpx.AsyncClient, admin: dict[str, str], demo_provider: DemoHandle, channel: grpc.aio.Channel
) -> None:
    provider = await add_provider(http, admin, demo_provider)
    await run_sync(channel, provider["id"])
    category_id = (await admin_services(http, admin))["1"]["service"]["categoryId"]
    renamed = await http.patch(
        f"/api/v1/admin/categories/{category_id}", json={"name": "IG Growth"}, headers=admin
    )
    assert renamed.status_code == 200, renamed.text
    rule = await http.post(
        "/api/v1/admin/pricing-rules",
        json={"categoryId": category_id, "markupPercent": "100"},
        headers=admin,
    )
    assert rule.status_code == 200, rule.text
    assert (await admin_services(http, admin))["1"]["service"]["rate"] == "1.80"  # 0.90 x 2

    quiet = await run_sync(channel, provider["id"])
    assert (quiet.updated, quiet.created) == (0, 0)
    after = (await admin_services(http, admin))["1"]["service"]
    assert (after["categoryName"], after["rate"]) == ("IG Growth", "1.80")
    categories = (await http.get("/api/v1/public/categories")).json()["categories"]
    assert "Instagram" not in {c["name"] for c in categories}  # not re-created

    # A new service upstream in "Instagram" joins its siblings in the renamed category, at its rule.
    new = {"name": "Instagram Saves", "rate": "0.40", "min": 10, "max": 5000, "category": "Instagram"}
    assert (await demo_provider.control.put("/control/services/900", json=new)).status_code == 200
    grown = await run_sync(channel, provider["id"])
    assert (grown.created, grown.updated) == (1, 0)
    saves = (await admin_services(http, admin))["900"]["service"]
    assert (saves["categoryId"], saves["categoryName"], saves["rate"]) == (category_id, "IG Growth", "0.80")
    categories = (await http.get("/api/v1/public/categories")).json()["categories"]
    assert "Instagram" not in {c["name"] for c in categories}

    # The provider moves the service to another category: that still follows.
    moved = await demo_provider.control.put("/control/services/1", json={"category": "Instagram VIP"})
    assert moved.status_code == 200
    run = await run_sync(channel, provider["id"])
    assert run.updated == 1
    after = (await admin_services(http, admin))["1"]["service"]
    assert (after["categoryName"], after["rate"]) == ("Instagram VIP", "1.17")  # the default rule there


async def test_a_provider_status_change_drops_the_cached_catalog(
    http: httpx.AsyncClient,
    admin: dict[str, str],
    demo_provider: DemoHandle,
    channel: grpc.aio.Channel,
    pool: Pool,
) -> None:
    provider = await add_provider(http, admin, demo_provider)
    await run_sync(channel, provider["id"])
    url = f"/api/v1/admin/providers/{provider['id']}"

    async def catalog_events() -> int:
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM outbox_events WHERE subject = 'smm.catalog.service.changed'"
            )
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    await public_soon(http, lambda listed: len(listed) == 18)  # cached now
    start = await catalog_events()
    renamed = await http.patch(url, json={"name": "Demo 2"}, headers=admin)
    assert renamed.status_code == 200, renamed.text
    assert await catalog_events() == start  # nothing on sale changed
    disabled = await http.patch(url, json={"enabled": False}, headers=admin)
    assert disabled.status_code == 200, disabled.text
    assert await catalog_events() == start + 1
    await public_soon(http, lambda listed: listed == {})  # the edge dropped its copy
    enabled = await http.patch(url, json={"enabled": True}, headers=admin)
    assert enabled.status_code == 200, enabled.text
    assert await catalog_events() == start + 2
    await public_soon(http, lambda listed: len(listed) == 18)
    deleted = await http.delete(url, headers=admin)
    assert deleted.status_code == 200, deleted.text
    assert await catalog_events() == start + 3
    await public_soon(http, lambda listed: listed == {})


async def test_staff_service_search_takes_percent_and_underscore_literally(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """``Likes_1`` once also found ``LikesX1`` and ``%`` every service: LIKE wildcards, not text."""
    category = await http.post(
        "/api/v1/admin/categories", json={"name": "Search", "enabled": True}, headers=admin
    )
    assert category.status_code == 200, category.text
    ids = {}
    for name in ("Likes_1", "LikesX1"):
        created = await http.post(
            "/api/v1/admin/services",
            json={
                "name": name,
                "type": "SERVICE_TYPE_DEFAULT",
                "categoryId": category.json()["id"],
                "rate": "1.00",
                "minQuantity": "10",
                "maxQuantity": "100",
            },
            headers=admin,
        )
        assert created.status_code == 200, created.text
        ids[name] = created.json()["id"]

    async def found(query: str) -> list[str]:
        listed = await http.get("/api/v1/admin/services", params={"query": query}, headers=admin)
        assert listed.status_code == 200, listed.text
        return [s["service"]["id"] for s in listed.json()["services"]]

    assert await found("likes_1") == [ids["Likes_1"]]
    assert await found("%") == []
    assert await found(ids["LikesX1"]) == [ids["LikesX1"]]


async def test_a_scheduled_sync_whose_event_was_lost_is_queued_again_next_period(
    http: httpx.AsyncClient, admin: dict[str, str], demo_provider: DemoHandle, channel: grpc.aio.Channel,
    pool: Pool,
) -> None:  # fmt: skip
    """A queued run whose event never reached RunSync (dead-lettered while the server was down)
    used to block every later sync of the provider: each tick found it "queued" and queued nothing."""
    pid = int((await add_provider(http, admin, demo_provider))["id"])
    system = spb_grpc.SystemServiceStub(channel)
    period = 3600 * 500_000
    first = await system.RunJob(
        spb.RunJobRequest(job="provider-sync", period_start=period), metadata=system_metadata()
    )
    assert first.result == "queued 1 provider sync(s)"
    # No worker ever ran it; a sync period later it is still queued.
    async with pool.connection() as conn:
        await conn.execute("UPDATE sync_runs SET create_time = now() - interval '2 hours'")
    later = await system.RunJob(
        spb.RunJobRequest(job="provider-sync", period_start=period + 3600), metadata=system_metadata()
    )
    assert later.result == "queued 1 provider sync(s)"
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT status, error FROM sync_runs WHERE provider_id = %s ORDER BY id", (pid,)
            )
        ).fetchall()
    assert rows == [("failed", "never started"), ("queued", "")]
    # The new run runs; the old one's event, should it come back from the DLQ, starts nothing.
    async with pool.connection() as conn:
        oldest, newest = [
            r[0] for r in await (await conn.execute("SELECT id FROM sync_runs ORDER BY id")).fetchall()
        ]
    stub = pb_grpc.ProvidersServiceStub(channel)
    assert (
        await stub.RunSync(pb.RunSyncRequest(id=newest), metadata=system_metadata())
    ).status == "succeeded"
    assert (await stub.RunSync(pb.RunSyncRequest(id=oldest), metadata=system_metadata())).status == "failed"


async def test_a_sync_uses_the_category_whose_name_differs_only_in_case(
    http: httpx.AsyncClient, admin: dict[str, str], demo_provider: DemoHandle, channel: grpc.aio.Channel
) -> None:
    """A provider's category matched only an exactly equal name: with staff's "instagram" (or after
    the provider wrote "INSTAGRAM MENTIONS") the sync made a second category for the same thing."""
    ours = await http.post(
        "/api/v1/admin/categories", json={"name": "instagram", "enabled": True}, headers=admin
    )
    assert ours.status_code == 200, ours.text
    provider = await add_provider(http, admin, demo_provider)
    await run_sync(channel, provider["id"])
    services = await admin_services(http, admin)
    assert services["1"]["service"]["categoryId"] == ours.json()["id"]  # the provider's "Instagram"
    mentions_id = services["7"]["service"]["categoryId"]  # "Instagram Mentions"
    control = demo_provider.control
    for upstream, category in (("900", "INSTAGRAM MENTIONS"), ("901", "Brand New"), ("902", "BRAND NEW")):
        new = {"name": f"New {upstream}", "rate": "0.40", "min": 10, "max": 5000, "category": category}
        assert (await control.put(f"/control/services/{upstream}", json=new)).status_code == 200
    grown = await run_sync(channel, provider["id"])
    assert grown.created == 3
    services = await admin_services(http, admin)
    assert services["900"]["service"]["categoryId"] == mentions_id
    assert services["901"]["service"]["categoryId"] == services["902"]["service"]["categoryId"]
    listed = (await http.get("/api/v1/admin/categories", headers=admin)).json()["categories"]
    names = [c["name"].lower() for c in listed]
    assert sorted(names) == sorted(set(names)), names
