"""The poll tick's steps (orders, drip-feed runs sent and followed, refills, reconcile): one item
that cannot be handled stops no other item and no other step, and a provider that does not answer
holds up no other provider's runs and refills in the same tick."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from decimal import Decimal
from typing import Any

import grpc
import pytest
from smm.v1 import orders_service_pb2 as opb

from server.common.db import Pool
from tests.fix_demo import DemoFactory, DemoHandle
from tests.fix_grpc import system_metadata
from tests.fix_shop import Shop
from tests.integration.test_dripfeed import SEO, offer_dripfeed, place, runs_of
from tests.integration.test_events import eventually
from tests.integration.test_providers import add_provider, run_sync

pytestmark = pytest.mark.usefixtures("shop")


async def poll(shop: Shop) -> opb.PollOrdersResponse:
    """One tick, exactly as the dispatch worker asks for it (no next-poll times moved here)."""
    reply: opb.PollOrdersResponse = await shop.orders.PollOrders(
        opb.PollOrdersRequest(), metadata=system_metadata()
    )
    return reply


async def sql(pool: Pool, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    async with pool.connection() as conn:
        cursor = await conn.execute(statement, args)  # type: ignore[arg-type]
        return list(await cursor.fetchall()) if cursor.description else []


async def send_all_runs(shop: Shop, pool: Pool, order_id: str) -> None:
    """Every run of the order goes out now (the order event sends what is due)."""
    await sql(pool, "UPDATE order_runs SET due_time = now() WHERE order_id = %s", int(order_id))
    await shop.submit(order_id)
    assert {r[1] for r in await runs_of(pool, order_id)} == {"in_progress"}


async def upstream_done(demo: DemoHandle, count: int) -> None:
    async def done() -> bool:
        orders = await demo.orders()
        return len(orders) == count and all(o["status"] == "Completed" for o in orders)

    await eventually(done, 10)


async def refill(shop: Shop, user: dict[str, str], order_id: str) -> str:
    asked = await shop.http.post(f"/api/v1/dashboard/orders/{order_id}/refill", json={}, headers=user)
    assert asked.status_code == 200, asked.text
    assert asked.json()["status"] == "pending", asked.json()
    return str(asked.json()["id"])


async def refill_status(pool: Pool, refill_id: str) -> str:
    [(status,)] = await sql(pool, "SELECT status FROM order_refills WHERE id = %s", int(refill_id))
    return str(status)


async def drift_held(pool: Pool, order_id: str, micros: int) -> None:
    """The wallet's cached held balance of the order's owner, set by hand: a wallet that drifted
    from its ledger (what `smm ledger verify` reports). Finishing the order then breaks the ledger's
    guard ("settle more than is held") every time it is tried."""
    await sql(
        pool,
        "UPDATE wallets SET held_micros = %s WHERE user_id = (SELECT user_id FROM orders WHERE id = %s)",
        micros,
        int(order_id),
    )


async def held_of(pool: Pool, order_id: str) -> int:
    [(held,)] = await sql(
        pool,
        "SELECT held_micros FROM wallets WHERE user_id = (SELECT user_id FROM orders WHERE id = %s)",
        int(order_id),
    )
    return int(held)


async def test_a_run_that_cannot_be_finished_stops_no_other_run_nor_the_refills(
    shop: Shop, demo_provider: DemoHandle, pool: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    """Bob's last run ends upstream, but his wallet drifted, so finishing his order fails its
    ledger guard. That exception ended the whole tick: Ann's runs after his in the batch were never
    applied, Carol's refill (a later step) was never asked about, on every tick, and Bob's run came
    first again each time. Now his run is logged and asked about later; the rest of the tick runs."""
    seo = await offer_dripfeed(shop)
    bob = await shop.user("bob@example.com", "10.00")
    ann = await shop.user("ann@example.com", "10.00")
    carol = await shop.user("carol@example.com", "10.00")
    carols = await shop.completed_order(carol, "https://x.com/carol")
    refill_id = await refill(shop, carol, carols["id"])
    bobs = await place(shop, bob, seo, "https://example.com/bob", quantity=100, runs=2, interval=60)
    anns = await place(shop, ann, seo, "https://example.com/ann", quantity=100, runs=2, interval=60)
    for order in (bobs, anns):
        await send_all_runs(shop, pool, order["id"])
    await upstream_done(demo_provider, 5)
    await drift_held(pool, bobs["id"], 0)
    # Bob's runs are the most overdue (first in the batch), then Ann's; Carol's refill is due.
    await sql(pool, "UPDATE order_runs SET next_poll_time = now() - interval '2 minutes' WHERE order_id = %s",
              int(bobs["id"]))  # fmt: skip
    await sql(pool, "UPDATE order_runs SET next_poll_time = now() - interval '1 minute' WHERE order_id = %s",
              int(anns["id"]))  # fmt: skip
    await sql(pool, "UPDATE order_refills SET next_poll_time = now()")
    caplog.set_level(logging.ERROR)

    reply = await poll(shop)  # failed with INTERNAL before

    assert [r[1] for r in await runs_of(pool, anns["id"])] == ["completed", "completed"]
    done = (await shop.http.get(f"/api/v1/dashboard/orders/{anns['id']}", headers=ann)).json()
    assert (done["status"], done["charged"]) == ("ORDER_STATUS_COMPLETED", anns["price"])
    assert await refill_status(pool, refill_id) == "completed"  # the later step ran
    assert reply.changed >= 4  # Ann's two runs, Bob's first run, Carol's refill
    # Bob's money did not move; his last run waits (not first again on the next tick), logged.
    assert [r[1] for r in await runs_of(pool, bobs["id"])] == ["completed", "in_progress"]
    bobs_now = (await shop.http.get(f"/api/v1/dashboard/orders/{bobs['id']}", headers=bob)).json()
    assert (bobs_now["status"], bobs_now["charged"]) == ("ORDER_STATUS_IN_PROGRESS", "0.00")
    [(later,)] = await sql(
        pool,
        "SELECT next_poll_time > now() + interval '1 minute' FROM order_runs WHERE order_id = %s AND run_no = 2",
        int(bobs["id"]),
    )
    assert later
    assert any(f"order {bobs['id']}" in r.getMessage() and r.exc_info for r in caplog.records), caplog.text

    # Once the wallet is put right (staff), the run finishes the order once, like any other.
    await drift_held(pool, bobs["id"], int(Decimal(bobs["price"]) * 1_000_000))
    await sql(pool, "UPDATE order_runs SET next_poll_time = now() WHERE order_id = %s", int(bobs["id"]))
    await poll(shop)
    bobs_now = (await shop.http.get(f"/api/v1/dashboard/orders/{bobs['id']}", headers=bob)).json()
    assert (bobs_now["status"], bobs_now["charged"]) == ("ORDER_STATUS_COMPLETED", bobs["price"])
    assert (await shop.verify()).ok


async def test_an_order_whose_run_cannot_be_ended_stops_no_other_orders_runs(
    shop: Shop, demo_provider: DemoHandle, pool: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    """Dan's last run is refused with no fallback left, so it fails and his order ends; his wallet
    drifted, so ending it fails the ledger's guard. The exception ended the tick before Ann's due run
    (a later order) went out, and before the refills; Dan's order came first again on every tick."""
    seo = await offer_dripfeed(shop)
    dan = await shop.user("dan@example.com", "10.00")
    ann = await shop.user("ann@example.com", "10.00")
    carol = await shop.user("carol@example.com", "10.00")
    carols = await shop.completed_order(carol, "https://x.com/carol")
    dans = await place(shop, dan, seo, "https://example.com/dan", quantity=100, runs=2, interval=60)
    anns = await place(shop, ann, seo, "https://example.com/ann", quantity=100, runs=2, interval=60)
    for order in (dans, anns):
        await shop.submit(order["id"])  # run 1 of each goes out
    await upstream_done(demo_provider, 3)
    await sql(pool, "UPDATE order_runs SET next_poll_time = now()")
    await poll(shop)  # run 1 of each completes
    assert [r[1] for r in await runs_of(pool, dans["id"])] == ["completed", "scheduled"]
    refill_id = await refill(shop, carol, carols["id"])  # due on the next tick
    await sql(pool, "UPDATE order_refills SET next_poll_time = now() WHERE id = %s", int(refill_id))
    await asyncio.sleep(0.3)  # the demo's refill completes upstream meanwhile
    await drift_held(pool, dans["id"], 0)
    await sql(pool, "UPDATE order_runs SET due_time = now() WHERE state = 'scheduled'")
    await demo_provider.fault("error_body", count=1, actions=["add"])  # Dan's run 2 (his order is first)
    caplog.set_level(logging.ERROR)

    await poll(shop)  # failed with INTERNAL before

    assert [r[1] for r in await runs_of(pool, anns["id"])] == ["completed", "in_progress"]
    assert len(await demo_provider.orders()) == 4  # Ann's run 2 went out in the same tick
    assert await refill_status(pool, refill_id) == "completed"
    # Dan's run is refused and due again only later; his order and money are as they were.
    assert [r[1] for r in await runs_of(pool, dans["id"])] == ["completed", "scheduled"]
    [(later,)] = await sql(
        pool, "SELECT due_time > now() + interval '1 minute' FROM order_runs WHERE order_id = %s AND run_no = 2",
        int(dans["id"]),
    )  # fmt: skip
    assert later
    dans_now = (await shop.http.get(f"/api/v1/dashboard/orders/{dans['id']}", headers=dan)).json()
    assert (dans_now["status"], dans_now["released"]) == ("ORDER_STATUS_IN_PROGRESS", "0.00")
    assert await held_of(pool, dans["id"]) == 0
    assert any(f"order {dans['id']}" in r.getMessage() and r.exc_info for r in caplog.records), caplog.text


