"""The reseller endpoint (the standard SMM panel API) over real HTTP: every action, every request
encoding, the exact shapes and JSON types of PROTOCOL.md, its error convention, refills, cancels,
provider webhooks and the staff tools for orders."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest
from smm.v1 import orders_service_pb2 as opb

from server.common.db import Pool
from server.providers.adapters import standard
from server.providers.adapters.base import Rejected
from server.providers.adapters.parse import parse_refill
from tests.fix_demo import DemoFactory, DemoHandle
from tests.fix_grpc import system_metadata
from tests.fix_shop import Shop, ready_to_poll
from tests.integration.test_accounts import bearer, register
from tests.integration.test_edge_http import assert_error
from tests.integration.test_providers import add_provider, run_sync

pytestmark = pytest.mark.integration
URL = "/api/v1/reseller"


async def reseller_key(shop: Shop, email: str, funds: str) -> tuple[str, dict[str, str]]:
    user = await shop.user(email, funds)
    created = (
        await shop.http.post("/api/v1/dashboard/api-keys", json={"name": "reseller"}, headers=user)
    ).json()
    return str(created["secret"]), user


async def call(http: httpx.AsyncClient, key: str, path: str = URL, **params: Any) -> Any:
    response = await http.post(path, data={"key": key, **{k: str(v) for k, v in params.items()}})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert not response.content.startswith(b"\xef\xbb\xbf")
    return response.json()


async def test_services_in_the_canonical_shape_and_every_encoding(shop: Shop) -> None:
    key, _ = await reseller_key(shop, "ann@example.com", "1.00")
    listed = await call(shop.http, key, action="services")
    assert len(listed) == 18
    first = next(s for s in listed if s["name"] == "Instagram Followers [Refill 30 days]")
    assert first == {
        "service": int(shop.service_id("1")), "name": "Instagram Followers [Refill 30 days]", "type": "Default",
        "category": "Instagram", "rate": "1.17", "min": "50", "max": "10000", "dripfeed": True, "refill": True,
        "cancel": True,
    }  # fmt: skip
    assert {s["type"] for s in listed} >= {
        "Package",
        "Custom Comments",
        "Mentions with Hashtags",
        "Subscriptions",
    }
    # GET with a query string, a JSON body, a trailing slash: the same answer, never a redirect.
    by_get = (await shop.http.get(URL, params={"key": key, "action": "services"})).json()
    by_json = (await shop.http.post(URL + "/", json={"key": key, "action": "services"})).json()
    assert by_get == by_json == listed
    assert (await call(shop.http, "wrong-key", action="services")) == {"error": "Invalid API key"}
    assert (await call(shop.http, "", action="services")) == {"error": "Invalid API key"}
    assert (await call(shop.http, key, action="fly")) == {"error": "Incorrect request"}
    v2 = await shop.http.post("/api/v2", data={"key": key, "action": "balance"})
    assert v2.status_code == 404  # the /api/v2 alias is off by default


async def test_add_status_and_balance_with_the_protocols_types(shop: Shop, pool: Pool) -> None:
    key, user = await reseller_key(shop, "ann@example.com", "5.00")
    likes = shop.service_id("2")
    added = await call(
        shop.http, key, action="add", service=likes, link="https://x.com/r1", quantity=1000, extra="x"
    )
    assert set(added) == {"order"}
    assert isinstance(added["order"], int)
    balance = await call(shop.http, key, action="balance")
    assert balance == {"balance": "4.675", "currency": "USD"}
    status = await call(shop.http, key, action="status", order=added["order"])
    assert status == {
        "charge": "0.325",
        "start_count": "0",
        "status": "Pending",
        "remains": "1000",  # nothing delivered yet (0 would read as delivered in full)
        "currency": "USD",
    }
    listed = (await shop.http.get("/api/v1/dashboard/orders", headers=user)).json()["orders"]
    assert listed[0]["source"] == "reseller"

    await shop.submit(str(added["order"]))
    await ready_to_poll(pool)
    await shop.settle(str(added["order"]), user)
    multi = await call(shop.http, key, action="status", orders=f"{added['order']},999999,abc")
    assert multi[str(added["order"])]["status"] == "Completed"
    assert multi[str(added["order"])]["charge"] == "0.325"
    assert (
        int(multi[str(added["order"])]["start_count"]) > 0
    )  # the provider's start count, kept when it finished
    assert multi["999999"] == {"error": "Incorrect order ID"}
    assert multi["abc"] == {"error": "Incorrect order ID"}
    assert (await call(shop.http, key, action="status", order="424242")) == {"error": "Incorrect order ID"}


async def test_add_errors_use_the_wording_clients_expect(shop: Shop) -> None:
    key, _ = await reseller_key(shop, "ann@example.com", "0.10")
    followers = shop.service_id("1")
    cases = [
        ({"service": "999999", "link": "https://x.com/a", "quantity": 100}, "Incorrect service ID"),
        ({"service": "abc", "link": "https://x.com/a", "quantity": 100}, "Incorrect service ID"),
        ({"service": followers, "link": "https://x.com/a", "quantity": 10}, "Quantity less than minimal 50"),
        (
            {"service": followers, "link": "https://x.com/a", "quantity": 20000},
            "Quantity more than maximum 10000",
        ),
        ({"service": followers, "link": "not a link", "quantity": 100}, "Incorrect link"),
        ({"service": followers, "link": "https://x.com/a", "quantity": 1000}, "Not enough funds on balance"),
    ]
    for params, message in cases:
        assert (await call(shop.http, key, action="add", **params)) == {"error": message}, params


async def test_a_suspended_user_and_a_revoked_key_are_refused(shop: Shop) -> None:
    key, user = await reseller_key(shop, "ann@example.com", "1.00")
    me = (await shop.http.get("/api/v1/auth/me", headers=user)).json()
    await shop.http.post(f"/api/v1/admin/users/{me['id']}/suspend", json={}, headers=shop.admin)
    assert (await call(shop.http, key, action="balance")) == {"error": "Invalid API key"}


async def test_refill_and_cancel_round_trips(shop: Shop, pool: Pool, demo_provider: DemoHandle) -> None:
    key, user = await reseller_key(shop, "ann@example.com", "10.00")
    followers = shop.service_id("1")  # refill and cancel
    done = (
        await call(shop.http, key, action="add", service=followers, link="https://x.com/refill", quantity=100)
    )["order"]
    await shop.submit(str(done))
    await ready_to_poll(pool)
    await shop.settle(str(done), user)
    refill = await call(shop.http, key, action="refill", order=done)
    assert set(refill) == {"refill"}
    assert isinstance(refill["refill"], str)
    assert (await call(shop.http, key, action="refill_status", refill=refill["refill"]))["status"] in (
        "Pending",
        "In progress",
    )
    async with asyncio.timeout(10):
        while True:
            async with pool.connection() as conn:
                await conn.execute("UPDATE order_refills SET next_poll_time = now()")
            await shop.orders.PollOrders(opb.PollOrdersRequest(), metadata=system_metadata())
            state = await call(shop.http, key, action="refill_status", refills=f"{refill['refill']},777")
            if state[0]["status"] == "Completed":
                break
            await asyncio.sleep(0.1)
    assert state == [
        {"refill": int(refill["refill"]), "status": "Completed"},
        {"refill": 777, "status": {"error": "Refill not found"}},
    ]
    again = await call(shop.http, key, action="refill", orders=f"{done},888888")
    assert again[1] == {"order": 888888, "refill": {"error": "Incorrect order ID"}}
    assert isinstance(again[0]["refill"], int)  # a second refill once the first is completed
    likes_refill = (
        await call(
            shop.http, key, action="add", service=shop.service_id("2"), link="https://x.com/nr", quantity=1000
        )
    )["order"]
    assert (await call(shop.http, key, action="refill", order=likes_refill)) == {
        "error": "Refill is disabled for this service"
    }

    # Cancel: before it goes out (at once), and through the provider (released when confirmed).
    pending = (
        await call(shop.http, key, action="add", service=followers, link="https://x.com/p1", quantity=100)
    )["order"]
    assert (await call(shop.http, key, action="cancel", orders=f"{pending}")) == [
        {"order": pending, "cancel": 1}
    ]
    assert (await call(shop.http, key, action="status", order=pending))["status"] == "Canceled"
    running = (
        await call(shop.http, key, action="add", service=followers, link="https://x.com/p2", quantity=300)
    )["order"]
    await shop.submit(str(running))
    before = Decimal((await call(shop.http, key, action="balance"))["balance"])
    assert (await call(shop.http, key, action="cancel", order=running)) == {"cancel": "1"}
    await ready_to_poll(pool)
    final = await shop.settle(str(running), user)
    assert final["status"] in ("ORDER_STATUS_CANCELED", "ORDER_STATUS_PARTIAL")
    after = Decimal((await call(shop.http, key, action="balance"))["balance"])
    assert after - before == Decimal(final["released"])  # released once, exactly
    await ready_to_poll(pool)
    await shop.settle(str(running), user)  # polling again moves nothing
    assert Decimal((await call(shop.http, key, action="balance"))["balance"]) == after
    no_cancel = shop.service_id("3")  # the package has no cancel
    package = (await call(shop.http, key, action="add", service=no_cancel, link="https://x.com/pk"))["order"]
    await shop.submit(str(package))
    assert (await call(shop.http, key, action="cancel", orders=f"{package}")) == [
        {"order": package, "cancel": {"error": "Order cannot be cancelled"}}
    ]
    assert (await shop.verify()).ok


def signed(secret: str, body: bytes, at: int | None = None) -> dict[str, str]:
    at = at or int(time.time())
    digest = hmac.new(secret.encode(), str(at).encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Smm-Signature": f"t={at},v1={digest}", "Content-Type": "application/json"}


WEBHOOK_SECRET = "whsec-test-provider"


async def pushing_provider(
    shop: Shop, demo_provider_factory: DemoFactory, *, step_s: float
) -> tuple[dict[str, Any], str, str]:
    """A demo provider with a webhook secret, now the one selling "Instagram Likes": (the provider,
    its webhook path, the service id)."""
    pushing = await demo_provider_factory(step_s=step_s)
    provider = await add_provider(
        shop.http, shop.admin, pushing, name="Pushing", webhookSecret=WEBHOOK_SECRET
    )
    likes = shop.service_id("2")
    mapped = await shop.http.post(
        f"/api/v1/admin/services/{likes}/providers",
        headers=shop.admin,
        json={"provider": {"providerId": provider["id"], "upstreamServiceId": "2"}},
    )
    assert mapped.status_code == 200, mapped.text
    await run_sync(shop.channel, provider["id"])  # a relinked service is sold once its provider prices it
    return provider, f"/api/v1/webhooks/provider/{provider['id']}", likes


async def test_signed_provider_webhooks_feed_the_poll_path_and_forged_ones_are_refused(
    shop: Shop, pool: Pool, demo_provider_factory: DemoFactory
) -> None:
    provider, hook, likes = await pushing_provider(shop, demo_provider_factory, step_s=0.05)
    assert provider["webhooksEnabled"] is True
    assert "webhookSecret" not in provider
    user = await shop.user("ann@example.com", "5.00")
    order = (await shop.order(user, serviceId=likes, link="https://x.com/hook", quantity=1000)).json()
    sent = await shop.submit(order["id"])
    upstream_id = sent.upstream_order_id
    body = json.dumps({"order": int(upstream_id), "status": "Completed", "start_count": "10", "remains": "0",
                       "charge": "0.25"}).encode()  # fmt: skip
    forged = await shop.http.post(hook, content=body, headers=signed("wrong-secret", body))
    assert_error(forged, 401, "UNAUTHENTICATED", "INVALID_SIGNATURE")
    stale = await shop.http.post(
        hook, content=body, headers=signed(WEBHOOK_SECRET, body, int(time.time()) - 3600)
    )
    assert_error(stale, 401, "UNAUTHENTICATED", "INVALID_SIGNATURE")
    # The same news twice at once, racing a poll: the order finishes and is settled exactly once.
    await ready_to_poll(pool)
    first, second, _ = await asyncio.gather(
        shop.http.post(hook, content=body, headers=signed(WEBHOOK_SECRET, body)),
        shop.http.post(hook, content=body, headers=signed(WEBHOOK_SECRET, body)),
        shop.orders.PollOrders(opb.PollOrdersRequest(), metadata=system_metadata()),
    )
    assert first.status_code == second.status_code == 200, first.text + second.text
    assert sorted([first.json()["applied"], second.json()["applied"]]) in ([False, True], [False, False])
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT count(*) FROM ledger_transactions WHERE reference = %s AND kind = 'settle'",
            (f"order:{order['id']}",),
        )
        assert await cursor.fetchone() == (1,)
    done = (await shop.http.get(f"/api/v1/dashboard/orders/{order['id']}", headers=user)).json()
    assert (done["status"], done["charged"]) == ("ORDER_STATUS_COMPLETED", "0.325")
    no_hooks = await shop.http.post(f"/api/v1/webhooks/provider/{shop.provider_id}", content=body,  # type: ignore[attr-defined]
                                    headers=signed(WEBHOOK_SECRET, body))  # fmt: skip
    assert_error(no_hooks, 404, "NOT_FOUND", "WEBHOOKS_OFF")
    assert (await shop.verify()).ok


async def test_a_webhook_names_the_order_by_the_rule_the_add_reply_was_stored_by(
    shop: Shop, demo_provider_factory: DemoFactory
) -> None:
    """ "0023", 23.0 and " 23 " are one upstream order, and keys come in any case ("Order"), as in
    the provider's other replies; each spelling had been a 400 and the push was lost."""
    _, hook, likes = await pushing_provider(shop, demo_provider_factory, step_s=60)
    user = await shop.user("ann@example.com", "5.00")
    orders = [
        (await shop.order(user, serviceId=likes, link=f"https://x.com/hook{n}", quantity=1000)).json()
        for n in range(3)
    ]
    spellings: list[object] = []
    for order, spell in zip(
        orders, (lambda i: f"00{i}", lambda i: float(i), lambda i: f" {i} "), strict=True
    ):
        upstream_id = (await shop.submit(order["id"])).upstream_order_id
        spellings.append(spell(int(upstream_id)))
    for order, spelled in zip(orders, spellings, strict=True):
        body = json.dumps({"Order": spelled, "Status": "Completed", "Remains": "0"}).encode()
        pushed = await shop.http.post(hook, content=body, headers=signed(WEBHOOK_SECRET, body))
        assert pushed.status_code == 200, pushed.text
        assert pushed.json()["applied"] is True, spelled
        done = (await shop.http.get(f"/api/v1/dashboard/orders/{order['id']}", headers=user)).json()
        assert done["status"] == "ORDER_STATUS_COMPLETED"
    assert (await shop.verify()).ok


