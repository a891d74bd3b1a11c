"""The orders dispatch left behind (server/orders/stalled.py): those left pending (their provider
could not be reached for longer than the dispatch worker retries, or their event lost) are sent
again by the poll tick, only once nothing moved them and their last submission ended
``STALLED_AFTER_S`` ago, each placed upstream once; those a dead process left submitting go to
review."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import grpc
import httpx
import pytest
from smm.v1 import events_pb2
from smm.v1 import orders_service_pb2 as opb

from core.config import Settings
from server.common.db import Pool
from server.common.secretbox import SecretBox
from server.orders.dispatch import Dispatcher
from server.orders.dripfeed import DripFeed
from server.orders.stalled import STALLED_AFTER_S
from server.providers.adapters.breaker import BreakerPolicy
from server.providers.clients import ProviderClients
from server.providers.repo import ProvidersRepo
from tests.fix_db import TEST_ENCRYPTION_KEYS
from tests.fix_demo import DemoHandle
from tests.fix_grpc import system_metadata
from tests.fix_shop import Shop, ready_to_poll
from workers.dispatch import ORDER_CREATED, consumers
from workers.rpc import open_channel
from workers.runner import Event, Ok


async def set_circuit(pool: Pool, phase: str) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE provider_health SET circuit_phase = %s, circuit_opened_time = now(), circuit_failures = 0",
            (phase,),
        )


async def age(pool: Pool, order_id: str, seconds: float) -> None:
    """As if the order's last submission, and its last move, were ``seconds`` ago."""
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE orders SET update_time = now() - make_interval(secs => %s) WHERE id = %s",
            (seconds, int(order_id)),
        )
        await conn.execute(
            "UPDATE order_submissions SET create_time = now() - make_interval(secs => %s),"
            " finish_time = now() - make_interval(secs => %s) WHERE order_id = %s",
            (seconds, seconds, int(order_id)),
        )


async def submissions(pool: Pool, order_id: str) -> list[str]:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT state FROM order_submissions WHERE order_id = %s ORDER BY id", (int(order_id),)
        )
        return [str(row[0]) for row in await cursor.fetchall()]


async def place(shop: Shop, user: dict[str, str], link: str) -> str:
    """An order of 1,000 of the demo's service 2, placed (pending, its event unconsumed)."""
    placed = await shop.order(user, serviceId=shop.service_id("2"), link=link, quantity=1000)
    assert placed.status_code == 200, placed.text
    return str(placed.json()["id"])


async def status(shop: Shop, order_id: str, user: dict[str, str]) -> str:
    order: dict[str, Any] = (await shop.http.get(f"/api/v1/dashboard/orders/{order_id}", headers=user)).json()
    return str(order["status"])


async def poll(shop: Shop) -> None:
    await ready_to_poll(shop.pool)
    await shop.orders.PollOrders(opb.PollOrdersRequest(), metadata=system_metadata())


def test_the_wait_outlasts_every_retry_of_the_dispatch_worker() -> None:
    """While the worker still has a retry of an order's event out, the tick must not send it too."""
    assert max(ORDER_CREATED.backoff_s) < STALLED_AFTER_S
    assert ORDER_CREATED.ack_wait_s < STALLED_AFTER_S


async def test_an_order_its_provider_could_not_take_goes_out_once_the_provider_is_back(
    shop: Shop, demo_provider: DemoHandle, pool: Pool
) -> None:
    ann = await shop.user("ann@example.com", "5.00")

    stalled, recent, never_tried = [
        await place(shop, ann, link) for link in ("https://x.com/a", "https://x.com/b", "https://x.com/c")
    ]
    await set_circuit(pool, "open")  # the provider is down: nothing goes out
    for order_id in (stalled, recent):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await shop.submit(order_id)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

    # The worker's retries are over for ``stalled`` only; the provider is still down.
    await age(pool, stalled, STALLED_AFTER_S + 60)
    await age(pool, recent, STALLED_AFTER_S - 300)
    await poll(shop)
    assert await submissions(pool, stalled) == ["not_sent", "not_sent"]  # tried again, not sent
    assert await submissions(pool, recent) == ["not_sent"]
    assert await submissions(pool, never_tried) == []  # its event is still the worker's
    assert await status(shop, stalled, ann) == "ORDER_STATUS_PENDING"

    # The next pass comes STALLED_AFTER_S later; the provider is back by then.
    await poll(shop)
    assert await submissions(pool, stalled) == ["not_sent", "not_sent"]  # not before its time
    await age(pool, stalled, STALLED_AFTER_S + 60)
    await set_circuit(pool, "closed")
    await poll(shop)
    assert await submissions(pool, stalled) == ["not_sent", "not_sent", "accepted"]
    assert await status(shop, stalled, ann) == "ORDER_STATUS_IN_PROGRESS"
    await poll(shop)
    upstream = await demo_provider.orders()
    assert [o["link"] for o in upstream] == ["https://x.com/a"]  # once, and only the stalled one
    assert await status(shop, recent, ann) == "ORDER_STATUS_PENDING"
    assert await status(shop, never_tried, ann) == "ORDER_STATUS_PENDING"
    assert (await shop.verify()).ok


