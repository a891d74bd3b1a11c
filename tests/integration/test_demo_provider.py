"""The demo provider speaks the standard protocol exactly as PROTOCOL.md describes, over real HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import re
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sanic import HTTPResponse, Request, Sanic

from demo.provider.catalog import CATALOG, SERVICE_TYPES
from ops.embedded import free_port
from tests.fix_demo import ORDER_EXAMPLES, DemoFactory, DemoHandle, start_demo

pytest_plugins = ["tests.fix_demo"]
pytestmark = pytest.mark.integration

MONEY = re.compile(r"^\d+\.\d{2,6}$")
SERVICE_KEYS = ["service", "name", "type", "rate", "min", "max", "dripfeed", "refill", "cancel", "category"]


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5, follow_redirects=False) as client:
        yield client


@pytest.fixture(scope="module")
async def shared() -> AsyncIterator[DemoHandle]:
    """One demo for the tests that only read or are refused (no order is ever created on it)."""
    handle = await start_demo()
    yield handle
    assert await handle.orders() == []
    await handle.stop()


async def call(client: httpx.AsyncClient, demo: DemoHandle, action: str, **params: str) -> Any:
    """A form POST like the canonical PHP client; asserts the PP transport rules on every reply."""
    response = await client.post(demo.api_url, data={"key": demo.api_key, "action": action, **params})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert not response.content.startswith(b"\xef\xbb\xbf")
    return response.json()


def assert_success(body: Any) -> None:
    if isinstance(body, dict):
        assert "error" not in body, body


async def wait_for_status(
    client: httpx.AsyncClient, demo: DemoHandle, order_id: int, wanted: str
) -> dict[str, str]:
    for _ in range(100):
        body: dict[str, str] = await call(client, demo, "status", order=str(order_id))
        if body["status"] == wanted:
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"order {order_id} never reached {wanted}: {body}")


# --- services, transport ---------------------------------------------------------------------------


async def test_services_have_the_canonical_shape_and_every_type(
    shared: DemoHandle, api: httpx.AsyncClient
) -> None:
    services = await call(api, shared, "services")
    assert isinstance(services, list)
    assert len(services) == len(CATALOG)
    for entry in services:
        assert list(entry) == SERVICE_KEYS
        assert type(entry["service"]) is int
        assert isinstance(entry["name"], str)
        assert entry["name"]
        assert entry["type"] in SERVICE_TYPES
        assert MONEY.match(entry["rate"]), entry
        assert entry["min"].isdigit()
        assert entry["max"].isdigit()
        assert int(entry["min"]) <= int(entry["max"])
        for flag in ("dripfeed", "refill", "cancel"):
            assert type(entry[flag]) is bool
    assert {e["type"] for e in services} == set(SERVICE_TYPES)
    assert any(e["refill"] for e in services)
    assert any(e["cancel"] for e in services)
    assert any(e["dripfeed"] for e in services)
    first = services[0]
    assert (first["service"], first["rate"], first["min"], first["max"]) == (1, "0.90", "50", "10000")


@pytest.mark.parametrize("style", ["form", "json", "get-query", "post-query", "json-list-ids"])
@pytest.mark.parametrize("slash", ["", "/"])
async def test_form_json_and_query_parameters_with_and_without_slash(
    shared: DemoHandle, api: httpx.AsyncClient, style: str, slash: str
) -> None:
    url = shared.api_url + slash
    params = {"key": shared.api_key, "action": "balance"}
    if style == "form":
        response = await api.post(url, data=params)
    elif style == "json":
        response = await api.post(url, json=params)
    elif style == "get-query":
        response = await api.get(url, params=params)
    elif style == "post-query":
        response = await api.post(url, params=params)
    else:  # JSON bodies may carry id lists as arrays
        response = await api.post(url, json={**params, "action": "status", "orders": [1, 2]})
        assert response.status_code == 200
        assert response.json() == {"1": {"error": "Incorrect order ID"}, "2": {"error": "Incorrect order ID"}}
        return
    assert response.status_code == 200  # never a redirect
    assert response.json() == {"balance": "1000.00", "currency": "USD"}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"key": "wrong", "action": "balance"}, "Invalid API key"),
        ({"action": "balance"}, "Invalid API key"),
        ({"key": "wrong", "action": "nonsense"}, "Invalid API key"),
        ({"key": "KEY", "action": "nonsense"}, "Incorrect request"),
        ({"key": "KEY"}, "Incorrect request"),
        (
            {"key": "KEY", "action": "add", "service": "999", "link": "https://x.com/a", "quantity": "100"},
            "Incorrect service ID",
        ),
        (
            {"key": "KEY", "action": "add", "link": "https://x.com/a", "quantity": "100"},
            "Incorrect service ID",
        ),
        (
            {"key": "KEY", "action": "add", "service": "1", "link": "https://x.com/a", "quantity": "49"},
            "Quantity less than minimal 50",
        ),
        (
            {"key": "KEY", "action": "add", "service": "1", "link": "https://x.com/a", "quantity": "10001"},
            "Quantity more than maximum 10000",
        ),
        (
            {"key": "KEY", "action": "add", "service": "1", "link": "https://x.com/a", "quantity": "ten"},
            "Incorrect quantity",
        ),
        ({"key": "KEY", "action": "add", "service": "1", "link": "https://x.com/a"}, "Quantity is required"),
        (
            {"key": "KEY", "action": "add", "service": "1", "link": "not a link", "quantity": "100"},
            "Incorrect link",
        ),
        ({"key": "KEY", "action": "add", "service": "1", "quantity": "100"}, "Incorrect link"),
        ({"key": "KEY", "action": "status", "order": "12345"}, "Incorrect order ID"),
        ({"key": "KEY", "action": "status"}, "Incorrect order ID"),
        ({"key": "KEY", "action": "refill", "order": "12345"}, "Incorrect order ID"),
        ({"key": "KEY", "action": "refill_status", "refill": "12345"}, "Refill not found"),
        ({"key": "KEY", "action": "cancel", "order": "12345"}, "Incorrect order ID"),
        (
            {"key": "KEY", "action": "status", "orders": ",".join(str(i) for i in range(1, 102))},
            "Too many IDs: at most 100 per request",
        ),
    ],
)
async def test_errors_are_http_200_with_the_pp_message(
    shared: DemoHandle, api: httpx.AsyncClient, params: dict[str, str], message: str
) -> None:
    if params.get("key") == "KEY":
        params = {**params, "key": shared.api_key}
    response = await api.post(shared.api_url, data=params)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.json() == {"error": message}


async def test_unreadable_json_body_is_incorrect_request(shared: DemoHandle, api: httpx.AsyncClient) -> None:
    response = await api.post(
        shared.api_url,
        content=b'{"key": "demo-key", "action": ',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200
    assert response.json() == {"error": "Incorrect request"}


# --- add -------------------------------------------------------------------------------------------


async def test_add_accepts_every_service_type_and_charges_the_balance(
    demo_provider: DemoHandle, api: httpx.AsyncClient
) -> None:
    ids: dict[str, int] = {}
    for service_type, (service_id, params) in ORDER_EXAMPLES.items():
        body = await call(
            api, demo_provider, "add", service=str(service_id), **params, unknown_extra="ignored"
        )
        assert list(body) == ["order"], (service_type, body)
        assert type(body["order"]) is int
        ids[service_type] = body["order"]
    assert set(ids) == set(SERVICE_TYPES)
    orders = {o["order"]: o for o in await demo_provider.orders()}
    assert len(orders) == len(SERVICE_TYPES)
    # quantities as each type defines them
    assert orders[ids["Custom Comments"]]["quantity"] == 10
    assert orders[ids["Mentions Custom List"]]["quantity"] == 10
    assert orders[ids["Comment Replies"]]["quantity"] == 10
    assert orders[ids["Package"]]["quantity"] == 1
    assert orders[ids["Subscriptions"]]["quantity"] == 300  # max * posts
    assert orders[ids["Subscriptions"]]["link"] is None
    assert orders[ids["Subscriptions"]]["details"]["delay"] == "30"
    assert orders[ids["SEO"]]["details"]["keywords"] == "smm panel\nbuy followers"
    assert orders[ids["Web Traffic"]]["details"]["google_keyword"] == "smm panel"
    # charges: rate * quantity / 1000, a package its rate once
    assert orders[ids["Default"]]["charge"] == "0.09"
    assert orders[ids["Package"]]["charge"] == "1.50"
    assert orders[ids["Custom Comments"]]["charge"] == "0.08"
    assert orders[ids["Comment Likes"]]["charge"] == "0.024"
    total = sum(Decimal(o["charge"]) for o in orders.values())
    balance = await call(api, demo_provider, "balance")
    assert Decimal(balance["balance"]) == Decimal(1000) - total


async def test_drip_feed_multiplies_the_quantity(demo_provider: DemoHandle, api: httpx.AsyncClient) -> None:
    body = await call(
        api,
        demo_provider,
        "add",
        service="2",
        link="https://x.com/p/1",
        quantity="20",
        runs="3",
        interval="5",
    )
    [order] = await demo_provider.orders()
    assert order["order"] == body["order"]
    assert (order["quantity"], order["runs"], order["interval"], order["charge"]) == (60, 3, 5, "0.015")


@pytest.mark.parametrize(
    ("service_type", "change", "message"),
    [
        ("SEO", {"keywords": ""}, "Keywords field is required"),
        ("Custom Comments", {"comments": "\n\n"}, "Comments field is required"),
        ("Custom Comments", {"comments": "only one"}, "Quantity less than minimal 10"),
        ("Custom Comments Package", {"comments": ""}, "Comments field is required"),
        ("Mentions", {"usernames": ""}, "Usernames field is required"),
        ("Mentions with Hashtags", {"hashtags": ""}, "Hashtags field is required"),
        ("Mentions Custom List", {"usernames": "a\nb"}, "Quantity less than minimal 10"),
        ("Mentions Hashtag", {"hashtag": ""}, "Hashtag field is required"),
        ("Mentions User Followers", {"username": ""}, "Username field is required"),
        ("Mentions Media Likers", {"media": ""}, "Media field is required"),
        ("Comment Likes", {"username": ""}, "Username field is required"),
        ("Comment Replies", {"username": ""}, "Username field is required"),
        ("Poll", {"answer_number": "0"}, "Incorrect answer number"),
        ("Poll", {"answer_number": "two"}, "Incorrect answer number"),
        ("Invites from Groups", {"groups": ""}, "Groups field is required"),
        ("Subscriptions", {"min": "200", "max": "100"}, "Min cannot be higher than Max"),
        ("Subscriptions", {"delay": "7"}, "Incorrect delay"),
        ("Subscriptions", {"delay": ""}, "Incorrect delay"),
        ("Subscriptions", {"expiry": "2030-12-31"}, "Incorrect expiry date"),
        ("Subscriptions", {"max": "9000"}, "Quantity more than maximum 5000"),
        ("Web Traffic", {"device": "9"}, "Incorrect device"),
        ("Web Traffic", {"type_of_traffic": "4"}, "Incorrect type of traffic"),
        ("Web Traffic", {"google_keyword": ""}, "Google keyword field is required"),
        ("Web Traffic", {"type_of_traffic": "2", "referring_url": ""}, "Incorrect referring URL"),
        ("Web Traffic", {"country": "U5"}, "Incorrect country"),
        ("Package", {"link": ""}, "Incorrect link"),
        ("Subscriptions", {"username": ""}, "Username field is required"),
    ],
)
async def test_add_validates_each_type(
    shared: DemoHandle, api: httpx.AsyncClient, service_type: str, change: dict[str, str], message: str
) -> None:
    service_id, params = ORDER_EXAMPLES[service_type]
    body = await call(api, shared, "add", service=str(service_id), **{**params, **change})
    assert body == {"error": message}
    assert await shared.orders() == []


@pytest.mark.parametrize(
    ("service_id", "extra", "message"),
    [
        ("4", {"runs": "3", "interval": "5"}, "This services does not support Dripfeed feature!"),
        ("1", {"runs": "3"}, "Interval time is required"),
        ("1", {"interval": "5"}, "Runs is required"),
        ("1", {"runs": "1", "interval": "5"}, "Incorrect runs"),
        ("1", {"runs": "3", "interval": "0"}, "Incorrect interval"),
        ("1", {"runs": "200", "interval": "5"}, "Quantity more than maximum 10000"),
    ],
)
async def test_add_validates_drip_feed(
    shared: DemoHandle, api: httpx.AsyncClient, service_id: str, extra: dict[str, str], message: str
) -> None:
    params = {"link": "https://x.com/p/1", "quantity": "100", **extra}
    if service_id == "4":
        params["keywords"] = "k"
    assert await call(api, shared, "add", service=service_id, **params) == {"error": message}


async def test_not_enough_funds(demo_provider: DemoHandle, api: httpx.AsyncClient) -> None:
    await demo_provider.set_balance("0.05")
    body = await call(
        api, demo_provider, "add", service="1", link="https://x.com/a", quantity="100"
    )  # costs 0.09
    assert body == {"error": "Not enough funds on balance"}
    assert await call(api, demo_provider, "balance") == {"balance": "0.05", "currency": "USD"}
    body = await call(
        api, demo_provider, "add", service="1", link="https://x.com/a", quantity="50"
    )  # costs 0.045
    assert_success(body)
    assert await call(api, demo_provider, "balance") == {"balance": "0.005", "currency": "USD"}


async def test_duplicate_active_link_when_configured(demo_provider_factory: DemoFactory) -> None:
    demo = await demo_provider_factory(reject_duplicate_links=True, step_s=10.0)
    async with httpx.AsyncClient(timeout=5) as client:
        first = await call(client, demo, "add", service="1", link="https://x.com/same", quantity="100")
        assert_success(first)
        second = await call(client, demo, "add", service="1", link="https://x.com/same", quantity="100")
    assert second == {
        "error": "You have active order with this link. Please wait until order being completed."
    }


# --- status and progression ------------------------------------------------------------------------


async def test_orders_progress_to_completed_partial_and_canceled(
    demo_provider_factory: DemoFactory, api: httpx.AsyncClient
) -> None:
    demo = await demo_provider_factory(step_s=0.15)  # long enough to see Pending right after add
    ids = {}
    for ending in ("completed", "partial", "cancel"):
        body = await call(api, demo, "add", service="1", link=f"https://x.com/{ending}-post", quantity="300")
        ids[ending] = body["order"]
    pending = await call(api, demo, "status", order=str(ids["completed"]))
    assert pending == {
        "charge": "0.27",
        "start_count": "0",
        "status": "Pending",
        "remains": "300",
        "currency": "USD",
    }
    in_progress = await wait_for_status(api, demo, ids["completed"], "In progress")
    assert int(in_progress["remains"]) in (200, 100)
    assert int(in_progress["start_count"]) > 0
    completed = await wait_for_status(api, demo, ids["completed"], "Completed")
    assert completed["remains"] == "0"
    assert completed["charge"] == "0.27"
    assert completed["start_count"] == in_progress["start_count"]
    partial = await wait_for_status(api, demo, ids["partial"], "Partial")
    assert partial["remains"] == "100"
    assert partial["charge"] == "0.18"  # a third refunded
    canceled = await wait_for_status(api, demo, ids["cancel"], "Canceled")
    assert (canceled["remains"], canceled["charge"]) == ("300", "0.00")
    for body in (completed, partial, canceled):
        assert all(isinstance(v, str) for v in body.values())
    balance = await call(api, demo, "balance")
    assert balance["balance"] == "999.55"  # 1000 - 0.27 - 0.18


async def test_multi_status_is_an_object_keyed_by_id_with_errors_inside(
    demo_provider: DemoHandle, api: httpx.AsyncClient
) -> None:
    first = (await call(api, demo_provider, "add", service="1", link="https://x.com/a", quantity="100"))[
        "order"
    ]
    second = (await call(api, demo_provider, "add", service="2", link="https://x.com/b", quantity="100"))[
        "order"
    ]
    body = await call(api, demo_provider, "status", orders=f"{first},999,{second},abc")
    assert list(body) == [str(first), "999", str(second), "abc"]
    assert body["999"] == {"error": "Incorrect order ID"}
    assert body["abc"] == {"error": "Incorrect order ID"}
    assert set(body[str(first)]) == {"charge", "start_count", "status", "remains", "currency"}
    assert body[str(second)]["status"] in ("Pending", "In progress", "Completed")


async def test_orders_of_another_key_are_not_visible_and_currency_is_configurable(
    demo_provider_factory: DemoFactory,
) -> None:
    demo = await demo_provider_factory(api_keys=("key-one", "key-two"), currency="EUR")
    async with httpx.AsyncClient(timeout=5) as client:
        order = (await call(client, demo, "add", service="1", link="https://x.com/a", quantity="100"))[
            "order"
        ]
        assert (await call(client, demo, "status", order=str(order)))["currency"] == "EUR"
        other = await client.post(
            demo.api_url, data={"key": "key-two", "action": "status", "order": str(order)}
        )
        assert other.json() == {"error": "Incorrect order ID"}
        balance = await client.post(demo.api_url, data={"key": "key-two", "action": "balance"})
        assert balance.json() == {"balance": "1000.00", "currency": "EUR"}


# --- refill ----------------------------------------------------------------------------------------


async def test_refill_single_and_list_forms(demo_provider: DemoHandle, api: httpx.AsyncClient) -> None:
    good = (await call(api, demo_provider, "add", service="1", link="https://x.com/good", quantity="100"))[
        "order"
    ]
    bad = (await call(api, demo_provider, "add", service="1", link="https://x.com/norefill", quantity="100"))[
        "order"
    ]
    no_refill = (await call(api, demo_provider, "add", service="2", link="https://x.com/c", quantity="100"))[
        "order"
    ]
    assert await call(api, demo_provider, "refill", order=str(good)) == {
        "error": "The order is not completed"
    }
    await wait_for_status(api, demo_provider, good, "Completed")
    await wait_for_status(api, demo_provider, bad, "Completed")
    await wait_for_status(api, demo_provider, no_refill, "Completed")

    single = await call(api, demo_provider, "refill", order=str(good))
    assert single == {"refill": "1"}  # a string in the single form
    assert await call(api, demo_provider, "refill", order=str(no_refill)) == {
        "error": "Refill is disabled for this service"
    }
    listed = await call(api, demo_provider, "refill", orders=f"{bad},{no_refill},777")
    assert listed == [
        {"order": bad, "refill": 2},
        {"order": no_refill, "refill": {"error": "Refill is disabled for this service"}},
        {"order": 777, "refill": {"error": "Incorrect order ID"}},
    ]

    assert await call(api, demo_provider, "refill_status", refill="1") in (
        {"status": "Pending"},
        {"status": "In progress"},
    )
    for _ in range(100):
        states = await call(api, demo_provider, "refill_status", refills="1,2,404")
        if states[0]["status"] == "Completed" and states[1]["status"] == "Rejected":
            break
        assert states[0]["status"] in ("Pending", "In progress", "Completed")
        assert states[1]["status"] in ("Pending", "In progress", "Rejected")
        await asyncio.sleep(0.02)
    assert states == [
        {"refill": 1, "status": "Completed"},
        {"refill": 2, "status": "Rejected"},
        {"refill": 404, "status": {"error": "Refill not found"}},
    ]
    assert await call(api, demo_provider, "refill_status", refill="1") == {"status": "Completed"}


# --- cancel ----------------------------------------------------------------------------------------


async def test_cancel_list_and_single_forms(demo_provider_factory: DemoFactory) -> None:
    demo = await demo_provider_factory(step_s=0.3)
    async with httpx.AsyncClient(timeout=5) as client:
        cancellable = (await call(client, demo, "add", service="1", link="https://x.com/a", quantity="1000"))[
            "order"
        ]
        not_cancellable = (
            await call(client, demo, "add", service="4", link="https://x.com/b", quantity="100", keywords="k")
        )["order"]
        single = (await call(client, demo, "add", service="2", link="https://x.com/c", quantity="100"))[
            "order"
        ]
        before = Decimal((await call(client, demo, "balance"))["balance"])

        body = await call(client, demo, "cancel", orders=f"{cancellable},{not_cancellable},31337")
        assert body == [
            {"order": cancellable, "cancel": 1},
            {"order": not_cancellable, "cancel": {"error": "Order cannot be cancelled"}},
            {"order": 31337, "cancel": {"error": "Incorrect order ID"}},
        ]
        status = await call(client, demo, "status", order=str(cancellable))
        assert (status["status"], status["remains"], status["charge"]) == ("Canceled", "1000", "0.00")
        after = Decimal((await call(client, demo, "balance"))["balance"])
        assert after - before == Decimal("0.90")  # fully refunded

        assert await call(client, demo, "cancel", order=str(single)) == {"cancel": "1"}
        again = await call(client, demo, "cancel", orders=str(single))
        assert again == [{"order": single, "cancel": {"error": "Order can no longer be canceled"}}]


async def test_cancel_in_progress_becomes_partial(demo_provider_factory: DemoFactory) -> None:
    demo = await demo_provider_factory(step_s=0.15)
    async with httpx.AsyncClient(timeout=5) as client:
        order = (await call(client, demo, "add", service="1", link="https://x.com/a", quantity="300"))[
            "order"
        ]
        await wait_for_status(client, demo, order, "In progress")
        assert await call(client, demo, "cancel", orders=str(order)) == [{"order": order, "cancel": 1}]
        status = await call(client, demo, "status", order=str(order))
    assert status["status"] == "Partial"
    assert status["remains"] == "200"
    assert status["charge"] == "0.09"  # 0.27 for 300, two thirds refunded


# --- faults ----------------------------------------------------------------------------------------


async def test_faults_misbehave_for_the_next_n_matching_requests(
    demo_provider: DemoHandle, api: httpx.AsyncClient
) -> None:
    form = {"key": demo_provider.api_key, "action": "balance"}
    await demo_provider.fault("http500", count=2, actions=["balance"])
    services = await api.post(demo_provider.api_url, data={**form, "action": "services"})
    assert services.status_code == 200  # other actions untouched
    for _ in range(2):
        response = await api.post(demo_provider.api_url, data=form)
        assert response.status_code == 500
        assert response.headers["content-type"].startswith("text/html")
    assert (await api.post(demo_provider.api_url, data=form)).status_code == 200

    await demo_provider.fault("error_body", message="Maintenance")
    assert (await api.post(demo_provider.api_url, data=form)).json() == {"error": "Maintenance"}

    await demo_provider.fault("malformed_json")
    response = await api.post(demo_provider.api_url, data=form)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)

    await demo_provider.fault("html")
    response = await api.post(demo_provider.api_url, data=form)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.startswith("<!DOCTYPE html>")

    await demo_provider.fault("latency", delay_s=0.2)
    started = time.perf_counter()
    response = await api.post(demo_provider.api_url, data=form)
    assert time.perf_counter() - started >= 0.2
    assert response.json() == {"balance": "1000.00", "currency": "USD"}

    await demo_provider.fault("timeout")
    with pytest.raises(httpx.ReadTimeout):
        await api.post(demo_provider.api_url, data=form, timeout=0.3)
    stats = await demo_provider.stats()
    assert stats["faults"] == []
    assert stats["requests"]["balance"] == 8
    assert stats["requests"]["services"] == 1


async def test_fault_processing_order_exists_behind_a_500_but_not_behind_an_error_body(
    demo_provider: DemoHandle, api: httpx.AsyncClient
) -> None:
    await demo_provider.fault("http500", actions=["add"])
    response = await api.post(
        demo_provider.api_url,
        data={
            "key": demo_provider.api_key,
            "action": "add",
            "service": "1",
            "link": "https://x.com/a",
            "quantity": "100",
        },
    )
    assert response.status_code == 500
    assert len(await demo_provider.orders()) == 1  # created upstream all the same
    await demo_provider.fault("error_body", actions=["add"], message="Service is paused")
    body = await call(api, demo_provider, "add", service="1", link="https://x.com/b", quantity="100")
    assert body == {"error": "Service is paused"}
    assert len(await demo_provider.orders()) == 1


async def test_fault_control_validates_clears_and_wants_the_token(
    demo_provider: DemoHandle, api: httpx.AsyncClient
) -> None:
    bad = await demo_provider.control.post("/control/faults", json={"kind": "meteor"})
    assert bad.status_code == 400
    assert "kind must be one of" in bad.json()["error"]
    assert (
        await demo_provider.control.post("/control/faults", json={"kind": "html", "count": 0})
    ).status_code == 400
    await demo_provider.fault("html", count=5)
    await demo_provider.clear_faults()
    assert (await demo_provider.stats())["faults"] == []
    assert (await call(api, demo_provider, "balance"))["currency"] == "USD"
    for method, path in [
        ("POST", "/control/faults"),
        ("DELETE", "/control/faults"),
        ("GET", "/control/orders"),
        ("GET", "/control/stats"),
    ]:
        refused = await api.request(method, demo_provider.base_url + path, json={"kind": "html"})
        assert refused.status_code == 403, path
        wrong = await api.request(method, demo_provider.base_url + path, headers={"X-Control-Token": "nope"})
        assert wrong.status_code == 403, path


# --- webhooks --------------------------------------------------------------------------------------

_receivers = itertools.count()


async def test_status_webhooks_are_signed(demo_provider_factory: DemoFactory) -> None:
    received: list[tuple[bytes, str]] = []
    receiver = Sanic(f"webhook-receiver-{next(_receivers)}", configure_logging=False)
    receiver.config.TOUCHUP = False

    async def hook(request: Request) -> HTTPResponse:
        received.append((request.body, request.headers.get("x-smm-signature", "")))
        return HTTPResponse(status=204)

    receiver.add_route(hook, "/hook", methods=["POST"])
    port = free_port()
    server: Any = await receiver.create_server(
        host="127.0.0.1", port=port, return_asyncio_server=True, access_log=False
    )
    assert server is not None
    await server.startup()
    await server.before_start()
    await server.after_start()
    secret = "whsec-demo-secret"
    try:
        demo = await demo_provider_factory(webhook_url=f"http://127.0.0.1:{port}/hook", webhook_secret=secret)
        async with httpx.AsyncClient(timeout=5) as client:
            order = (
                await call(client, demo, "add", service="1", link="https://x.com/partial", quantity="300")
            )["order"]
        for _ in range(100):
            if received and json.loads(received[-1][0])["status"] == "Partial":
                break
            await asyncio.sleep(0.02)
    finally:
        server.close()
        await server.wait_closed()
        await server.after_stop()
    assert received, "no webhook arrived"
    statuses = []
    for body, header in received:
        match = re.fullmatch(r"t=(\d+),v1=([0-9a-f]{64})", header)
        assert match, header
        timestamp, signature = match.groups()
        expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(signature, expected)
        assert abs(int(timestamp) - time.time()) < 60
        payload = json.loads(body)
        assert set(payload) == {"order", "status", "start_count", "remains", "charge"}
        assert payload["order"] == order
        statuses.append(payload["status"])
    assert statuses[0] == "In progress"
    assert statuses[-1] == "Partial"
    final = json.loads(received[-1][0])
    assert (final["remains"], final["charge"]) == ("100", "0.18")
    tampered = hmac.new(b"wrong", b"x", hashlib.sha256).hexdigest()
    assert tampered not in {h for _, h in received}
    assert (await demo.stats())["webhooks"]["delivered"] == len(received)