async def test_a_pushed_end_shows_the_remains_its_money_was_split_by(
    shop: Shop, demo_provider_factory: DemoFactory
) -> None:
    """A provider's final word with remains beyond the order (or below nothing) splits the money
    within the order's bounds; what is shown is those bounds too, never "5000 not delivered" of a
    1000 (a reseller client refunding by remains would pay out five times what it was charged)."""
    _, hook, likes = await pushing_provider(shop, demo_provider_factory, step_s=60)
    key, user = await reseller_key(shop, "ann@example.com", "5.00")
    pushed: list[tuple[str, str, str]] = [("Partial", "5000", "1000"), ("Partial", "-5", "0"),
                                         ("Completed", "300", "0")]  # fmt: skip
    for n, (status, remains, shown) in enumerate(pushed):
        order = (await shop.order(user, serviceId=likes, link=f"https://x.com/over{n}", quantity=1000)).json()
        upstream_id = (await shop.submit(order["id"])).upstream_order_id
        body = json.dumps({"order": upstream_id, "status": status, "remains": remains}).encode()
        reply = await shop.http.post(hook, content=body, headers=signed(WEBHOOK_SECRET, body))
        assert reply.status_code == 200, reply.text
        assert reply.json()["applied"] is True
        view = (await shop.http.get(f"/api/v1/dashboard/orders/{order['id']}", headers=user)).json()
        assert str(view.get("remains", 0)) == shown, (status, remains, view)
        assert Decimal(view["charged"]) + Decimal(view["released"]) == Decimal("0.325")
        entry = await call(shop.http, key, action="status", order=order["id"])
        assert entry["remains"] == shown, (status, remains, entry)
    assert (await shop.verify()).ok


