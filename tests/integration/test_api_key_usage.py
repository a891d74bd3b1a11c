"""API keys: per-day usage counts (counted in memory, added to PostgreSQL in one statement)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from server.common.db import Pool
from server.main import ServerHandle
from tests.integration.test_accounts import bearer, register
from tests.integration.test_edge_http import assert_error

pytestmark = pytest.mark.integration


async def test_calls_with_a_key_are_counted_per_day(
    http: httpx.AsyncClient, grpc_server: ServerHandle, pool: Pool
) -> None:
    ann = await register(http, "ann@example.com")
    key = (
        await http.post("/api/v1/dashboard/api-keys", json={"name": "bot"}, headers=bearer(ann["token"]))
    ).json()
    other = (
        await http.post("/api/v1/dashboard/api-keys", json={"name": "idle"}, headers=bearer(ann["token"]))
    ).json()
    for _ in range(3):
        assert (await http.get("/api/v1/auth/me", headers=bearer(key["secret"]))).status_code == 200

    usage = await http.get(
        f"/api/v1/dashboard/api-keys/{key['apiKey']['id']}/usage", headers=bearer(ann["token"])
    )
    assert usage.status_code == 200, usage.text
    today = datetime.now(UTC).date().isoformat()
    assert usage.json() == {"days": [{"day": today, "calls": "3"}], "totalCalls": "3"}
    idle = await http.get(
        f"/api/v1/dashboard/api-keys/{other['apiKey']['id']}/usage", headers=bearer(ann["token"])
    )
    assert idle.json() == {"days": [], "totalCalls": "0"}

    # The counts are in the database (one upsert per flush), and later calls add to them.
    await http.get("/api/v1/auth/me", headers=bearer(key["secret"]))
    assert grpc_server.usage is not None
    await grpc_server.usage.flush()
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT calls FROM api_key_usage_days WHERE api_key_id = %s", (int(key["apiKey"]["id"]),)
        )
        assert await cursor.fetchall() == [(4,)]
    listed = (await http.get("/api/v1/dashboard/api-keys", headers=bearer(ann["token"]))).json()
    assert ["lastUsedTime" in k for k in listed["apiKeys"]] == [True, False]


async def test_another_users_key_usage_is_not_found(http: httpx.AsyncClient) -> None:
    ann = await register(http, "ann@example.com")
    bob = await register(http, "bob@example.com")
    key = (
        await http.post("/api/v1/dashboard/api-keys", json={"name": "bot"}, headers=bearer(ann["token"]))
    ).json()
    peek = await http.get(
        f"/api/v1/dashboard/api-keys/{key['apiKey']['id']}/usage", headers=bearer(bob["token"])
    )
    assert_error(peek, 404, "NOT_FOUND", "API_KEY_NOT_FOUND")
    too_long = await http.get(
        f"/api/v1/dashboard/api-keys/{key['apiKey']['id']}/usage",
        params={"days": "400"},
        headers=bearer(ann["token"]),
    )
    assert_error(too_long, 400, "INVALID_ARGUMENT")
