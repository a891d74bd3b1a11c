"""The reseller endpoint's remaining gaps with clients in the wild (../shared/PROTOCOL.md): only API
keys are keys, PHP's array syntax for the id lists, and what a canceled order reports."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest

from tests.fix_shop import Shop
from tests.integration.test_reseller import URL, call, reseller_key
from tests.integration.test_reseller_protocol import assert_protocol_reply

pytestmark = pytest.mark.integration


# --- only API keys are keys ----------------------------------------------------------------------


async def test_a_session_token_as_key_is_an_invalid_api_key_as_an_unknown_key_is(shop: Shop) -> None:
    """A sign-in session's token worked as the reseller ``key``: sessions are the web front end's,
    and a token in a form body or query string ends up in scripts and logs."""
    key, user = await reseller_key(shop, "ann@example.com", "10.00")
    session = user["Authorization"].removeprefix("Bearer ")
    unknown = "smm_s_" + "x" * 43  # shaped like a session's token, but none
    followers = shop.service_id("1")
    for params in (
        {"action": "balance"},
        {"action": "services"},
        {"action": "status", "order": "1"},
        {"action": "add", "service": followers, "link": "https://x.com/s", "quantity": "100"},
    ):
        as_session = await shop.http.post(URL, data={"key": session, **params})
        as_unknown = await shop.http.post(URL, data={"key": unknown, **params})
        assert as_session.content == as_unknown.content == b'{"error":"Invalid API key"}', params
        by_get = await shop.http.get(URL, params={"key": session, **params})
        assert by_get.content == b'{"error":"Invalid API key"}', params
    assert await call(shop.http, key, action="balance") == {"balance": "10.00", "currency": "USD"}
    # The JSON API still takes both: the session (the web front end) and the key (scripts).
    for credential in (session, key):
        wallet = await shop.http.get(
            "/api/v1/dashboard/wallet", headers={"Authorization": f"Bearer {credential}"}
        )
        assert (wallet.status_code, wallet.json()["available"]) == (200, "10.00")


# --- PHP's array syntax for id lists -------------------------------------------------------------


def php_list(name: str, ids: list[Any], *, indexed: bool) -> list[tuple[str, str]]:
    """What PHP's http_build_query makes of an array (``orders[0]=1&orders[1]=2``), or the
    ``orders[]=1&orders[]=2`` that scripts write by hand."""
    return [(f"{name}[{i if indexed else ''}]", str(v)) for i, v in enumerate(ids)]


def form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "content": urlencode(pairs).encode(),
        "headers": {"content-type": "application/x-www-form-urlencoded"},
    }


@pytest.mark.parametrize("indexed", [False, True], ids=["orders[]", "orders[0]"])
async def test_php_array_id_lists_read_as_the_comma_separated_list(shop: Shop, indexed: bool) -> None:
    key, _ = await reseller_key(shop, "ann@example.com", "10.00")
    followers = shop.service_id("1")
    placed = [
        (
            await call(
                shop.http, key, action="add", service=followers, link=f"https://x.com/php{n}", quantity=100
            )
        )["order"]
        for n in range(2)
    ]
    head = [("key", key), ("action", "status")]
    by_commas = await call(shop.http, key, action="status", orders=f"{placed[0]},{placed[1]},999999")
    assert set(by_commas) == {str(placed[0]), str(placed[1]), "999999"}
    as_form = assert_protocol_reply(
        await shop.http.post(URL, **form(head + php_list("orders", [*placed, 999999], indexed=indexed)))
    )
    as_query = assert_protocol_reply(
        await shop.http.get(
            URL + "?" + urlencode(head + php_list("orders", [*placed, 999999], indexed=indexed))
        )
    )
    assert as_form == as_query == by_commas

    refill = [("key", key), ("action", "refill"), *php_list("orders", [999998, "abc"], indexed=indexed)]
    assert assert_protocol_reply(await shop.http.post(URL, **form(refill))) == [
        {"order": 999998, "refill": {"error": "Incorrect order ID"}},
        {"order": "abc", "refill": {"error": "Incorrect order ID"}},
    ]
    refills = [("key", key), ("action", "refill_status"), *php_list("refills", [777, 778], indexed=indexed)]
    assert assert_protocol_reply(await shop.http.post(URL, **form(refills))) == [
        {"refill": 777, "status": {"error": "Refill not found"}},
        {"refill": 778, "status": {"error": "Refill not found"}},
    ]
    cancel = [("key", key), ("action", "cancel"), *php_list("orders", [placed[0], 999999], indexed=indexed)]
    assert assert_protocol_reply(await shop.http.post(URL, **form(cancel))) == [
        {"order": placed[0], "cancel": 1},
        {"order": 999999, "cancel": {"error": "Incorrect order ID"}},
    ]
    assert (await call(shop.http, key, action="status", order=placed[0]))["status"] == "Canceled"
    assert (await call(shop.http, key, action="status", order=placed[1]))[
        "status"
    ] == "Pending"  # not in the list

    # The cap holds whatever the spelling.
    too_many = [("key", key), ("action", "status"), *php_list("orders", list(range(1, 102)), indexed=indexed)]
    assert assert_protocol_reply(await shop.http.post(URL, **form(too_many))) == {
        "error": "Too many IDs: at most 100 per request"
    }
    hundred = [("key", key), ("action", "status"), *php_list("orders", list(range(1, 101)), indexed=indexed)]
    assert len(assert_protocol_reply(await shop.http.post(URL, **form(hundred)))) == 100


async def test_php_array_lists_follow_phps_own_reading(shop: Shop) -> None:
    """As $_REQUEST has it: a repeated index keeps its place with the later value, ``[]`` takes the
    next index, a later plain ``orders`` replaces the array, and the body's over the query's."""
    key, _ = await reseller_key(shop, "ann@example.com", "10.00")
    ask = [("key", key), ("action", "refill_status")]
    cases: list[tuple[list[tuple[str, str]], list[int]]] = [
        ([("refills[0]", "1"), ("refills[1]", "2"), ("refills[0]", "3")], [3, 2]),
        ([("refills[5]", "1"), ("refills[]", "2"), ("refills[6]", "3")], [1, 3]),
        ([("refills[]", "1"), ("refills", "4,5")], [4, 5]),
        ([("refills", "4,5"), ("refills[]", "6")], [6]),
    ]
    for pairs, expected in cases:
        answer = assert_protocol_reply(await shop.http.post(URL, **form(ask + pairs)))
        assert [entry["refill"] for entry in answer] == expected, pairs
    mixed = await shop.http.post(
        URL + "?" + urlencode([("refills[]", "7"), ("refills[]", "8")]), **form([*ask, ("refills[]", "9")])
    )
    assert [entry["refill"] for entry in assert_protocol_reply(mixed)] == [9]


# --- a canceled order's remains ------------------------------------------------------------------


async def test_a_canceled_order_reports_what_was_not_delivered_and_what_it_cost(shop: Shop) -> None:
    """A canceled order reported remains "0", which a client computing its customer's refund from
    remains read as delivered in full. Nothing was delivered and everything was released: remains is
    the whole quantity (all runs of a drip-feed), charge what was charged, single and multi alike."""
    key, _ = await reseller_key(shop, "ann@example.com", "10.00")
    followers = shop.service_id("1")
    plain = (
        await call(shop.http, key, action="add", service=followers, link="https://x.com/c1", quantity=300)
    )["order"]
    drip = (
        await call(
            shop.http,
            key,
            action="add",
            service=followers,
            link="https://x.com/c2",
            quantity=100,
            runs=3,
            interval=5,
        )
    )["order"]
    assert await call(shop.http, key, action="cancel", orders=f"{plain},{drip}") == [
        {"order": plain, "cancel": 1},
        {"order": drip, "cancel": 1},
    ]
    failed = (
        await call(shop.http, key, action="add", service=followers, link="https://x.com/c3", quantity=200)
    )["order"]
    staff = await shop.http.post(
        f"/api/v1/admin/orders/{failed}/status",
        json={"status": "ORDER_STATUS_FAILED", "reason": "x"},
        headers=shop.admin,
    )
    assert staff.status_code == 200, staff.text

    def canceled(remains: str) -> dict[str, str]:
        return {
            "charge": "0.00",
            "start_count": "0",
            "status": "Canceled",
            "remains": remains,
            "currency": "USD",
        }

    expected = {str(plain): canceled("300"), str(drip): canceled("300"), str(failed): canceled("200")}
    assert await call(shop.http, key, action="status", orders=f"{plain},{drip},{failed}") == expected
    for order_id, entry in expected.items():
        assert await call(shop.http, key, action="status", order=order_id) == entry
    assert await call(shop.http, key, action="balance") == {"balance": "10.00", "currency": "USD"}