async def test_staff_resolve_set_status_resubmit_and_read_the_provider_log(
    shop: Shop, pool: Pool, demo_provider: DemoHandle
) -> None:
    user = await shop.user("ann@example.com", "5.00")
    likes = shop.service_id("2")
    await demo_provider.fault("timeout", count=1, actions=["add"])
    async with pool.connection() as conn:
        await conn.execute("UPDATE providers SET timeout_ms = 300, update_time = now()")
    lost = (await shop.order(user, serviceId=likes, link="https://x.com/lost", quantity=1000)).json()
    assert (await shop.submit(lost["id"])).status == 9  # needs review
    [upstream] = await demo_provider.orders()
    staff = shop.admin
    listed = (
        await shop.http.get(
            "/api/v1/admin/orders", params={"status": "ORDER_STATUS_NEEDS_REVIEW"}, headers=staff
        )
    ).json()
    assert [o["id"] for o in listed["orders"]] == [lost["id"]]
    log = (await shop.http.get(f"/api/v1/admin/orders/{lost['id']}/provider-log", headers=staff)).json()[
        "exchanges"
    ]
    assert [(e["action"], e["outcome"]) for e in log] == [("add", "unknown")]
    assert demo_provider.api_key not in json.dumps(log)
    assert log[0]["params"]["link"] == "https://x.com/lost"
    bad = await shop.http.post(
        f"/api/v1/admin/orders/{lost['id']}/resolve",
        json={"resolution": "found", "reason": "x"},
        headers=staff,
    )
    assert_error(bad, 400, "INVALID_ARGUMENT")
    found = await shop.http.post(
        f"/api/v1/admin/orders/{lost['id']}/resolve",
        json={
            "resolution": "found",
            "upstreamOrderId": str(upstream["order"]),
            "reason": "seen in the provider panel",
        },
        headers=staff,
    )
    assert found.status_code == 200, found.text
    assert found.json()["status"] == "ORDER_STATUS_IN_PROGRESS"
    await ready_to_poll(pool)
    assert (await shop.settle(lost["id"], user))["status"] == "ORDER_STATUS_COMPLETED"
    assert len(await demo_provider.orders()) == 1  # never placed twice

    by_hand = (await shop.order(user, serviceId=likes, link="https://x.com/hand", quantity=1000)).json()
    # In progress with nothing upstream to poll: the hold would never be settled.
    stranded = await shop.http.post(f"/api/v1/admin/orders/{by_hand['id']}/status",
                                    json={"status": "ORDER_STATUS_IN_PROGRESS", "reason": "x"}, headers=staff)  # fmt: skip
    assert_error(stranded, 400, "FAILED_PRECONDITION", "ORDER_STATE_CONFLICT")
    await shop.submit(by_hand["id"])
    processing = await shop.http.post(f"/api/v1/admin/orders/{by_hand['id']}/status",
                                      json={"status": "ORDER_STATUS_PROCESSING", "reason": "x"}, headers=staff)  # fmt: skip
    assert processing.json()["status"] == "ORDER_STATUS_PROCESSING", processing.text
    partial = await shop.http.post(
        f"/api/v1/admin/orders/{by_hand['id']}/status",
        json={"status": "ORDER_STATUS_PARTIAL", "remains": "250", "reason": "provider refunded a quarter"},
        headers=staff,
    )
    assert partial.status_code == 200, partial.text
    assert (partial.json()["charged"], partial.json()["released"]) == (
        "0.24375",
        "0.08125",
    )  # 0.325 x 250/1000
    again = await shop.http.post(f"/api/v1/admin/orders/{by_hand['id']}/status",
                                 json={"status": "ORDER_STATUS_CANCELED", "reason": "x"}, headers=staff)  # fmt: skip
    assert_error(again, 400, "FAILED_PRECONDITION", "ORDER_STATE_CONFLICT")

    backup = await add_provider(shop.http, shop.admin, demo_provider, name="Backup")
    stuck = (await shop.order(user, serviceId=likes, link="https://x.com/elsewhere", quantity=1000)).json()
    resubmitted = await shop.http.post(
        f"/api/v1/admin/orders/{stuck['id']}/resubmit",
        json={"providerId": backup["id"], "upstreamServiceId": "2", "reason": "the first provider is down"},
        headers=staff,
    )
    assert resubmitted.status_code == 200, resubmitted.text
    sent = await shop.submit(stuck["id"])
    assert (sent.status, sent.provider_id) == (3, int(backup["id"]))  # in progress, at the backup
    audit = (
        await shop.http.get("/api/v1/admin/audit", params={"target": f"order:{stuck['id']}"}, headers=staff)
    ).json()
    assert [e["action"] for e in audit["events"]] == ["order.resubmitted"]
    support = await shop.http.post(
        f"/api/v1/admin/orders/{stuck['id']}/status", json={"status": "ORDER_STATUS_FAILED", "reason": "x"},
        headers=bearer((await register(shop.http, "someone@example.com"))["token"]),
    )  # fmt: skip
    assert_error(support, 403, "PERMISSION_DENIED")
    assert (await shop.verify()).ok