class Hanging:
    """A provider that takes every request and answers none until released (then HTTP 503)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.requests = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/api/v2"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            await self.release.wait()
            writer.write(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def services_at(shop: Shop, provider_id: str) -> dict[str, str]:
    """The provider's upstream service id -> smm's service id, for the services its sync added."""
    listed = await shop.http.get("/api/v1/admin/services", params={"pageSize": "500"}, headers=shop.admin)
    return {
        s["provider"]["upstreamServiceId"]: str(s["service"]["id"])
        for s in listed.json()["services"]
        if str(s.get("provider", {}).get("providerId")) == str(provider_id)
    }


async def test_a_provider_that_does_not_answer_holds_up_no_other_providers_runs_or_refills(
    shop: Shop, demo_provider: DemoHandle, demo_provider_factory: DemoFactory, pool: Pool
) -> None:
    """The steps after the orders went provider by provider: a provider that took each call and
    answered none held every other provider's runs to send, runs to follow and refills until its
    calls timed out (up to 2 minutes a try, three tries for a read), on every tick. While it hangs
    now, the other provider's run goes out, its run in progress is followed and its refill asked."""
    slow_demo = await demo_provider_factory()
    slow = await add_provider(shop.http, shop.admin, slow_demo, name="Slow")
    await run_sync(shop.channel, slow["id"])
    fast_id = str(shop.provider_id)  # type: ignore[attr-defined]
    ann = await shop.user("ann@example.com", "20.00")

    async def at_provider(provider_id: str, link: str) -> tuple[dict[str, Any], str]:
        """A drip-feed order with run 1 out, and a refill out, at the provider."""
        services = await services_at(shop, provider_id)
        edited = await shop.http.patch(
            f"/api/v1/admin/services/{services[SEO]}", json={"dripfeed": True}, headers=shop.admin
        )
        assert edited.status_code == 200, edited.text
        placed = await shop.order(ann, serviceId=services["1"], link=f"https://x.com/{link}", quantity=100)
        assert placed.status_code == 200, placed.text
        await shop.submit(placed.json()["id"])
        done = await shop.settle(placed.json()["id"], ann)
        assert done["status"] == "ORDER_STATUS_COMPLETED", done
        refill_id = await refill(shop, ann, done["id"])
        order = await place(
            shop, ann, services[SEO], f"https://example.com/{link}", quantity=100, runs=3, interval=60
        )
        await shop.submit(order["id"])
        return order, refill_id

    slow_order, slow_refill = await at_provider(slow["id"], "slow")  # the earlier order, first in line
    fast_order, fast_refill = await at_provider(fast_id, "fast")
    await upstream_done(demo_provider, 2)
    await sql(pool, "UPDATE order_runs SET due_time = now() WHERE run_no = 2")
    hanging = Hanging()
    tick: asyncio.Task[opb.PollOrdersResponse] | None = None
    try:
        moved = await shop.http.patch(
            f"/api/v1/admin/providers/{slow['id']}",
            json={"apiUrl": await hanging.start(), "timeoutMs": 60_000},
            headers=shop.admin,
        )
        assert moved.status_code == 200, moved.text
        # The slow provider's runs and refill are the most overdue: first in line before.
        await sql(pool, "UPDATE order_runs SET next_poll_time = now() - interval '1 minute' WHERE order_id = %s",
                  int(slow_order["id"]))  # fmt: skip
        await sql(
            pool, "UPDATE order_runs SET next_poll_time = now() WHERE order_id = %s", int(fast_order["id"])
        )
        await sql(pool, "UPDATE order_refills SET next_poll_time = now() - interval '1 minute' WHERE id = %s",
                  int(slow_refill))  # fmt: skip
        await sql(pool, "UPDATE order_refills SET next_poll_time = now() WHERE id = %s", int(fast_refill))

        tick = asyncio.create_task(poll(shop))

        async def fast_provider_served() -> bool:
            runs = [r[1] for r in await runs_of(pool, fast_order["id"])]
            return (
                runs[:2] == ["completed", "in_progress"]
                and await refill_status(pool, fast_refill) == "completed"
            )

        # Within the tick, while every call to the slow provider is still unanswered: the fast
        # provider's run 1 was followed to its end, its run 2 went out and its refill was asked.
        await eventually(fast_provider_served, 20)
        assert hanging.requests >= 1
        assert not hanging.release.is_set()
        assert not tick.done()
        assert len(await demo_provider.orders()) == 3  # the fast provider's run 2
        slow_runs = [r[1] for r in await runs_of(pool, slow_order["id"])]
        assert slow_runs[0] == "in_progress", slow_runs
        assert slow_runs[1] in ("scheduled", "submitting"), slow_runs
        assert await refill_status(pool, slow_refill) == "pending"
        hanging.release.set()
        reply = await tick
        assert reply.changed >= 3
    finally:
        await hanging.stop()
        if tick is not None and not tick.done():
            with contextlib.suppress(grpc.aio.AioRpcError, TimeoutError):
                await asyncio.wait_for(tick, 90)


