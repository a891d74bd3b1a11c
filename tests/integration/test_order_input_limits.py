"""Order input at its limits, end to end through the edge and PostgreSQL: whatever validation
lets through must be storable, and whatever it refuses must be refused on the right field."""

from __future__ import annotations

import random

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from smm.v1 import orders_service_pb2 as opb
from smm.v1 import orders_service_pb2_grpc as opb_grpc

from tests.fix_grpc import system_metadata
from tests.fix_shop import Shop
from tests.integration.test_edge_http import assert_error
from tests.integration.test_reseller import call, reseller_key

pytestmark = pytest.mark.integration


def _fields(response_error: dict) -> set[str]:
    [details] = [d for d in response_error["details"] if d["@type"].endswith("BadRequest")]
    return {v["field"] for v in details["fieldViolations"]}


async def test_a_link_of_many_non_ascii_characters_is_refused_not_a_500(shop: Shop) -> None:
    """The link limit was counted in characters: 2,000 CJK characters (6,000 bytes) passed it and
    then broke the btree index on orders (user_id, link), whose entries hold at most 2,704 bytes."""
    ann = await shop.user("ann@example.com", "5.00")
    followers = shop.service_id("1")
    pick = random.Random(7)
    path = "".join(chr(pick.randrange(0x4E00, 0x9FFF)) for _ in range(2000))
    link = f"https://x.com/{path}"
    assert len(link) <= 2048 < len(link.encode())
    reply = await shop.order(ann, serviceId=followers, link=link, quantity=100)
    error = assert_error(reply, 400, "INVALID_ARGUMENT")
    assert _fields(error) == {"link"}
    # The same characters within the limit (counted in UTF-8 bytes) are still an order.
    short = f"https://x.com/{path[:600]}"
    placed = await shop.order(ann, serviceId=followers, link=short, quantity=100)
    assert placed.status_code == 200, placed.text
    assert (await shop.verify()).ok


async def test_blank_lines_of_a_mass_order_are_not_orders(shop: Shop) -> None:
    """Only trailing blank lines were skipped: a blank or whitespace-only line before or between the
    orders came back as a refused line ("expected: service | link | quantity") and counted towards
    the 500 lines, so 500 orders with a blank line between two groups were refused as a whole."""
    ann = await shop.user("ann@example.com", "1000.00")
    followers = shop.service_id("1")
    url = "/api/v1/dashboard/orders/mass"
    text = f"\r\n{followers} | https://x.com/a | 100\r\n\r\n \t \n{followers}  |  https://x.com/b  |  100  \r\n\n"
    mass = await shop.http.post(url, json={"lines": text}, headers=ann)
    assert mass.status_code == 200, mass.text
    body = mass.json()
    assert (body["placed"], body["refused"]) == (2, 0), body
    # Each result names the line of the text it came from.
    assert [(line["line"], line["error"]) for line in body["lines"]] == [(2, ""), (5, "")]

    group = "\n".join(f"{followers} | https://x.com/g{i} | 50" for i in range(250))
    halves = await shop.http.post(
        url, json={"lines": group + "\n\n" + group.replace("/g", "/h")}, headers=ann
    )
    assert halves.status_code == 200, halves.text
    assert (halves.json()["placed"], halves.json()["refused"]) == (500, 0)
    assert halves.json()["lines"][-1]["line"] == 501
    too_many = await shop.http.post(url, json={"lines": group + "\n\n" + group + "\n" + group}, headers=ann)
    error = assert_error(too_many, 400, "INVALID_ARGUMENT")
    assert _fields(error) == {"lines"}
    blank = await shop.http.post(url, json={"lines": " \r\n\n\t"}, headers=ann)
    assert _fields(assert_error(blank, 400, "INVALID_ARGUMENT")) == {"lines"}
    assert (await shop.verify()).ok


