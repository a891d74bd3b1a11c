"""The reseller endpoint against ../shared/PROTOCOL.md on odd input: every answer is HTTP 200 with
JSON (checklist 3), every type's extras, and the exact bytes existing clients (the PHP ``Api``
class, requests-based scripts, curl) rely on."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from edge.reseller import RefusedBodyLog
from tests.fix_shop import Shop, shop_orders
from tests.integration.test_reseller import URL, call, reseller_key

pytestmark = pytest.mark.integration
JSON_TYPE = "application/json; charset=utf-8"
PHP_UA = "Mozilla/4.0 (compatible; MSIE 5.01; Windows NT 5.0)"


def assert_protocol_reply(response: httpx.Response) -> Any:
    """PROTOCOL.md checklist 3 and 5: HTTP 200, JSON content type, no BOM, a JSON body."""
    assert response.status_code == 200, (response.status_code, response.content[:300])
    assert response.headers["content-type"] == JSON_TYPE
    assert not response.content.startswith(b"\xef\xbb\xbf")
    return json.loads(response.content)


def raw_json(body: dict[str, Any]) -> dict[str, Any]:
    # json.dumps escapes a lone surrogate as the six characters \ud800, which is valid JSON.
    return {"content": json.dumps(body).encode(), "headers": {"content-type": "application/json"}}


# --- input that used to break the protocol ------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "param"),
    [("status", "orders"), ("cancel", "orders"), ("refill", "orders"), ("refill_status", "refills")],
)
async def test_a_lone_surrogate_in_a_json_id_list_is_answered_per_id(
    shop: Shop, action: str, param: str
) -> None:
    """A JSON body may legally carry "\\ud800"; the id is echoed back, and the encoder raised (500)."""
    key, _ = await reseller_key(shop, "ann@example.com", "10.00")
    response = await shop.http.post(URL, **raw_json({"key": key, "action": action, param: "7,\ud800"}))
    answer = assert_protocol_reply(response)
    entries = (
        list(answer.values())
        if isinstance(answer, dict)
        else [e[action if action != "refill_status" else "status"] for e in answer]
    )
    assert len(entries) == 2
    assert all(isinstance(e, dict) and set(e) == {"error"} for e in entries), answer


async def test_a_lone_surrogate_in_a_json_add_field_becomes_the_replacement_character(shop: Shop) -> None:
    """The text went into the order request as it was and protobuf raised (500); it now becomes
    U+FFFD, as undecodable bytes in a form body do, and the fields' own rules apply."""
    key, user = await reseller_key(shop, "ann@example.com", "10.00")
    params: dict[str, Any] = {"key": key, "action": "add", "service": int(shop.service_id("5")),
                              "link": "https://x.com/s\ud800", "comments": "\n".join(f"c{i}\ud800" for i in range(10))}  # fmt: skip
    answer = assert_protocol_reply(await shop.http.post(URL, **raw_json(params)))
    assert set(answer) == {"order"}, answer
    order = (await shop.http.get(f"/api/v1/dashboard/orders/{answer['order']}", headers=user)).json()
    assert order["link"] == "https://x.com/s\ufffd"


