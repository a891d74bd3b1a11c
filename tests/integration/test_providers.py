"""Providers through the edge against the demo provider over loopback HTTP: add, test, list
upstream services, sync (by the worker and directly), pricing, quarantine, admin edits kept,
services gone upstream, exchange rates, the circuit breaker, and the API key kept secret."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
import httpx
import pytest
from smm.v1 import providers_service_pb2 as pb
from smm.v1 import providers_service_pb2_grpc as pb_grpc

from core.config import Settings
from server.common.db import Pool
from server.main import ServerHandle
from tests.fix_demo import DemoHandle
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


async def run_sync(channel: grpc.aio.Channel, provider_id: str) -> pb.SyncRun:
    """Queue and run a sync directly, as the provider-sync worker would."""
    stub = pb_grpc.ProvidersServiceStub(channel)
    queued = await stub.SyncProvider(pb.SyncProviderRequest(id=int(provider_id)), metadata=system_metadata())
    run: pb.SyncRun = await stub.RunSync(pb.RunSyncRequest(id=queued.id), metadata=system_metadata())
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
    http: httpx.AsyncClient, admin: dict[str, str], demo_provider: DemoHandle, channel: grpc.aio.Channel
) -> None:
    provider = await add_provider(http, admin, demo_provider, currency="EUR")
    stub = pb_grpc.ProvidersServiceStub(channel)
    queued = await stub.SyncProvider(
        pb.SyncProviderRequest(id=int(provider["id"])), metadata=system_metadata()
    )
    failed = await stub.RunSync(pb.RunSyncRequest(id=queued.id), metadata=system_metadata())
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