LINK = "https://instagram.com/p/every-type"
TEN = "\n".join(f"line {i}" for i in range(10))
EVERY_TYPE: dict[str, dict[str, Any]] = {
    "1": {"link": LINK, "quantity": 100},  # Default
    "3": {"link": LINK},  # Package
    "4": {"link": LINK, "quantity": 100, "keywords": "smm panel\nbuy followers"},  # SEO
    "5": {"link": LINK, "comments": TEN},  # Custom Comments
    "6": {"link": LINK, "comments": "nice\ngreat"},  # Custom Comments Package
    "7": {"link": LINK, "quantity": 100, "usernames": "alice\nbob"},  # Mentions
    "8": {"link": LINK, "quantity": 100, "usernames": "alice\nbob", "hashtags": "#smm\n#growth"},
    "9": {"link": LINK, "usernames": "\n".join(f"user{i}" for i in range(10))},  # Mentions Custom List
    "10": {"link": LINK, "quantity": 100, "hashtag": "travel"},  # Mentions Hashtag
    "11": {"link": LINK, "quantity": 100, "username": "natgeo"},  # Mentions User Followers
    "12": {"link": LINK, "quantity": 100, "media": "https://instagram.com/p/media"},  # Media Likers
    "13": {"link": LINK, "quantity": 20, "username": "owner"},  # Comment Likes
    "14": {"link": LINK, "username": "owner", "comments": TEN},  # Comment Replies
    "15": {"link": LINK, "quantity": 100, "answer_number": "2"},  # Poll
    "16": {"link": LINK, "quantity": 100, "groups": "group one\ngroup two"},  # Invites from Groups
    "17": {"username": "autolikes", "min": 50, "max": 100, "posts": 5, "delay": 30},  # Subscriptions
    "18": {
        "link": LINK,
        "quantity": 500,
        "country": "us",
        "device": "1",
        "type_of_traffic": "3",
    },  # Web Traffic
}


