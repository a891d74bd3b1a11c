"""A subscription placed without ``posts`` (the protocol's "unlimited") through either API: held for,
and sent upstream with, ``SMM_SUBSCRIPTION_DEFAULT_POSTS`` posts (4 here), so the provider stops
where the hold does. With the setting at 0 such an order is refused (tests/unit)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from core.config import Settings
from tests.fix_demo import DemoHandle
from tests.fix_shop import Shop
from tests.integration.test_reseller import call, reseller_key

DEFAULT_POSTS = 4
SUBSCRIPTION = {"username": "steady.account", "min": 50, "max": 100, "delay": 30}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"subscription_default_posts": DEFAULT_POSTS})


async def customer_view(shop: Shop, order_id: object, user: dict[str, str]) -> dict[str, Any]:
    response = await shop.http.get(f"/api/v1/dashboard/orders/{order_id}", headers=user)
    assert response.status_code == 200, response.text
    order: dict[str, Any] = response.json()
    return order


async def test_a_reseller_script_leaving_out_posts_gets_the_default_bound(
    shop: Shop, demo_provider: DemoHandle
) -> None:
    key, ann = await reseller_key(shop, "ann@example.com", "100.00")
    service = shop.service_id("17")
    unlimited = await call(shop.http, key, action="add", service=service, **SUBSCRIPTION)
    explicit = await call(shop.http, key, action="add", service=service, posts=DEFAULT_POSTS, **SUBSCRIPTION)
    assert set(unlimited) == set(explicit) == {"order"}

    left_out = await customer_view(shop, unlimited["order"], ann)
    given = await customer_view(shop, explicit["order"], ann)
    assert left_out["parameters"]["posts"] == given["parameters"]["posts"] == str(DEFAULT_POSTS)
    assert left_out["price"] == given["price"]
    rate = Decimal(shop.services["17"]["service"]["rate"])
    assert Decimal(left_out["price"]) == rate * 100 * DEFAULT_POSTS / 1000  # max x posts, per 1000
    held = Decimal(left_out["price"]) * 2
    available, on_hold = await shop.balance(ann)
    assert (Decimal(available), Decimal(on_hold)) == (100 - held, held)

    await shop.submit(str(unlimited["order"]))
    upstream = [o for o in await demo_provider.orders() if o["type"] == "Subscriptions"]
    assert [o["details"]["posts"] for o in upstream] == [str(DEFAULT_POSTS)]
    assert (await shop.verify()).ok


async def test_the_json_api_leaving_out_posts_gets_the_default_bound(shop: Shop) -> None:
    ann = await shop.user("ann@example.com", "100.00")
    placed = await shop.order(ann, serviceId=shop.service_id("17"), **SUBSCRIPTION)
    assert placed.status_code == 200, placed.text
    assert placed.json()["parameters"]["posts"] == str(DEFAULT_POSTS)
    # old_posts stays within the posts the order has, the default ones too.
    too_old = await shop.order(
        ann, serviceId=shop.service_id("17"), old_posts=DEFAULT_POSTS + 1, **SUBSCRIPTION
    )
    assert too_old.status_code == 400, too_old.text
    violations = too_old.json()["error"]["details"]
    assert violations, too_old.text
    assert f"between 0 and {DEFAULT_POSTS}" in too_old.text
