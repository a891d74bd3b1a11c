"""What each server copy keeps in memory, and how it stays right across copies: API keys cached
for a bounded time (the copy that revokes forgets at once), and rate-limit counts shared in
batches (server/accounts/keycache.py, server/common/ratelimit.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from core.config import Settings
from server.common.db import Pool
from server.common.errors import ResourceExhausted
from server.common.ratelimit import Limits, RateLimiter
from server.main import ServerHandle, create_server
from tests.fix_edge import RunningEdge, start_edge
from tests.integration.test_accounts import bearer, register
from tests.integration.test_edge_http import assert_error

pytestmark = pytest.mark.integration
TTL_S = 1.0


@pytest.fixture
async def two_copies(
    settings: Settings, pool: Pool
) -> AsyncIterator[tuple[list[ServerHandle], list[RunningEdge]]]:
    short = settings.model_copy(update={"api_key_cache_s": TTL_S})
    servers = [await create_server(short, pool, address="127.0.0.1:0") for _ in range(2)]
    edges = [
        await start_edge(short.model_copy(update={"grpc_target": f"127.0.0.1:{s.port}"})) for s in servers
    ]
    yield servers, edges
    for edge in edges:
        await edge.stop()
    for server in servers:
        await server.stop(None)


async def test_a_revoked_key_stops_at_once_in_its_copy_and_within_the_ttl_in_others(
    two_copies: tuple[list[ServerHandle], list[RunningEdge]],
) -> None:
    _, (edge_a, edge_b) = two_copies
    async with (
        httpx.AsyncClient(base_url=edge_a.base_url) as a,
        httpx.AsyncClient(base_url=edge_b.base_url) as b,
    ):
        session = (await register(a))["token"]
        key = (await a.post("/api/v1/dashboard/api-keys", json={"name": "k"}, headers=bearer(session))).json()
        for client in (a, b):  # both copies now hold the key
            assert (await client.get("/api/v1/auth/me", headers=bearer(key["secret"]))).status_code == 200
        revoked = await a.delete(f"/api/v1/dashboard/api-keys/{key['apiKey']['id']}", headers=bearer(session))
        assert revoked.status_code == 200, revoked.text
        assert_error(await a.get("/api/v1/auth/me", headers=bearer(key["secret"])), 401, "UNAUTHENTICATED")
        # The other copy may go on for at most the cache's lifetime, then asks again.
        await asyncio.sleep(TTL_S + 0.1)
        assert_error(await b.get("/api/v1/auth/me", headers=bearer(key["secret"])), 401, "UNAUTHENTICATED")


async def test_rate_limit_counts_are_shared_between_copies(pool: Pool) -> None:
    limits = Limits(
        per_ip=100, login_per_ip=5, login_per_account=5, per_user=100, per_api_key=5,
        auth_failures_before_penalty=3,
    )  # fmt: skip
    a, b = RateLimiter(pool, limits), RateLimiter(pool, limits)
    for _ in range(3):
        a.take("key:7", limits.per_api_key)
    b.take("key:7", limits.per_api_key)  # b has not heard of a's three yet
    await a.sync()
    await b.sync()
    b.take("key:7", limits.per_api_key)  # the fifth of five
    with pytest.raises(ResourceExhausted):
        b.take("key:7", limits.per_api_key)
    await b.sync()
    await a.sync()
    with pytest.raises(ResourceExhausted):
        a.take("key:7", limits.per_api_key)


async def test_credential_failures_counted_by_one_copy_tighten_the_others(pool: Pool) -> None:
    limits = Limits(
        per_ip=100, login_per_ip=5, login_per_account=5, per_user=100, per_api_key=5,
        auth_failures_before_penalty=3,
    )  # fmt: skip
    a, b = RateLimiter(pool, limits), RateLimiter(pool, limits)
    b.take("ip:203.0.113.9", limits.per_ip)  # b has seen this address
    for _ in range(3):
        await a.count_failure("203.0.113.9")
    assert a.penalised("203.0.113.9")
    assert not b.penalised("203.0.113.9")
    await b.sync()  # the sync reads every address's failures back
    assert b.penalised("203.0.113.9")