async def test_every_service_type_through_the_endpoint_and_on_to_the_provider(
    shop: Shop, demo_provider: DemoHandle
) -> None:
    key, _ = await reseller_key(shop, "ann@example.com", "1000.00")
    types = {s["service"]: s["type"] for s in await call(shop.http, key, action="services")}
    placed: dict[str, int] = {}
    for upstream, params in EVERY_TYPE.items():
        service = shop.service_id(upstream)
        added = await call(shop.http, key, action="add", service=service, **params)
        assert set(added) == {"order"}, (types[int(service)], added)
        placed[upstream] = added["order"]
        sent = await shop.submit(str(added["order"]))
        assert sent.status == 3, (types[int(service)], sent.status_note)  # accepted upstream: in progress
    assert len({types[int(shop.service_id(u))] for u in EVERY_TYPE}) == 17  # every type of PROTOCOL.md
    upstream_orders = {o["service"]: o for o in await demo_provider.orders()}
    assert upstream_orders[17]["type"] == "Subscriptions"
    assert upstream_orders[5]["quantity"] == 10  # comments counted, as the provider expects
    statuses = await call(shop.http, key, action="status", orders=",".join(str(i) for i in placed.values()))
    assert {entry["status"] for entry in statuses.values()} <= {"In progress", "Pending", "Completed"}
    assert all(
        set(entry) == {"charge", "start_count", "status", "remains", "currency"}
        for entry in statuses.values()
    )


async def test_add_refuses_a_malformed_integer_parameter_in_the_protocols_words(shop: Shop) -> None:
    key, _ = await reseller_key(shop, "ann@example.com", "100.00")
    followers = shop.service_id("1")
    cases = [
        ({"quantity": "--5"}, "Incorrect quantity"),
        ({"quantity": "\u00b2"}, "Incorrect quantity"),  # a digit to str.isdigit(), not to int()
        ({"quantity": "1_000"}, "Incorrect quantity"),
        ({"quantity": 100, "runs": "99999999999", "interval": 5}, "Incorrect runs"),  # beyond int32
    ]
    for params, message in cases:
        added = await call(shop.http, key, action="add", service=followers, link="https://x.com/i", **params)
        assert added == {"error": message}, params


@pytest.mark.parametrize(
    ("params", "answer"),
    [
        ({"action": "add", "service": "\u00b2", "link": "https://x.com/a", "quantity": "100"},
         {"error": "Incorrect service ID"}),
        ({"action": "status", "order": "\u00b2"}, {"error": "Incorrect order ID"}),
        ({"action": "status", "orders": "999999,\u00b2"},
         {"999999": {"error": "Incorrect order ID"}, "\u00b2": {"error": "Incorrect order ID"}}),
        ({"action": "refill", "order": "\u00b2"}, {"error": "Incorrect order ID"}),
        ({"action": "refill", "orders": "\u00b2"}, [{"order": "\u00b2", "refill": {"error": "Incorrect order ID"}}]),
        ({"action": "cancel", "order": "\u00b2"}, {"error": "Incorrect order ID"}),
        ({"action": "cancel", "orders": "\u00b2"}, [{"order": "\u00b2", "cancel": {"error": "Incorrect order ID"}}]),
        ({"action": "refill_status", "refill": "\u00b2"}, {"error": "Refill not found"}),
    ],
    ids=["add", "status", "status-multi", "refill", "refill-multi", "cancel", "cancel-multi", "refill_status"],
)  # fmt: skip
async def test_an_id_in_unicode_digits_is_an_incorrect_id(
    shop: Shop, params: dict[str, str], answer: object
) -> None:
    key, _ = await reseller_key(shop, "ann@example.com", "10.00")
    assert (await call(shop.http, key, **params)) == answer


