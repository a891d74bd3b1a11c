"""A NUL character in any text field is a field error, never a 500, and nothing is written (it
once reached PostgreSQL, which refuses NUL in text, from several routes)."""

from __future__ import annotations

import pytest

from tests.fix_shop import Shop
from tests.integration.test_accounts import register
from tests.integration.test_edge_http import assert_error

pytestmark = pytest.mark.integration


def _violations(error: dict) -> list[str]:  # type: ignore[type-arg]
    return [v["field"] for d in error["details"] for v in d.get("fieldViolations", [])]


async def test_nul_in_any_field_is_a_field_error_and_writes_nothing(shop: Shop) -> None:
    ann = await shop.user("ann@example.com", "5.00")
    account = await register(shop.http, "bob@example.com")
    adjust = f"/api/v1/admin/users/{account['user']['id']}/balance-adjustments"
    for body, field in [
        ({"amount": "5.00", "reason": "bonus\u0000"}, "reason"),
        ({"amount": "5.00", "reason": "bonus", "requestId": "a\u0000b"}, "request_id"),
    ]:
        refused = await shop.http.post(adjust, json=body, headers=shop.admin)
        assert _violations(assert_error(refused, 400, "INVALID_ARGUMENT")) == [field]
    likes = shop.service_id("2")
    order = await shop.order(ann, serviceId=likes, link="https://x.com/a", quantity=1000, requestId="k\u0000")
    assert _violations(assert_error(order, 400, "INVALID_ARGUMENT")) == ["request_id"]
    search = await shop.http.get("/api/v1/dashboard/orders", params={"query": "a\x00b"}, headers=ann)
    assert _violations(assert_error(search, 400, "INVALID_ARGUMENT")) == ["query"]
    for path in ("/api/v1/auth/login", "/api/v1/auth/register"):  # before sign-in, and rate limits
        anonymous = await shop.http.post(path, json={"email": "a\u0000b@example.com", "password": "x" * 12})
        assert _violations(assert_error(anonymous, 400, "INVALID_ARGUMENT")) == ["email"]
    assert await shop.balance(ann) == ("5.00", "0.00")
    statement = (await shop.http.get("/api/v1/dashboard/wallet/transactions", headers=ann)).json()
    assert len(statement["transactions"]) == 1  # the funding only
    assert (await shop.verify()).ok
