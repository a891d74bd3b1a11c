"""The hourly ``ledger-verify`` job: an alert when the set of broken invariants is new or changed
(or back after a clean run), never again for the same set; every run still records the state."""

from __future__ import annotations

import grpc
import pytest
from smm.v1 import events_pb2
from smm.v1 import system_service_pb2 as spb
from smm.v1 import system_service_pb2_grpc as spb_grpc

from server.common.db import Pool
from tests.fix_grpc import system_metadata
from tests.fix_shop import Shop

pytestmark = pytest.mark.integration
HOUR = 3600
FIRST_PERIOD = 1_000 * HOUR


async def alerts(pool: Pool) -> list[list[str]]:
    """The problems of each ledger alert raised so far, oldest first."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT payload FROM outbox_events WHERE subject = 'smm.wallet.ledger.alert' ORDER BY id"
        )
        return [
            list(events_pb2.LedgerAlert.FromString(bytes(p)).problems) for (p,) in await cursor.fetchall()
        ]


async def drift(pool: Pool, email: str, micros: int) -> None:
    """Move a cached balance away from (or back to) what its ledger entries say."""
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE wallets SET available_micros = available_micros + %s"
            " WHERE user_id = (SELECT id FROM users WHERE email = %s)",
            (micros, email),
        )


async def test_a_broken_ledger_alerts_once_per_set_of_problems_and_each_run_says_it_is_broken(
    shop: Shop, channel: grpc.aio.Channel, pool: Pool
) -> None:
    system = spb_grpc.SystemServiceStub(channel)
    period = FIRST_PERIOD

    async def verify() -> str:
        nonlocal period
        period += HOUR
        run = await system.RunJob(
            spb.RunJobRequest(job="ledger-verify", period_start=period), metadata=system_metadata()
        )
        assert run.ran_now
        return str(run.result)

    ann = await shop.user("ann@example.com", "5.00")
    await shop.user("bob@example.com", "5.00")
    assert (await verify()).startswith("ledger ok")
    assert await alerts(pool) == []

    # Broken: one alert, and the next hours record the same breakage without alerting again.
    await drift(pool, "ann@example.com", 1)
    first = await verify()
    assert first.startswith("LEDGER BROKEN: 1 problem(s)")
    assert "alert raised" in first
    [[problem]] = await alerts(pool)
    assert problem.startswith("user ")
    assert "cached available 5.000001" in problem
    again = await verify()
    assert len(await alerts(pool)) == 1
    assert again.startswith("LEDGER BROKEN: 1 problem(s)")
    assert "unchanged since the alert at" in again
    # Ann keeps using her wallet: both of her balances move, the drift does not. Still the same set.
    await shop.order(ann, serviceId=shop.service_id("2"), link="https://x.com/still", quantity=1000)
    assert "unchanged since the alert at" in await verify()
    assert len(await alerts(pool)) == 1

    # Changed: another wallet breaks too. One more alert, naming both; then quiet again.
    await drift(pool, "bob@example.com", -2)
    assert "alert raised" in await verify()
    assert [len(problems) for problems in await alerts(pool)] == [1, 2]
    assert "unchanged since the alert at" in await verify()
    # A drift that grows is a change as well.
    await drift(pool, "bob@example.com", -1)
    assert "alert raised" in await verify()
    assert len(await alerts(pool)) == 3

    # Clean for an hour, then broken again as it was the first time: alerted again.
    await drift(pool, "ann@example.com", -1)
    await drift(pool, "bob@example.com", 3)
    assert (await verify()).startswith("ledger ok")
    assert len(await alerts(pool)) == 3
    await drift(pool, "ann@example.com", 1)
    assert "alert raised" in await verify()
    assert [len(problems) for problems in await alerts(pool)] == [1, 2, 2, 1]
