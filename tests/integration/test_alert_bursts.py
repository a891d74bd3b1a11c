"""Admin alerts that come in bursts (orders gone to review, dead letters of one consumer) are mailed
once per SMM_ADMIN_ALERT_INTERVAL_S per kind; the ones in between are recorded held back
('quieted'), counted once each, and reported by the next one (server/notifications/quiet.py)."""

from __future__ import annotations

import asyncio

import pytest
from smm.v1.events_pb2 import OrderChanged

from core.config import Settings
from core.events import MSG_ID
from server.common.db import Pool
from server.common.pagetoken import PageTokenCodec
from server.notifications.logic import Notifications
from tests.fakes.resend_api import FakeResend, resend_settings
from tests.fix_demo import DemoHandle
from tests.fix_shop import Shop
from tests.integration.test_notifications import _dead_letter_of, _messages
from tests.integration.test_providers import add_provider
from workers.notify import consumers as notification_consumers
from workers.rpc import RpcContext, open_channel
from workers.runner import Consumer, Event, Ok

pytestmark = pytest.mark.integration
ADMIN = "admin-staff@example.com"


def review(order_id: int) -> Event:
    payload = OrderChanged(order_id=order_id, status="needs_review").SerializeToString()
    return Event(
        id=f"review-{order_id}", subject="smm.orders.order.changed", payload=payload, headers={}, delivery=1
    )


async def _nothing() -> None:
    return None


async def window(pool: Pool, kind: str) -> tuple[int, bool]:
    """The window's count of held-back alerts, and whether it is open now."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT held_back, open_time > now() - interval '600 seconds' FROM admin_alert_windows"
            " WHERE channel = 'email' AND kind = %s",
            (kind,),
        )
        row = await cursor.fetchone()
    assert row is not None
    return row[0], row[1]


async def let_window_pass(pool: Pool, kind: str) -> None:
    """Ten minutes and a second later, by the database's clock the gate reads."""
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE admin_alert_windows SET open_time = open_time - interval '601 seconds' WHERE kind = %s",
            (kind,),
        )


def _consumer(rpc: RpcContext, settings: Settings, durable: str) -> Consumer:
    return next(c for c in notification_consumers(rpc, settings) if c.durable.name == durable)


async def test_a_burst_of_review_alerts_mails_the_first_and_counts_the_rest_in_the_next(
    shop: Shop, pool: Pool, worker_settings: Settings, resend_api: FakeResend
) -> None:
    assert worker_settings.admin_alert_interval_s == 600  # the default
    settings = resend_settings(worker_settings, resend_api)
    rpc = open_channel(settings, "tests")
    orders = _consumer(rpc, settings, "email-orders")
    dlq = _consumer(rpc, settings, "email-dlq")
    try:
        assert await orders.handle(review(1), _nothing) == Ok()
        [first] = [str(e.get("text")) for e in resend_api.emails.values()]
        assert "Order 1: the provider's answer is unknown" in first
        assert "More like this are held back until" in first
        assert "listed in the admin's orders (status needs review)" in first
        assert "held back since" not in first  # nothing was held back before it

        for event in (review(2), review(3), review(2)):  # the last one a redelivery
            assert await orders.handle(event, _nothing) == Ok()
        assert len(resend_api.emails) == 1
        assert await _messages(pool, "review-2") == [(ADMIN, "admin_alert", "quieted")]
        assert await _messages(pool, "review-3") == [(ADMIN, "admin_alert", "quieted")]
        assert await window(pool, "review") == (2, True)  # counted once each, redelivery or not

        # Another kind is not held back by this one.
        letter = _dead_letter_of(review(99), "dispatch-order-created", 7)
        assert await dlq.handle(letter, _nothing) == Ok()
        assert len(resend_api.emails) == 2
        assert await _messages(pool, letter.headers[MSG_ID]) == [(ADMIN, "admin_alert", "sent")]

        await let_window_pass(pool, "review")
        resend_api.clear()
        assert await orders.handle(review(4), _nothing) == Ok()
        [after] = [str(e.get("text")) for e in resend_api.emails.values()]
        assert "Order 4: the provider's answer is unknown" in after
        assert "2 more alert(s) like this were held back since" in after
        assert await window(pool, "review") == (0, True)

        # Redeliveries follow how each was first planned: the sent one is not sent again, a
        # held-back one is not sent late (nor counted again) even though a new window is open.
        for event in (review(1), review(2), review(4)):
            assert await orders.handle(event, _nothing) == Ok()
        assert len(resend_api.emails) == 1
        assert await _messages(pool, "review-2") == [(ADMIN, "admin_alert", "quieted")]
        assert await window(pool, "review") == (0, True)
    finally:
        await rpc.channel.close()