async def test_an_order_whose_event_was_lost_goes_out_from_the_tick_once(
    shop: Shop, demo_provider: DemoHandle, pool: Pool
) -> None:
    """An order whose event is gone without a dead letter (lost with NATS's store) waited for the
    next day's stuck alert, its funds held: never tried, or sent back to pending by staff. Once
    nothing moved it for ``STALLED_AFTER_S``, the tick sends it, once; a younger one is left to the
    worker, which still has its event."""
    ann = await shop.user("ann@example.com", "5.00")

    lost, young, again = [
        await place(shop, ann, link)
        for link in ("https://x.com/lost", "https://x.com/young", "https://x.com/again")
    ]
    # ``again``: its answer unknown (nothing was placed), staff sent it back to pending, the event lost.
    await demo_provider.fault("html", actions=["add"], process=False)
    assert (await shop.submit(again)).status == opb.ORDER_STATUS_NEEDS_REVIEW
    resolved = await shop.http.post(
        f"/api/v1/admin/orders/{again}/resolve",
        json={"resolution": "not_placed", "reason": "not in their panel"},
        headers=shop.admin,
    )
    assert resolved.status_code == 200, resolved.text
    assert await status(shop, again, ann) == "ORDER_STATUS_PENDING"

    await age(pool, young, STALLED_AFTER_S - 300)
    await age(pool, lost, STALLED_AFTER_S + 60)
    await age(pool, again, STALLED_AFTER_S + 60)
    async with pool.connection() as conn:  # its last submission ended recently: not yet
        await conn.execute(
            "UPDATE order_submissions SET finish_time = now() WHERE order_id = %s", (int(again),)
        )
    await poll(shop)
    assert await submissions(pool, lost) == ["accepted"]
    assert await status(shop, lost, ann) == "ORDER_STATUS_IN_PROGRESS"
    assert await submissions(pool, young) == []
    assert await submissions(pool, again) == ["unknown"]

    await age(pool, again, STALLED_AFTER_S + 60)
    await poll(shop)
    assert await submissions(pool, again) == ["unknown", "accepted"]
    assert await status(shop, again, ann) == "ORDER_STATUS_IN_PROGRESS"
    await poll(shop)  # the next pass sends nothing twice
    assert await submissions(pool, lost) == ["accepted"]
    assert await status(shop, young, ann) == "ORDER_STATUS_PENDING"
    upstream = await demo_provider.orders()
    assert sorted(o["link"] for o in upstream) == ["https://x.com/again", "https://x.com/lost"]
    assert (await shop.verify()).ok


async def being_sent(shop: Shop, pool: Pool, user: dict[str, str], link: str) -> tuple[str, int]:
    """An order whose call is out (or whose sender died): submitting, with a 'starting' submission."""
    placed = (await shop.order(user, serviceId=shop.service_id("2"), link=link, quantity=1000)).json()
    order_id = int(placed["id"])
    async with pool.connection() as conn:
        await conn.execute("UPDATE orders SET status = 'submitting' WHERE id = %s", (order_id,))
        cursor = await conn.execute(
            "INSERT INTO order_submissions (order_id, provider_id, upstream_service_id)"
            " SELECT %s, id, '2' FROM providers LIMIT 1 RETURNING id",
            (order_id,),
        )
        row = await cursor.fetchone()
    assert row is not None
    return str(order_id), int(row[0])


async def test_an_order_a_dead_process_left_submitting_goes_to_review(
    shop: Shop, demo_provider: DemoHandle, pool: Pool
) -> None:
    ann = await shop.user("ann@example.com", "5.00")
    dead, _ = await being_sent(shop, pool, ann, "https://x.com/dead")
    out, _ = await being_sent(shop, pool, ann, "https://x.com/out")
    await age(pool, dead, STALLED_AFTER_S + 60)  # no call lasts that long: its sender died
    await age(pool, out, 60)  # may still be out
    await poll(shop)
    assert await status(shop, dead, ann) == "ORDER_STATUS_NEEDS_REVIEW"
    staff_view = await shop.staff_order(dead)
    assert staff_view["statusNote"] == "a submission was interrupted; the order may exist upstream"
    assert await status(shop, out, ann) == "ORDER_STATUS_SUBMITTING"
    assert await submissions(pool, dead) == ["starting"]  # nothing sent again: it may exist upstream
    assert await demo_provider.orders() == []
    assert (await shop.verify()).ok