async def test_a_body_over_the_limit_gets_the_protocol_error(shop: Shop) -> None:
    """1,500 comments of 200 Cyrillic characters: ~1.8 MB once form-encoded as the PHP client does,
    over the edge's body limit. The answer was a 413 whose `error` was an object; clients read a
    200 with {"error": "<text>"}."""
    key, _ = await reseller_key(shop, "ann@example.com", "100.00")
    comments = "\n".join(f"{i} " + "ж" * 200 for i in range(1500))
    body = "&".join(
        f"{k}={quote(v)}"
        for k, v in {"key": key, "action": "add", "service": shop.service_id("5"),
                     "link": "https://x.com/ru", "comments": comments}.items()
    )  # fmt: skip
    response = await shop.http.post(
        URL, content=body.encode(), headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert assert_protocol_reply(response) == {"error": "Request is too large"}
    assert await shop_orders(shop) == []


async def test_a_wrong_method_on_the_reseller_path_gets_the_protocol_error(shop: Shop) -> None:
    for method in ("PUT", "DELETE", "PATCH"):
        response = await shop.http.request(method, URL, data={"key": "k", "action": "balance"})
        assert assert_protocol_reply(response) == {"error": "Incorrect request"}, method
    # Other paths keep the JSON API's error shape.
    elsewhere = await shop.http.request("PUT", "/api/v1/public/services")
    assert elsewhere.status_code >= 400
    assert "code" in elsewhere.json()["error"]


async def test_a_refused_reseller_body_is_not_logged_as_an_error(
    shop: Shop, caplog: pytest.LogCaptureFixture
) -> None:
    """The protocol answers its refusals with HTTP 200, and Sanic logs every 2xx answer that left
    the request's body unread at ERROR ("<Request: PUT /api/v1/reseller> body not consumed."): a
    wrong method or an over-size body, anyone's to send, filled the error log and paged whoever
    alerts on it. They are refusals, logged at info."""
    caplog.set_level(logging.INFO)
    wrong = await shop.http.request("PUT", URL, data={"key": "k", "action": "balance"})
    assert assert_protocol_reply(wrong) == {"error": "Incorrect request"}
    big = b"key=k&action=balance&pad=" + b"x" * 2_000_000  # over the edge's body limit
    form = {"content-type": "application/x-www-form-urlencoded"}
    try:
        large = await shop.http.post(URL, content=big, headers=form)
        assert assert_protocol_reply(large) == {"error": "Request is too large"}
    except httpx.TransportError:
        pass  # the edge may drop the connection while the client is still sending
    await asyncio.sleep(0.2)
    unread = [r for r in caplog.records if "body not consumed" in r.getMessage()]
    assert unread, "the refusals were not logged at all"
    assert [r.getMessage() for r in unread if r.levelno >= logging.WARNING] == []
    # Elsewhere (a JSON API handler that left a body unread would be a bug) it stays an error.
    elsewhere = logging.LogRecord(
        "sanic.error",
        logging.ERROR,
        __file__,
        1,
        "%s body not consumed.",
        ("<Request: PUT /api/v1/x>",),
        None,
    )
    assert RefusedBodyLog().filter(elsewhere)
    assert elsewhere.levelno == logging.ERROR


async def test_an_overlong_key_is_an_invalid_api_key(shop: Shop) -> None:
    """PROTOCOL.md §5: a bad key is `Invalid API key`; a 20,000-character key came back as gRPC's
    own metadata-size text."""
    answer = await call(shop.http, "a" * 20000, action="balance")
    assert answer == {"error": "Invalid API key"}


# --- what conforms -------------------------------------------------------------------------------


async def test_odd_requests_all_answer_200_json(shop: Shop) -> None:
    key, _ = await reseller_key(shop, "ann@example.com", "10.00")
    form = {"content-type": "application/x-www-form-urlencoded"}
    cases: list[tuple[dict[str, Any], Any]] = [
        ({"data": {"key": key}}, {"error": "Incorrect request"}),
        ({"data": {"key": key, "action": ""}}, {"error": "Incorrect request"}),
        ({"data": {"key": key, "action": "fly"}}, {"error": "Incorrect request"}),
        ({"data": {"action": "balance"}}, {"error": "Invalid API key"}),
        ({"data": {}}, {"error": "Invalid API key"}),
        ({"data": {"key": key, "action": "BALANCE"}}, {"balance": "10.00", "currency": "USD"}),
        ({"params": {"key": key, "action": "balance"}}, {"balance": "10.00", "currency": "USD"}),
        ({"content": f"key={key}&action=fly&action=balance".encode(), "headers": form},
         {"balance": "10.00", "currency": "USD"}),  # the last of duplicates, as PHP
        ({"content": f"key={key}&action=balance".encode(), "headers": {"content-type": "text/plain"}},
         {"balance": "10.00", "currency": "USD"}),
        ({"content": b"{bad", "headers": {"content-type": "application/json"}}, {"error": "Invalid API key"}),
        ({"json": [1, 2]}, {"error": "Invalid API key"}),
        ({"data": {"key": key, "action": "status", "orders": " 1 , 2 ,"}},
         {"1": {"error": "Incorrect order ID"}, "2": {"error": "Incorrect order ID"}}),
        ({"data": {"key": key, "action": "status", "orders": "-1,0,1.0"}},
         {"-1": {"error": "Incorrect order ID"}, "0": {"error": "Incorrect order ID"},
          "1.0": {"error": "Incorrect order ID"}}),
        ({"data": {"key": key, "action": "status", "orders": ",".join(map(str, range(1, 102)))}},
         {"error": "Too many IDs: at most 100 per request"}),
        ({"data": {"key": key, "action": "status"}}, {"error": "Incorrect order ID"}),
        ({"data": {"key": key, "action": "refill"}}, {"error": "Incorrect order ID"}),
        ({"data": {"key": key, "action": "cancel"}}, {"error": "Incorrect order ID"}),
        ({"data": {"key": key, "action": "refill_status"}}, {"error": "Refill not found"}),
    ]  # fmt: skip
    for kwargs, expected in cases:
        for method in ("POST",) if "json" in kwargs or "content" in kwargs else ("POST", "GET"):
            if method == "GET" and "data" in kwargs:
                kwargs = {"params": kwargs["data"]}
            answer = assert_protocol_reply(await shop.http.request(method, URL, **kwargs))
            assert answer == expected, (method, kwargs, answer)
    hundred = await call(shop.http, key, action="cancel", orders=",".join(map(str, range(1, 101))))
    assert len(hundred) == 100
    assert hundred[0] == {"order": 1, "cancel": {"error": "Incorrect order ID"}}


async def test_quantity_edge_cases_use_error_wording(shop: Shop) -> None:
    key, _ = await reseller_key(shop, "ann@example.com", "10.00")
    followers = shop.service_id("1")
    for quantity, message in [("0", "Quantity is required"), ("", "Quantity is required"),
                              ("-5", "Quantity less than minimal 50"), ("100.5", "Incorrect quantity"),
                              ("abc", "Incorrect quantity"), ("99999999999999999999", "Incorrect quantity")]:  # fmt: skip
        answer = await call(
            shop.http, key, action="add", service=followers, link="https://x.com/q", quantity=quantity
        )
        assert answer == {"error": message}, quantity
    added = await call(
        shop.http, key, action="add", service=followers, link="https://x.com/q", quantity=" 100 "
    )
    assert set(added) == {"order"}


async def test_type_extras_and_what_add_returns(shop: Shop) -> None:
    key, _ = await reseller_key(shop, "ann@example.com", "100.00")
    ten = "\r\n".join(f"c{i}" for i in range(10)) + "\r\n\r\n"  # CRLF, trailing blank lines
    ok = [
        {"service": shop.service_id("1"), "link": "https://x.com/d", "quantity": 100, "runs": 3, "interval": 5},
        {"service": shop.service_id("3"), "link": "https://x.com/p", "quantity": 100},  # quantity ignored
        {"service": shop.service_id("5"), "link": "https://x.com/c", "comments": ten},
        {"service": shop.service_id("5"), "link": "https://x.com/u", "comments": "\n".join(f"😀 ünï {i}" for i in range(10))},
        {"service": shop.service_id("17"), "link": "https://x.com/s", "username": "u", "min": 50, "max": 100,
         "posts": 5, "old_posts": 2, "delay": 0, "expiry": "31/12/2099"},
        {"service": shop.service_id("18"), "link": "https://x.com/w", "quantity": 500, "country": "US",
         "device": "5", "type_of_traffic": "1", "google_keyword": "smm"},
    ]  # fmt: skip
    orders = []
    for params in ok:
        added = await call(shop.http, key, action="add", **params)
        assert set(added) == {"order"}, (params, added)
        assert isinstance(added["order"], int), (params, added)
        orders.append(added["order"])
    status = await call(shop.http, key, action="status", orders=",".join(map(str, orders)))
    assert status[str(orders[0])]["charge"] == "0.351"  # 1.17 x 100 x 3 runs / 1000
    assert status[str(orders[1])]["charge"] == "1.95"  # the package's rate, once
    assert status[str(orders[2])]["charge"] == "0.104"  # ten comments counted
    for entry in status.values():
        assert set(entry) == {"charge", "start_count", "status", "remains", "currency"}
        assert all(isinstance(v, str) for v in entry.values())


async def test_another_users_ids_are_unknown(shop: Shop) -> None:
    key, _ = await reseller_key(shop, "ann@example.com", "10.00")
    other, _ = await reseller_key(shop, "bob@example.com", "10.00")
    order = (
        await call(
            shop.http, key, action="add", service=shop.service_id("1"), link="https://x.com/o", quantity=100
        )
    )["order"]
    assert await call(shop.http, other, action="status", order=order) == {"error": "Incorrect order ID"}
    assert await call(shop.http, other, action="status", orders=str(order)) == {
        str(order): {"error": "Incorrect order ID"}
    }
    assert await call(shop.http, other, action="cancel", orders=str(order)) == [
        {"order": order, "cancel": {"error": "Incorrect order ID"}}
    ]
    assert await call(shop.http, other, action="refill", order=order) == {"error": "Incorrect order ID"}
    assert await call(shop.http, key, action="cancel", orders=str(order)) == [{"order": order, "cancel": 1}]
    assert (await call(shop.http, key, action="status", order=order))["status"] == "Canceled"


async def test_the_php_client_through_curl_with_expect_100_continue(shop: Shop) -> None:
    key, _ = await reseller_key(shop, "ann@example.com", "10.00")
    comments = "\n".join(f"comment number {i} " + "x" * 100 for i in range(20))
    body = "&".join(f"{k}={quote(str(v))}" for k, v in {"key": key, "action": "add", "service": shop.service_id("5"),
                                                         "link": "https://x.com/c", "comments": comments}.items())  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-L", "--max-time", "10", "-A", PHP_UA, "-H", "Expect: 100-continue", "-d", body,
        str(shop.http.base_url).rstrip("/") + URL, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert set(json.loads(out)) == {"order"}, out


async def test_json_clients_may_send_id_lists_as_arrays_and_whole_floats(shop: Shop) -> None:
    """`"orders": [1, 2]` read as the keys "[1" and "2]", and `"quantity": 100.0` was refused."""
    key, _ = await reseller_key(shop, "ann@example.com", "10.00")
    followers = int(shop.service_id("1"))
    add = {"key": key, "action": "add", "service": followers, "link": "https://x.com/j", "quantity": 100.0}
    first = assert_protocol_reply(await shop.http.post(URL, json=add))
    second = assert_protocol_reply(await shop.http.post(URL, json={**add, "quantity": 150}))
    ids = [first["order"], second["order"]]
    statuses = assert_protocol_reply(
        await shop.http.post(URL, json={"key": key, "action": "status", "orders": ids})
    )
    assert sorted(statuses) == sorted(str(i) for i in ids)
    assert all(entry["status"] in ("Pending", "In progress") for entry in statuses.values()), statuses
    refills = assert_protocol_reply(
        await shop.http.post(URL, json={"key": key, "action": "refill_status", "refills": [777, "778"]})
    )
    assert refills == [
        {"refill": 777, "status": {"error": "Refill not found"}},
        {"refill": 778, "status": {"error": "Refill not found"}},
    ]
    half = assert_protocol_reply(await shop.http.post(URL, json={**add, "quantity": 100.5}))
    assert half == {"error": "Incorrect quantity"}
