"""What a server copy remembers of a provider between calls (``SMM_PROVIDER_STATE_CACHE_S``): its
row and a healthy circuit. The copy that changes a provider, or sees its circuit fail, knows at
once; another copy's change arrives within the TTL and never later."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from server.common.db import Pool
from server.common.secretbox import SecretBox
from server.providers.adapters.breaker import BreakerPhase, BreakerPolicy
from server.providers.clients import ProviderClients
from server.providers.health import SharedBreaker
from server.providers.logic import ProvidersLogic
from server.providers.repo import ProviderFields, ProvidersRepo
from tests.fix_db import TEST_ENCRYPTION_KEYS

pytestmark = pytest.mark.integration

TTL_S = 10.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fields(status: str = "enabled") -> ProviderFields:
    return ProviderFields(
        name="Cache test",
        protocol="standard",
        api_url="http://127.0.0.1:9/api/v2",
        api_key_ciphertext="",
        currency="USD",
        status=status,
        timeout_ms=1000,
        max_concurrency=4,
        max_requests_per_s=10,
        enable_new_services=False,
    )


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def copy_of_server(
    pool: Pool, http: httpx.AsyncClient, clock: FakeClock
) -> tuple[ProviderClients, ProvidersLogic]:
    clients = ProviderClients(
        pool,
        ProvidersRepo(),
        SecretBox.from_config(TEST_ENCRYPTION_KEYS),
        http,
        BreakerPolicy(),
        state_cache_s=TTL_S,
        clock=clock,
    )
    return clients, ProvidersLogic(pool, ProvidersRepo(), clients, "USD")


async def set_status_elsewhere(pool: Pool, provider_id: int, status: str) -> None:
    """Another server copy (or staff with psql) changes the provider."""
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE providers SET status = %s, update_time = now() WHERE id = %s", (status, provider_id)
        )


async def test_a_provider_changed_by_another_copy_is_seen_within_the_ttl(
    pool: Pool, http: httpx.AsyncClient
) -> None:
    clock = FakeClock()
    clients, logic = copy_of_server(pool, http, clock)
    provider = await logic.create(fields(), "the-key")
    assert await clients.adapter_for(provider.id) is not None

    await set_status_elsewhere(pool, provider.id, "disabled")
    assert await clients.adapter_for(provider.id) is not None  # trusted for the TTL: no read
    clock.now += TTL_S - 0.01
    assert await clients.adapter_for(provider.id) is not None
    clock.now += 0.02
    assert await clients.adapter_for(provider.id) is None  # read again: disabled


async def test_the_copy_that_changes_a_provider_sees_it_at_once(pool: Pool, http: httpx.AsyncClient) -> None:
    clock = FakeClock()
    clients, logic = copy_of_server(pool, http, clock)
    provider = await logic.create(fields(), "the-key")
    first = await clients.adapter_for(provider.id)
    assert first is not None

    await logic.update(provider.id, {"status": "disabled"}, api_key=None)
    assert await clients.adapter_for(provider.id) is None
    await logic.update(provider.id, {"status": "enabled"}, api_key="a-new-key")
    rebuilt = await clients.adapter_for(provider.id)
    assert rebuilt is not None
    assert rebuilt is not first  # the new key is in use at once
    await logic.update(provider.id, {"status": "disabled"}, api_key=None)
    await logic.delete(provider.id)
    assert await clients.adapter_for(provider.id) is None


async def test_without_a_ttl_every_call_reads(pool: Pool, http: httpx.AsyncClient) -> None:
    clients = ProviderClients(
        pool, ProvidersRepo(), SecretBox.from_config(TEST_ENCRYPTION_KEYS), http, BreakerPolicy()
    )
    provider = await ProvidersLogic(pool, ProvidersRepo(), clients, "USD").create(fields(), "the-key")
    assert await clients.adapter_for(provider.id) is not None
    await set_status_elsewhere(pool, provider.id, "disabled")
    assert await clients.adapter_for(provider.id) is None


# --- the circuit -------------------------------------------------------------------------------------


async def _provider_id(pool: Pool, http: httpx.AsyncClient) -> int:
    _, logic = copy_of_server(pool, http, FakeClock())
    return (await logic.create(fields(), "the-key")).id


def breaker(pool: Pool, provider_id: int, clock: FakeClock, threshold: int = 1) -> SharedBreaker:
    return SharedBreaker(
        pool, ProvidersRepo(), provider_id, BreakerPolicy(failure_threshold=threshold), healthy_for_s=TTL_S,
        monotonic=clock,
    )  # fmt: skip


async def test_a_healthy_circuit_is_not_read_again_within_the_ttl(
    pool: Pool, http: httpx.AsyncClient
) -> None:
    provider_id = await _provider_id(pool, http)
    ours = breaker(pool, provider_id, FakeClock())
    assert await ours.allow() is True  # read once: closed, no failures
    async with pool.connection() as holder, holder.transaction():
        # Even a plain read of provider_health would wait behind this lock.
        await holder.execute("LOCK TABLE provider_health IN ACCESS EXCLUSIVE MODE")
        async with asyncio.timeout(2):
            for _ in range(5):
                assert await ours.allow() is True
                await ours.record(True, 0.01)


async def test_another_copy_opening_the_circuit_is_seen_within_the_ttl(
    pool: Pool, http: httpx.AsyncClient
) -> None:
    provider_id = await _provider_id(pool, http)
    clock = FakeClock()
    ours, theirs = breaker(pool, provider_id, clock), breaker(pool, provider_id, FakeClock())
    assert await ours.allow() is True
    await theirs.record(False, 0.01)  # threshold 1: open
    assert (await theirs.state()).phase is BreakerPhase.OPEN

    assert await ours.allow() is True  # still trusting the healthy read: the bounded staleness
    clock.now += TTL_S
    assert await ours.allow() is False


async def test_a_failure_this_copy_sees_ends_the_trust_at_once(pool: Pool, http: httpx.AsyncClient) -> None:
    provider_id = await _provider_id(pool, http)
    ours, theirs = breaker(pool, provider_id, FakeClock()), breaker(pool, provider_id, FakeClock())
    assert await ours.allow() is True
    await theirs.record(False, 0.01)  # opened by the other copy
    await ours.record(False, 0.01)  # our own call failed too: decided under the lock, as always
    assert await ours.allow() is False  # no waiting for the TTL


async def test_failures_are_counted_exactly_while_the_healthy_state_is_trusted(
    pool: Pool, http: httpx.AsyncClient
) -> None:
    provider_id = await _provider_id(pool, http)
    ours = breaker(pool, provider_id, FakeClock(), threshold=3)
    assert await ours.allow() is True
    await ours.record(False, 0.01)
    await ours.record(False, 0.01)
    state = await ours.state()
    assert (state.phase, state.failures) == (BreakerPhase.CLOSED, 2)
    await ours.record(True, 0.01)  # not healthy any more: read, and the success resets the count
    state = await ours.state()
    assert (state.phase, state.failures) == (BreakerPhase.CLOSED, 0)
    await asyncio.gather(*(ours.record(False, 0.01) for _ in range(3)))
    assert (await ours.state()).phase is BreakerPhase.OPEN
    assert await ours.allow() is False