async def test_a_resend_leaves_an_order_another_call_is_sending_alone(shop: Shop, pool: Pool) -> None:
    """Between the tick's read and its claim, a late worker retry may have claimed the order: the
    tick must not take that for an interrupted submission (which goes to review). Likewise an order
    sent again since the interrupted submission was read is not sent to review for it."""
    ann = await shop.user("ann@example.com", "5.00")
    order_text, first_submission = await being_sent(shop, pool, ann, "https://x.com/s")
    order_id = int(order_text)
    async with httpx.AsyncClient() as http:
        clients = ProviderClients(
            pool, ProvidersRepo(), SecretBox.from_config(TEST_ENCRYPTION_KEYS), http, BreakerPolicy()
        )
        dispatcher = Dispatcher(pool, clients, DripFeed(pool, clients))  # another server copy
        left = await dispatcher.submit(order_id, resend=True)
        assert left.status == "submitting"
        assert await submissions(pool, str(order_id)) == ["starting"]
        async with pool.connection() as conn:  # sent again since: a newer submission is out
            await conn.execute(
                "INSERT INTO order_submissions (order_id, provider_id, upstream_service_id)"
                " SELECT order_id, provider_id, upstream_service_id FROM order_submissions WHERE id = %s",
                (first_submission,),
            )
        assert not await dispatcher.review_interrupted(order_id, first_submission)
        assert await status(shop, order_text, ann) == "ORDER_STATUS_SUBMITTING"
        # A redelivered event of the order's own (no resend) takes it for interrupted, as before.
        reviewed = await dispatcher.submit(order_id)
        assert reviewed.status == "needs_review"


async def test_a_first_delivery_leaves_an_order_being_sent_alone_and_a_redelivery_reviews_it(
    shop: Shop, pool: Pool, worker_settings: Settings
) -> None:
    """The tick may be sending a stalled order when a worker that was down or far behind gets to
    the order's event. Its first delivery cannot follow a call of its own that died mid-send, so it
    leaves the order to the tick; a redelivery may, so it sends the order to review, as before."""
    ann = await shop.user("ann@example.com", "5.00")
    sending, _ = await being_sent(shop, pool, ann, "https://x.com/busy")
    rpc = open_channel(worker_settings, "tests")
    try:
        submit = next(c for c in consumers(rpc, worker_settings) if c.durable == ORDER_CREATED).handle
        first = Event(
            id=f"created-{sending}",
            subject=ORDER_CREATED.filter_subject,
            payload=events_pb2.OrderCreated(order_id=int(sending)).SerializeToString(),
            headers={},
            delivery=1,
        )
        assert await submit(first, no_progress) == Ok()
        assert await status(shop, sending, ann) == "ORDER_STATUS_SUBMITTING"
        assert await submissions(pool, sending) == ["starting"]
        assert await submit(replace(first, delivery=2), no_progress) == Ok()
        assert await status(shop, sending, ann) == "ORDER_STATUS_NEEDS_REVIEW"
        assert await submissions(pool, sending) == ["starting"]  # nothing sent by either
    finally:
        await rpc.channel.close()


async def no_progress() -> None:
    """A handler's progress callback that reports nothing (the handler is called directly)."""
    return None


async def test_an_order_that_cannot_be_handled_holds_up_no_other(
    shop: Shop, demo_provider: DemoHandle, pool: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    ann = await shop.user("ann@example.com", "5.00")
    ids = []
    for link in ("https://x.com/broken", "https://x.com/fine"):
        placed = await shop.order(ann, serviceId=shop.service_id("2"), link=link, quantity=1000)
        ids.append(str(placed.json()["id"]))
    broken, fine = ids
    await set_circuit(pool, "open")
    for order_id in ids:
        with pytest.raises(grpc.aio.AioRpcError):
            await shop.submit(order_id)
        await age(pool, order_id, STALLED_AFTER_S + 60)
    async with pool.connection() as conn:  # stored parameters the dispatcher cannot read
        await conn.execute(
            "UPDATE orders SET upstream_params = jsonb_set(upstream_params, '{quantity}', '\"lots\"')"
            " WHERE id = %s",
            (int(broken),),
        )
    await set_circuit(pool, "closed")
    await poll(shop)
    assert f"could not send stalled order {broken} again" in caplog.text
    assert await status(shop, fine, ann) == "ORDER_STATUS_IN_PROGRESS"  # the older one came first
    assert [o["link"] for o in await demo_provider.orders()] == ["https://x.com/fine"]