@pytest.mark.parametrize("action", ["refill", "cancel"])
async def test_a_single_refill_or_cancel_of_an_id_beyond_int64_is_an_incorrect_order_id(
    shop: Shop, action: str
) -> None:
    key, _ = await reseller_key(shop, "ann@example.com", "10.00")
    answer = await call(shop.http, key, action=action, order="99999999999999999999")
    assert answer == {"error": "Incorrect order ID"}


async def test_a_key_with_characters_no_key_has_is_an_invalid_api_key(shop: Shop) -> None:
    key, _ = await reseller_key(shop, "ann@example.com", "10.00")
    assert (await call(shop.http, "\u00e9", action="balance")) == {"error": "Invalid API key"}
    # Dropping the odd characters must not turn a wrong key into a right one.
    assert (await call(shop.http, key + "\u00e9", action="balance")) == {"error": "Invalid API key"}
    assert (await call(shop.http, key, action="balance")) == {"balance": "10.00", "currency": "USD"}


async def test_a_dripfeed_total_over_the_maximum_uses_the_maximum_wording(shop: Shop) -> None:
    key, _ = await reseller_key(shop, "ann@example.com", "100.00")
    added = await call(
        shop.http, key, action="add", service=shop.service_id("1"), link="https://x.com/d",
        quantity=100, runs=500, interval=5,
    )  # fmt: skip
    assert added == {"error": "Quantity more than maximum 10000"}  # 100 x 500 runs > 10000


