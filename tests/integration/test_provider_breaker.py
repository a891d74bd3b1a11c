"""The circuit breaker every server copy shares (a row of ``provider_health``): a healthy call only
reads it, while every change of state is still decided under the row lock, exactly once."""

from __future__ import annotations

import asyncio

import pytest

from server.common.db import Pool
from server.providers.adapters.breaker import BreakerPhase, BreakerPolicy
from server.providers.health import SharedBreaker
from server.providers.repo import ProviderFields, ProvidersRepo

pytestmark = pytest.mark.integration


async def stored_provider(pool: Pool) -> int:
    """A provider row (nothing listens at its URL), for tests that need one to point at."""
    fields = ProviderFields(
        name="Breaker test",
        protocol="standard",
        api_url="http://127.0.0.1:9/api/v2",
        api_key_ciphertext="not-used",
        currency="USD",
        status="enabled",
        timeout_ms=1000,
        max_concurrency=4,
        max_requests_per_s=10,
        enable_new_services=False,
    )
    async with pool.connection() as conn, conn.transaction():
        return await ProvidersRepo().insert(conn, fields)


async def test_a_healthy_call_neither_waits_for_nor_takes_the_row_lock(pool: Pool) -> None:
    provider_id = await stored_provider(pool)
    breaker = SharedBreaker(pool, ProvidersRepo(), provider_id, BreakerPolicy(failure_threshold=3))
    async with pool.connection() as holder, holder.transaction():
        await holder.execute(
            "SELECT 1 FROM provider_health WHERE provider_id = %s FOR UPDATE", (provider_id,)
        )
        async with asyncio.timeout(2):  # with the row locked elsewhere, a locking breaker would hang
            assert await breaker.allow() is True
            await breaker.record(True, 0.01)
    assert (await breaker.state()).phase is BreakerPhase.CLOSED


async def test_concurrent_failures_are_all_counted_and_open_the_circuit_once(pool: Pool) -> None:
    provider_id = await stored_provider(pool)
    breaker = SharedBreaker(pool, ProvidersRepo(), provider_id, BreakerPolicy(failure_threshold=40))
    await asyncio.gather(*(breaker.record(False, 0.01) for _ in range(30)))
    state = await breaker.state()
    assert (state.phase, state.failures) == (BreakerPhase.CLOSED, 30)  # no lost update
    await asyncio.gather(*(breaker.record(False, 0.01) for _ in range(10)))
    state = await breaker.state()
    assert (state.phase, state.failures) == (BreakerPhase.OPEN, 40)
    assert await breaker.allow() is False
    await breaker.record(True, 0.01)  # a late success while open changes nothing
    assert (await breaker.state()).phase is BreakerPhase.OPEN


async def test_after_the_wait_exactly_one_probe_goes_out_and_its_success_closes_the_circuit(
    pool: Pool,
) -> None:
    provider_id = await stored_provider(pool)
    breaker = SharedBreaker(pool, ProvidersRepo(), provider_id, BreakerPolicy(failure_threshold=1))
    await breaker.record(False, 0.01)
    assert (await breaker.state()).phase is BreakerPhase.OPEN
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE provider_health SET circuit_opened_time = now() - interval '1 hour' WHERE provider_id = %s",
            (provider_id,),
        )
    admitted = await asyncio.gather(*(breaker.allow() for _ in range(12)))
    assert admitted.count(True) == 1
    assert (await breaker.state()).phase is BreakerPhase.HALF_OPEN
    await breaker.record(True, 0.01)
    state = await breaker.state()
    assert (state.phase, state.failures) == (BreakerPhase.CLOSED, 0)
    assert await breaker.allow() is True