async def test_an_order_priced_beyond_any_wallet_names_the_field_that_sized_it(shop: Shop) -> None:
    """The price ceiling was always reported on ``quantity``, also for types that have none: a
    subscription (sized by max x posts) or custom comments (sized by the lines) were told to fix
    their quantity, and the reseller endpoint answered "Quantity makes the order ..."."""
    for upstream in ("5", "17"):
        service = shop.service_id(upstream)
        priced = await shop.http.patch(
            f"/api/v1/admin/services/{service}", json={"rate": "1000000000"}, headers=shop.admin
        )
        assert priced.status_code == 200, priced.text
    ann = await shop.user("ann@example.com", "1.00")
    subscription = {"serviceId": shop.service_id("17"), "username": "u", "min": 50, "max": 5000, "posts": 100}
    error = assert_error(await shop.order(ann, **subscription), 400, "INVALID_ARGUMENT")
    assert _fields(error) == {"posts"}
    comments = "\n".join(f"comment {i}" for i in range(1001))  # 1,001 x 1e9 / 1000 > 1e9
    error = assert_error(
        await shop.order(ann, serviceId=shop.service_id("5"), link="https://x.com/c", comments=comments),
        400,
        "INVALID_ARGUMENT",
    )
    assert _fields(error) == {"comments"}
    key, _ = await reseller_key(shop, "bob@example.com", "1.00")
    added = await call(
        shop.http, key, action="add", service=shop.service_id("17"), username="u", min=50, max=5000, posts=100
    )
    assert added["error"].startswith("Posts "), added


async def test_one_active_order_per_link_does_not_tie_subscriptions_together(shop: Shop) -> None:
    """Subscriptions have no link (stored as ""): with the service's "one active order per link" on,
    every subscription after the first was refused with "You have active order with this link",
    whatever its username."""
    subscriptions = shop.service_id("17")
    turned_on = await shop.http.patch(
        f"/api/v1/admin/services/{subscriptions}", json={"oneActiveOrderPerLink": True}, headers=shop.admin
    )
    assert turned_on.status_code == 200, turned_on.text
    ann = await shop.user("ann@example.com", "50.00")
    for username in ("first", "second"):
        placed = await shop.order(
            ann, serviceId=subscriptions, username=username, min=50, max=100, posts=10, delay=0
        )
        assert placed.status_code == 200, placed.text


async def test_staff_order_search_refuses_out_of_range_times_by_field(channel: grpc.aio.Channel) -> None:
    """ListAllOrders turned its time range into datetimes unchecked: a gRPC caller (staff tools,
    the internal path; the edge's JSON parser refuses these itself) sending a Timestamp outside
    years 1 to 9999, or nanos outside 0 to 999,999,999, got INTERNAL instead of a field error."""
    orders = opb_grpc.OrdersServiceStub(channel)
    odd = [Timestamp(seconds=10**12), Timestamp(seconds=-(10**12)), Timestamp(seconds=0, nanos=-1)]
    odd.append(Timestamp(seconds=0, nanos=10**9))
    for field in ("create_time_from", "create_time_to"):
        for stamp in odd:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await orders.ListAllOrders(
                    opb.ListAllOrdersRequest(**{field: stamp}), metadata=system_metadata()
                )
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
            assert caught.value.details().startswith(f"{field}:"), caught.value.details()
    # The ends of the valid range are still a search.
    widest = opb.ListAllOrdersRequest(
        create_time_from=Timestamp(seconds=-62_135_596_800),
        create_time_to=Timestamp(seconds=253_402_300_799, nanos=999_999_999),
    )
    assert (await orders.ListAllOrders(widest, metadata=system_metadata())).orders == []


async def test_a_mass_order_link_may_contain_the_separator(shop: Shop) -> None:
    """A line was split on every ``|``: a link holding one (accepted as a single order) was refused
    as a malformed line. Service and quantity are the first and last fields; the link is between."""
    ann = await shop.user("ann@example.com", "5.00")
    followers = shop.service_id("1")
    link = "https://x.com/p?tags=a|b"
    single = await shop.order(ann, serviceId=followers, link=link, quantity=100)
    assert single.status_code == 200, single.text
    text = f"{followers} | {link}&n=2 | 100\n{followers} | https://x.com/q | 100 | 5\n{followers} | 100"
    mass = await shop.http.post("/api/v1/dashboard/orders/mass", json={"lines": text}, headers=ann)
    assert mass.status_code == 200, mass.text
    lines = mass.json()["lines"]
    assert lines[0]["error"] == ""
    placed = await shop.http.get(f"/api/v1/dashboard/orders/{lines[0]['orderId']}", headers=ann)
    assert placed.json()["link"] == f"{link}&n=2"
    # With a fourth field the last is the quantity and the link holds the rest; two are too few.
    assert lines[1]["error"].startswith("link must not contain spaces"), lines[1]
    assert lines[2]["error"] == "expected: service | link | quantity"
    assert (await shop.verify()).ok