async def test_alerts_planned_at_once_mail_one_and_count_every_other(
    shop: Shop, pool: Pool, worker_settings: Settings, resend_api: FakeResend
) -> None:
    settings = resend_settings(worker_settings, resend_api)
    rpc = open_channel(settings, "tests")
    orders = _consumer(rpc, settings, "email-orders")
    try:
        outcomes = await asyncio.gather(*(orders.handle(review(n), _nothing) for n in range(1, 9)))
        assert outcomes == [Ok()] * 8
        assert len(resend_api.emails) == 1
        assert await window(pool, "review") == (7, True)
        async with pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT status, count(*) FROM email_messages WHERE template = 'admin_alert' GROUP BY status"
                " ORDER BY status"
            )
            assert await cursor.fetchall() == [("quieted", 7), ("sent", 1)]
    finally:
        await rpc.channel.close()


async def test_an_interval_of_zero_sends_every_alert(shop: Shop, pool: Pool, settings: Settings) -> None:
    every = Notifications(
        pool,
        PageTokenCodec(b"unused"),
        api_url=settings.api_url,
        web_url=settings.web_url,
        currency=settings.currency,
        low_balance_default=settings.low_balance_threshold,
        resend_webhook_secret="",
        alert_interval_s=0,
    )
    for n in (1, 2, 3):
        [planned] = await every.plan(f"review-{n}", "smm.orders.order.changed", review(n).payload)
        assert planned.template == "admin_alert"
        assert planned.context["lines"] == [f"Order {n}: the provider's answer is unknown"]
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT count(*) FROM admin_alert_windows")
        assert await cursor.fetchone() == (0,)


async def test_one_providers_burst_holds_back_no_alert_about_another_providers_orders(
    shop: Shop, pool: Pool, worker_settings: Settings, resend_api: FakeResend, demo_provider: DemoHandle
) -> None:
    """A review alert names the provider whose answer is unknown (the one the newest submission went
    to), and each provider has its own window: one provider timing out holds back only its own."""
    other = await add_provider(shop.http, shop.admin, demo_provider, name="Backup Panel")
    ann = await shop.user("ann@example.com", "5.00")
    ids = []
    for link in ("https://x.com/1", "https://x.com/2", "https://x.com/3"):
        placed = await shop.order(ann, serviceId=shop.service_id("2"), link=link, quantity=1000)
        assert placed.status_code == 200, placed.text
        ids.append(int(placed.json()["id"]))
    first, second, third = ids
    async with pool.connection() as conn:  # the second order's newest submission went to the backup
        await conn.execute(
            "INSERT INTO order_submissions (order_id, provider_id, upstream_service_id) VALUES (%s, %s, '2')",
            (second, int(other["id"])),
        )
    primary = shop.provider_id  # type: ignore[attr-defined]
    settings = resend_settings(worker_settings, resend_api)
    rpc = open_channel(settings, "tests")
    orders = _consumer(rpc, settings, "email-orders")
    try:
        resend_api.clear()
        for order_id in (first, second, third):
            assert await orders.handle(review(order_id), _nothing) == Ok()
        bodies = sorted(str(e.get("text")) for e in resend_api.emails.values())
        assert len(bodies) == 2, bodies  # the third is the primary's second within its window
        assert any(f"Order {first}: the answer of provider {primary} (Demo) is unknown" in b for b in bodies)
        assert any(
            f"Order {second}: the answer of provider {other['id']} (Backup Panel) is unknown" in b
            for b in bodies
        )
        assert any(f"provider {other['id']})" in b for b in bodies)  # where this provider's are listed
        assert await _messages(pool, f"review-{third}") == [(ADMIN, "admin_alert", "quieted")]
        assert await window(pool, f"review:{primary}") == (1, True)
        assert await window(pool, f"review:{other['id']}") == (0, True)
    finally:
        await rpc.channel.close()