async def test_json_null_for_an_optional_parameter_means_it_was_left_out(shop: Shop) -> None:
    key, _ = await reseller_key(shop, "ann@example.com", "100.00")
    response = await shop.http.post(
        URL,
        json={"key": key, "action": "add", "service": int(shop.service_id("1")), "link": "https://x.com/n",
              "quantity": 100, "runs": None, "interval": None},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    added = response.json()
    assert set(added) == {"order"}, added
    status = await call(shop.http, key, action="status", order=added["order"])
    assert status["charge"] == "0.117"  # one run of 100, not a drip-feed


async def test_multi_cancel_refill_and_refill_status_echo_an_unparsable_id_as_given(shop: Shop) -> None:
    key, _ = await reseller_key(shop, "ann@example.com", "10.00")
    assert (await call(shop.http, key, action="cancel", orders="abc,999999")) == [
        {"order": "abc", "cancel": {"error": "Incorrect order ID"}},
        {"order": 999999, "cancel": {"error": "Incorrect order ID"}},
    ]
    assert (await call(shop.http, key, action="refill", orders="abc,999999")) == [
        {"order": "abc", "refill": {"error": "Incorrect order ID"}},
        {"order": 999999, "refill": {"error": "Incorrect order ID"}},
    ]
    assert (await call(shop.http, key, action="refill_status", refills="abc,777")) == [
        {"refill": "abc", "status": {"error": "Refill not found"}},
        {"refill": 777, "status": {"error": "Refill not found"}},
    ]


async def _completed_with_refill(shop: Shop, key: str, user: dict[str, str], link: str) -> int:
    followers = shop.service_id("1")  # refill 30 days
    done = (await call(shop.http, key, action="add", service=followers, link=link, quantity=100))["order"]
    await shop.submit(str(done))
    await ready_to_poll(shop.pool)
    assert (await shop.settle(str(done), user))["status"] == "ORDER_STATUS_COMPLETED"
    return int(done)


async def test_refills_asked_at_once_go_upstream_once(shop: Shop, demo_provider: DemoHandle) -> None:
    """Both passed an unlocked "open refill?" check: the provider was asked twice and the second
    insert hit the unique index (a 500)."""
    key, user = await reseller_key(shop, "ann@example.com", "10.00")
    done = await _completed_with_refill(shop, key, user, "https://x.com/twice")
    before = await demo_provider.requests("refill")
    await demo_provider.fault("latency", count=2, actions=["refill"], delay_s=0.3)
    answer = await call(shop.http, key, action="refill", orders=f"{done},{done}")  # gathered at once
    assert await demo_provider.requests("refill") - before == 1
    assert [e["refill"] for e in answer if isinstance(e["refill"], dict)] == [
        {"error": "A refill of this order is already in progress"}
    ]
    assert len([e for e in answer if isinstance(e["refill"], int)]) == 1
    clicks = await asyncio.gather(
        *(shop.http.post(f"/api/v1/dashboard/orders/{done}/refill", json={}, headers=user) for _ in range(2))
    )
    assert [r.status_code for r in clicks] == [400, 400]  # the first refill is still open
    assert await demo_provider.requests("refill") - before == 1


async def test_a_refill_never_stays_open_without_a_way_to_end(
    shop: Shop, pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refill accepted without an id, one the provider no longer knows, and one whose answer was
    lost (the process died mid-call) each stayed "Pending" for ever and blocked every later refill."""
    key, user = await reseller_key(shop, "bob@example.com", "10.00")
    done = await _completed_with_refill(shop, key, user, "https://x.com/untracked")

    monkeypatch.setattr(
        standard, "parse_refill", lambda data: parse_refill({"status": "success", "message": "ok"})
    )
    untracked = await call(shop.http, key, action="refill", order=done)
    monkeypatch.undo()
    assert await call(shop.http, key, action="refill_status", refill=untracked["refill"]) == {
        "status": "In progress"
    }
    async with pool.connection() as conn:  # a day later: its time is up, and it ends
        await conn.execute(
            "UPDATE order_refills SET next_poll_time = now() WHERE id = %s", (int(untracked["refill"]),)
        )
    await shop.orders.PollOrders(opb.PollOrdersRequest(), metadata=system_metadata())
    assert await call(shop.http, key, action="refill_status", refill=untracked["refill"]) == {
        "status": "Completed"
    }

    followed = await call(shop.http, key, action="refill", order=done)
    monkeypatch.setattr(standard, "parse_refill_status", lambda data: Rejected("Refill not found"))
    async with pool.connection() as conn:
        await conn.execute("UPDATE order_refills SET next_poll_time = now() WHERE next_poll_time IS NOT NULL")
    await shop.orders.PollOrders(opb.PollOrdersRequest(), metadata=system_metadata())
    monkeypatch.undo()
    assert await call(shop.http, key, action="refill_status", refill=followed["refill"]) == {
        "status": "Rejected"
    }

    async with pool.connection() as conn:  # what a process killed during the provider call leaves
        await conn.execute(
            "INSERT INTO order_refills (order_id, user_id, provider_id, status, upstream_refill_id, next_poll_time)"
            " SELECT id, user_id, provider_id, 'pending', '', now() - interval '1 second' FROM orders WHERE id = %s",
            (done,),
        )
    blocked = await call(shop.http, key, action="refill", order=done)
    assert blocked == {"error": "A refill of this order is already in progress"}
    await shop.orders.PollOrders(opb.PollOrdersRequest(), metadata=system_metadata())
    assert set(await call(shop.http, key, action="refill", order=done)) == {"refill"}


async def test_a_refill_the_provider_no_longer_knows_ends_rejected(
    shop: Shop, pool: Pool, demo_provider: DemoHandle
) -> None:
    """Asked about one refill, a provider answers one it does not know in the single form's canonical
    way, a top-level ``{"error": "Refill not found"}`` (PROTOCOL.md 3.5). The poller dropped that
    answer as it drops a provider that did not answer: the refill stayed "Pending" for ever, asked
    about on every tick, and refused every later refill of the order."""
    key, user = await reseller_key(shop, "cat@example.com", "10.00")
    done = await _completed_with_refill(shop, key, user, "https://x.com/forgotten")
    first = await call(shop.http, key, action="refill", order=done)
    async with pool.connection() as conn:  # the provider lost it (purged, or restored from a backup)
        await conn.execute(
            "UPDATE order_refills SET upstream_refill_id = '987654', next_poll_time = now() WHERE id = %s",
            (int(first["refill"]),),
        )
    asked = await demo_provider.requests("refill_status")
    await shop.orders.PollOrders(opb.PollOrdersRequest(), metadata=system_metadata())
    assert await demo_provider.requests("refill_status") == asked + 1
    assert await call(shop.http, key, action="refill_status", refill=first["refill"]) == {
        "status": "Rejected"
    }
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "SELECT status, message, next_poll_time FROM order_refills WHERE id = %s",
                (int(first["refill"]),),
            )
        ).fetchone()
    assert row == ("rejected", "Refill not found", None)
    again = await call(shop.http, key, action="refill", order=done)
    assert set(again) == {"refill"}
    assert again["refill"] != first["refill"]


async def test_a_refill_whose_provider_did_not_answer_waits_its_turn(
    shop: Shop, pool: Pool, demo_provider: DemoHandle
) -> None:
    """A refill whose provider did not answer (or is disabled) kept its place at the head of the
    line: asked about again on every tick, ahead of the rest, so once a tick's batch was full of
    them no other refill was ever polled. It is asked again later, as an order is."""
    key, user = await reseller_key(shop, "dan@example.com", "10.00")
    first = await call(
        shop.http,
        key,
        action="refill",
        order=await _completed_with_refill(shop, key, user, "https://x.com/r1"),
    )
    second = await call(
        shop.http,
        key,
        action="refill",
        order=await _completed_with_refill(shop, key, user, "https://x.com/r2"),
    )
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE order_refills SET next_poll_time = now() - interval '1 minute' WHERE id = %s",
            (int(first["refill"]),),
        )
        await conn.execute(
            "UPDATE order_refills SET next_poll_time = now() WHERE id = %s", (int(second["refill"]),)
        )
    await demo_provider.fault("http500", count=3, actions=["refill_status"])  # every try of one read
    one_at_a_time = opb.PollOrdersRequest(limit=1)
    await shop.orders.PollOrders(one_at_a_time, metadata=system_metadata())  # the first: no answer
    await shop.orders.PollOrders(one_at_a_time, metadata=system_metadata())  # the second's turn
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT id, status, next_poll_time > now() + interval '30 seconds' FROM order_refills"
            " WHERE id = ANY(%s)",
            ([int(first["refill"]), int(second["refill"])],),
        )
        rows = {int(r[0]): (r[1], r[2]) for r in await cursor.fetchall()}
    assert rows[int(second["refill"])][0] in ("in_progress", "completed")
    assert rows[int(first["refill"])] == ("pending", True)  # asked again in a minute


async def test_an_order_no_provider_reported_on_yet_has_its_whole_quantity_remaining(
    shop: Shop, pool: Pool
) -> None:
    """Pending, or sent and not polled yet: nothing was delivered, so `remains` is every unit (all
    runs), as providers and the standard panels report it. It said 0: delivered in full."""
    key, user = await reseller_key(shop, "ann@example.com", "10.00")
    added = await call(
        shop.http, key, action="add", service=shop.service_id("1"), link="https://x.com/whole",
        quantity=100, runs=3, interval=5,
    )  # fmt: skip
    order_id = str(added["order"])

    async def shown() -> tuple[str, str, str]:
        status = await call(shop.http, key, action="status", order=order_id)
        view = (await shop.http.get(f"/api/v1/dashboard/orders/{order_id}", headers=user)).json()
        return status["status"], status["remains"], view["remains"]

    assert await shown() == ("Pending", "300", "300")
    await shop.submit(order_id)
    assert await shown() == ("In progress", "300", "300")
    await shop.settle(order_id, user)
    assert await shown() == ("Completed", "0", "0")


async def test_services_never_advertises_a_dripfeed_that_add_refuses(shop: Shop, pool: Pool) -> None:
    """A provider listing `"dripfeed": true` on a package, a comment list or a subscription was
    synced as is, and `services` advertised drip-feed there that `add` then refused ("this service
    does not support drip-feed"): a client that trusts the flag sends runs and gets an error. The
    flag shown is what `add` takes; the provider's own flag stays apart (`upstreamDripfeed`)."""
    control = shop.demo.control  # type: ignore[attr-defined]
    for upstream in ("3", "5", "17"):  # Package, Custom Comments, Subscriptions
        assert (
            await control.put(f"/control/services/{upstream}", json={"dripfeed": True})
        ).status_code == 200
    await run_sync(shop.channel, shop.provider_id)  # type: ignore[attr-defined]
    key, _ = await reseller_key(shop, "ann@example.com", "100.00")
    listed = {str(s["service"]): s for s in await call(shop.http, key, action="services")}
    package, comments, auto = (shop.service_id(u) for u in ("3", "5", "17"))
    assert [listed[s]["dripfeed"] for s in (package, comments, auto)] == [False, False, False]
    assert listed[shop.service_id("1")]["dripfeed"] is True  # a quantity type keeps it
    user = bearer((await register(shop.http, "bob@example.com"))["token"])
    shown = (await shop.http.get(f"/api/v1/public/services/{package}", headers=user)).json()
    assert shown["dripfeed"] is False
    # Whatever `services` advertises, `add` takes: runs on the package are refused, as before.
    refused = await call(
        shop.http, key, action="add", service=package, link="https://x.com/p", runs=2, interval=5
    )
    assert "error" in refused


async def test_order_keys_longer_than_200_characters_are_refused_not_cut(shop: Shop, pool: Pool) -> None:
    """The order routes cut a `requestId` (and the reseller endpoint its Idempotency-Key) to 200
    characters: two orders whose keys differ only after that were taken for one, and the second
    customer's order silently answered with the first."""
    key, user = await reseller_key(shop, "ann@example.com", "5.00")
    likes = shop.service_id("2")
    stem = "k" * 200
    first = await shop.order(user, serviceId=likes, link="https://x.com/k1", quantity=1000, requestId=stem)
    assert first.status_code == 200, first.text
    longer = await shop.order(
        user, serviceId=likes, link="https://x.com/k1", quantity=1000, requestId=stem + "2"
    )
    assert_error(longer, 400, "INVALID_ARGUMENT")
    mass = await shop.http.post(
        "/api/v1/dashboard/orders/mass",
        json={"lines": f"{likes} | https://x.com/k2 | 1000", "requestId": stem + "3"},
        headers=user,
    )
    assert_error(mass, 400, "INVALID_ARGUMENT")
    reply = await shop.http.post(
        URL,
        data={"key": key, "action": "add", "service": likes, "link": "https://x.com/k1", "quantity": "1000"},
        headers={"Idempotency-Key": stem + "4"},
    )
    assert reply.status_code == 200
    assert set(reply.json()) == {"error"}, reply.text
    async with pool.connection() as conn:
        placed = await (await conn.execute("SELECT idempotency_key FROM orders")).fetchall()
    assert placed == [(stem,)]


async def test_a_cancel_the_order_outran_is_not_reported_done(shop: Shop, demo_provider: DemoHandle) -> None:
    """The order completed while its cancel's provider call was out: the reseller answer said
    ``"cancel": "1"`` (the cancel taken) for an order charged in full, which a client takes as a
    refund on the way."""
    key, user = await reseller_key(shop, "ann@example.com", "10.00")
    followers = shop.service_id("1")  # takes cancels
    order = (
        await call(shop.http, key, action="add", service=followers, link="https://x.com/done", quantity=100)
    )["order"]
    await shop.submit(str(order))
    await demo_provider.fault("latency", count=1, actions=["cancel"], delay_s=1.0)
    cancel = asyncio.create_task(call(shop.http, key, action="cancel", order=order))
    await asyncio.sleep(0.2)
    assert (await shop.settle(str(order), user))["status"] == "ORDER_STATUS_COMPLETED"
    assert (await cancel) == {"error": "Order is already completed"}
    assert (await call(shop.http, key, action="status", order=order))["status"] == "Completed"
    assert (await shop.verify()).ok
