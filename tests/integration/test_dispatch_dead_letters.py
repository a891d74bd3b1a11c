"""An order event the dispatch worker gave up on (the database or the gRPC server away longer than
its retries) is sent again from its dead letter by ``dispatch-dead-orders`` (workers/dispatch.py):
the order goes out once, when the outage is over, and never races a call already sending it."""

from __future__ import annotations

from typing import Any

import pytest
from nats.aio.client import Client as NATS
from smm.v1 import events_pb2

from core.config import Settings
from core.events import (
    DLQ_DELIVERIES,
    DLQ_DURABLE,
    DLQ_REASON,
    DLQ_SUBJECT,
    EVENT_ID,
    MSG_ID,
    Namespace,
    ensure_streams,
)
from server.common.db import Pool
from server.main import ServerHandle
from server.notifications import logic as notifications
from tests.fix_demo import DemoHandle
from tests.fix_nats import running_worker
from tests.fix_shop import Shop
from tests.integration.test_events import eventually
from tests.integration.test_stalled_orders import being_sent, no_progress, status, submissions
from workers import runner
from workers.dispatch import ORDER_CREATED, ORDER_DEAD_LETTERS, consumers
from workers.rpc import open_channel
from workers.runner import Event, Ok, Retry, gave_up

pytestmark = pytest.mark.integration
WEEK_S = 7 * 24 * 3600


def letter_headers(order_id: int, reason: str, sequence: int) -> dict[str, str]:
    """A dead letter of ``dispatch-order-created`` as the runner publishes it."""
    event_id = f"created-{order_id}"
    return {
        MSG_ID: f"dlq:{ORDER_CREATED.name}:{event_id}:{sequence}",
        EVENT_ID: event_id,
        DLQ_REASON: reason,
        DLQ_DELIVERIES: "6",
        DLQ_SUBJECT: ORDER_CREATED.filter_subject,
        DLQ_DURABLE: ORDER_CREATED.name,
    }


def created(order_id: int) -> bytes:
    return events_pb2.OrderCreated(order_id=order_id).SerializeToString()


def test_the_retries_cover_a_week_of_letters_of_the_order_events_only() -> None:
    assert ORDER_DEAD_LETTERS.stream == "DLQ"
    assert ORDER_DEAD_LETTERS.filter_subject == f"smm.dlq.{ORDER_CREATED.name}"
    assert ORDER_DEAD_LETTERS.max_deliver * max(ORDER_DEAD_LETTERS.backoff_s) >= WEEK_S
    # The alert tells staff no replay is needed for exactly the letters the worker retries.
    assert notifications.GAVE_UP == runner.GAVE_UP
    assert gave_up(6, "UNAVAILABLE: x").startswith(runner.GAVE_UP)
    assert ORDER_CREATED.name in notifications.RETRIED_DURABLES
    lines = notifications.dead_letter_lines(ORDER_CREATED.name, letter_headers(1, gave_up(6, "x"), 1))
    assert lines[-1] == notifications.RETRIED_DURABLES[ORDER_CREATED.name]
    refused = notifications.dead_letter_lines(ORDER_CREATED.name, letter_headers(1, "NOT_FOUND: x", 1))
    assert refused[-1] == "Re-drive it with: smm dlq list / smm dlq replay"