async def test_the_shared_helper_runs_providers_side_by_side_and_isolates_failures() -> None:
    """Per provider, side by side and bounded: one provider failing or hanging holds up no other,
    a failure is logged and its items handed back, and what the others did is counted."""
    from server.orders.fanout import isolated, per_provider

    hang = asyncio.Event()
    done: list[int] = []
    handed_back: list[list[str]] = []

    async def work(provider_id: int, items: list[str]) -> int:
        if provider_id == 1:
            raise RuntimeError("an unexpected reply shape")
        if provider_id == 2:
            await hang.wait()
        done.append(provider_id)
        return len(items)

    async def postpone(provider_id: int, items: list[str]) -> None:
        handed_back.append(items)

    groups = {1: ["a"], 2: ["b"], 3: ["c", "d"], 4: ["e"]}
    running = asyncio.create_task(per_provider(groups, work, what="test", on_failure=postpone))
    await eventually(lambda: asyncio.sleep(0, sorted(done) == [3, 4]), 5)
    assert not running.done()  # provider 2 still hangs; the others were served meanwhile
    hang.set()
    assert await running == 4
    assert handed_back == [["a"]]

    async def broken() -> tuple[int, int]:
        raise RuntimeError("a step that fails")

    async def fine() -> tuple[int, int]:
        return 2, 1

    assert await asyncio.gather(isolated("broken", broken(), (0, 0)), isolated("fine", fine(), (0, 0))) == [
        (0, 0),
        (2, 1),
    ]