async def test_an_order_given_up_on_during_an_outage_goes_out_once_it_is_over(
    shop: Shop,
    pool: Pool,
    nc: NATS,
    grpc_server: ServerHandle,
    worker_settings: Settings,
    demo_provider: DemoHandle,
) -> None:
    # The order events never reach the worker's first durable (as if the server had been away for
    # all of its retries): only their dead letters do.
    await grpc_server.stop_relay()
    ann = await shop.user("ann@example.com", "5.00")

    async def place(link: str) -> int:
        placed = await shop.order(ann, serviceId=shop.service_id("2"), link=link, quantity=1000)
        assert placed.status_code == 200, placed.text
        return int(placed.json()["id"])

    lost, refused = await place("https://x.com/lost"), await place("https://x.com/refused")
    ns = Namespace(worker_settings.nats_namespace)
    js = nc.jetstream()
    await ensure_streams(js, ns)
    subject = ns.subject(f"smm.dlq.{ORDER_CREATED.name}")
    reason = gave_up(6, "UNAVAILABLE: failed to connect to all addresses")
    await js.publish(subject, created(lost), headers=letter_headers(lost, reason, 11))
    # Refused for good (the same every time): left to staff.
    await js.publish(subject, created(refused), headers=letter_headers(refused, "NOT_FOUND: no order", 12))

    async with running_worker(worker_settings, "dispatch"):
        await eventually(lambda: _status_is(shop, ann, str(lost), "ORDER_STATUS_IN_PROGRESS"))
        await eventually(lambda: _consumed(nc, ns, 2))
    assert await submissions(pool, str(lost)) == ["accepted"]
    assert await submissions(pool, str(refused)) == []
    assert await status(shop, str(refused), ann) == "ORDER_STATUS_PENDING"
    upstream = await demo_provider.orders()
    assert [o["link"] for o in upstream] == ["https://x.com/lost"]
    # The letters stay listed for staff (the retry does not consume them).
    info = await js.stream_info(ns.stream("DLQ"))
    assert info.state.messages == 2
    assert (await shop.verify()).ok


async def test_the_retry_waits_out_an_outage_and_never_races_a_call_sending_the_order(
    shop: Shop, pool: Pool, worker_settings: Settings, demo_provider: DemoHandle
) -> None:
    ann = await shop.user("ann@example.com", "5.00")
    placed = await shop.order(ann, serviceId=shop.service_id("2"), link="https://x.com/w", quantity=1000)
    order_id = int(placed.json()["id"])
    letter = Event(
        id=f"created-{order_id}",
        subject=f"smm.dlq.{ORDER_CREATED.name}",
        payload=created(order_id),
        headers=letter_headers(order_id, gave_up(6, "UNAVAILABLE: down"), 3),
        delivery=1,
    )
    down = open_channel(worker_settings.model_copy(update={"grpc_target": "127.0.0.1:1"}), "tests")
    up = open_channel(worker_settings, "tests")
    try:
        retry = next(c for c in consumers(down, worker_settings) if c.durable == ORDER_DEAD_LETTERS)
        outcome = await retry.handle(letter, no_progress)
        assert isinstance(outcome, Retry)  # the server still away: again in 10 minutes
        assert await submissions(pool, str(order_id)) == []

        handle = next(c for c in consumers(up, worker_settings) if c.durable == ORDER_DEAD_LETTERS).handle
        assert await handle(letter, no_progress) == Ok()
        assert await submissions(pool, str(order_id)) == ["accepted"]
        assert await handle(letter, no_progress) == Ok()  # a redelivery sends nothing again
        assert len(await demo_provider.orders()) == 1

        # An order another call is sending (the poll tick's) is left alone, not sent to review.
        sending, _ = await being_sent(shop, pool, ann, "https://x.com/busy")
        busy = Event(
            id=f"created-{sending}",
            subject=letter.subject,
            payload=created(int(sending)),
            headers=letter_headers(int(sending), gave_up(6, "UNAVAILABLE: down"), 4),
            delivery=1,
        )
        assert await handle(busy, no_progress) == Ok()
        assert await status(shop, sending, ann) == "ORDER_STATUS_SUBMITTING"
        assert await submissions(pool, sending) == ["starting"]
    finally:
        await down.channel.close()
        await up.channel.close()


async def _status_is(shop: Shop, user: dict[str, str], order_id: str, expected: str) -> bool:
    return await status(shop, order_id, user) == expected


async def _consumed(nc: NATS, ns: Namespace, count: int) -> bool:
    info: Any = await nc.jetstream().consumer_info(ns.stream("DLQ"), ns.durable(ORDER_DEAD_LETTERS.name))
    return bool(info.ack_floor is not None and info.ack_floor.stream_seq >= count)
