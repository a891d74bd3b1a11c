"""Notification emails: the right messages for order, wallet and key events, preferences and the
API-order default, one-click unsubscribe, Resend with idempotency keys across a crash, retries and
dead letters, Svix-signed bounces that suppress an address, and the admin's history."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from core.config import Settings
from core.events import (
    DLQ_DELIVERIES,
    DLQ_DURABLE,
    DLQ_REASON,
    DLQ_SUBJECT,
    EVENT_ID,
    MSG_ID,
    Namespace,
    connect,
)
from server.common.db import Pool
from server.common.pagetoken import PageTokenCodec
from server.main import create_server
from server.notifications.logic import Notifications
from tests.fakes.resend_api import FakeResend, new_webhook_secret, resend_settings, svix_headers
from tests.fakes.smtp_server import SMTP_PASSWORD, SMTP_USER, FakeSmtpServer
from tests.fix_edge import RunningEdge, start_edge
from tests.fix_nats import running_worker
from tests.fix_shop import Shop, ready_to_poll
from tests.integration.test_accounts import bearer, register
from tests.integration.test_edge_http import assert_error
from tests.integration.test_events import eventually
from tests.mailbox import read_mail, wait_for_mail, wait_for_subject
from workers.notify import consumers as notification_consumers
from workers.rpc import open_channel
from workers.runner import Event, Ok, Permanent, Retry

pytestmark = pytest.mark.integration
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
async def mail_dir(tmp_path: Path, worker_settings: Settings) -> AsyncIterator[Path]:
    folder = tmp_path / "mail"
    async with running_worker(worker_settings.model_copy(update={"mail_dir": str(folder)}), "email"):
        yield folder


async def test_order_emails_follow_preferences_and_the_api_order_default(
    shop: Shop, pool: Pool, mail_dir: Path, worker_settings: Settings
) -> None:
    user = await shop.user("ann@example.com", "20.00")
    adjusted = await wait_for_subject(mail_dir, "ann@example.com", "Your balance was adjusted")
    assert "20.00" in adjusted.text
    assert "test funds" in adjusted.text
    likes = shop.service_id("2")
    order = (await shop.order(user, serviceId=likes, link="https://x.com/mail", quantity=1000)).json()
    placed = await wait_for_subject(mail_dir, "ann@example.com", f"Order #{order['id']} placed")
    assert "0.325" in placed.text
    assert "https://x.com/mail" in placed.text
    await shop.submit(order["id"])
    await ready_to_poll(pool)
    await shop.settle(order["id"], user)
    done = await wait_for_subject(mail_dir, "ann@example.com", f"Order #{order['id']} completed")
    unsubscribe = str(done.message["List-Unsubscribe"]).strip("<>")
    assert done.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert unsubscribe.startswith("http://127.0.0.1:8080/api/v1/public/unsubscribe?token=")
    # The body links to the web front end's confirmation page for the same token, never to the
    # one-click URL (scanners GET the links in a body).
    page = "http://127.0.0.1:8080/unsubscribe?" + unsubscribe.split("?", 1)[1]
    assert f"To stop these emails, open {page}\n" in done.text
    assert unsubscribe not in done.text

    # Orders placed with an API key (resellers place thousands) send no order email by default.
    key = (await shop.http.post("/api/v1/dashboard/api-keys", json={"name": "bot"}, headers=user)).json()
    keyed = {"Authorization": f"Bearer {key['secret']}"}
    quiet = (await shop.order(keyed, serviceId=likes, link="https://x.com/api", quantity=1000)).json()
    await wait_for_subject(mail_dir, "ann@example.com", "New API key: bot")  # transactional, always sent
    # The quiet order's event was handled (by another durable than the key's) before the change.
    await eventually(lambda: caught_up(pool, worker_settings, "ORDERS", "email-orders"))
    prefs = await shop.http.patch(
        "/api/v1/dashboard/profile",
        json={"notificationPreferences": {"api_order_emails": True}},
        headers=user,
    )
    assert prefs.status_code == 200, prefs.text
    loud = (await shop.order(keyed, serviceId=likes, link="https://x.com/api2", quantity=1000)).json()
    await wait_for_subject(mail_dir, "ann@example.com", f"Order #{loud['id']} placed")
    assert not [m for m in read_mail(mail_dir) if f"Order #{quiet['id']} placed" in m.subject]

    # One-click unsubscribe (RFC 8058 POST) from order-finished mail; the next completion is silent.
    # The mail client POSTs the List-Unsubscribe URL as it is, with the form RFC 8058 names.
    token = unsubscribe.split("token=", 1)[1]
    one_click = {"content": b"List-Unsubscribe=One-Click", "headers": {"content-type": FORM}}
    off = await shop.http.post("/api/v1/public/unsubscribe", params={"token": token}, **one_click)
    assert off.json() == {"topic": "order_finished"}
    forged = await shop.http.post(
        "/api/v1/public/unsubscribe", params={"token": token[:-4] + "AAAA"}, **one_click
    )
    assert_error(forged, 400, "INVALID_ARGUMENT")
    await shop.submit(loud["id"])
    await ready_to_poll(pool)
    await shop.settle(loud["id"], user)
    me = (await shop.http.get("/api/v1/auth/me", headers=user)).json()
    history = await shop.http.get(f"/api/v1/admin/users/{me['id']}/notifications", headers=shop.admin)
    templates = [n["template"] for n in history.json()["notifications"]]
    assert "order_completed" in templates
    assert templates.count("order_completed") == 1  # not for the order finished after unsubscribing


async def test_low_balance_and_admin_alerts(
    shop: Shop, pool: Pool, mail_dir: Path, demo_provider: object
) -> None:
    user = await shop.user("ann@example.com", "1.00")  # under the default 5.00 threshold after an order
    await shop.order(user, serviceId=shop.service_id("2"), link="https://x.com/low", quantity=1000)
    low = await wait_for_subject(mail_dir, "ann@example.com", "Your balance is low")
    assert "0.675" in low.text
    assert "5.00" in low.text
    async with pool.connection() as conn:  # an order whose answer is lost needs staff
        await conn.execute("UPDATE providers SET timeout_ms = 300, update_time = now()")
    await demo_provider.fault("timeout", count=1, actions=["add"])  # type: ignore[attr-defined]
    lost = (
        await shop.order(user, serviceId=shop.service_id("2"), link="https://x.com/lost", quantity=1000)
    ).json()
    await shop.submit(lost["id"])
    alert = await wait_for_subject(mail_dir, "admin-staff@example.com", "Alert: An order needs review")
    assert f"Order {lost['id']}" in alert.text


async def caught_up(pool: Pool, settings: Settings, stream: str, durable: str) -> bool:
    """Every event written so far is published, and the durable has acknowledged all of its stream."""
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT count(*) FROM outbox_events WHERE published_at IS NULL")
        if (await cursor.fetchone()) != (0,):
            return False
    nc = await connect(settings.nats_url, name="tests-caught-up")
    try:
        ns = Namespace(settings.nats_namespace)
        js = nc.jetstream()
        info = await js.consumer_info(ns.stream(stream), ns.durable(durable))
        last = (await js.stream_info(ns.stream(stream))).state.last_seq
    finally:
        await nc.close()
    return bool(info.ack_floor is not None and info.ack_floor.stream_seq >= last)


async def _event(pool: Pool, subject: str) -> Event:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT event_id::text, subject, payload FROM outbox_events WHERE subject = %s ORDER BY id DESC LIMIT 1",
            (subject,),
        )
        row = await cursor.fetchone()
    assert row is not None
    return Event(id=row[0], subject=row[1], payload=bytes(row[2]), headers={}, delivery=1)


async def _nothing() -> None:
    return None


async def test_resend_never_sends_twice_across_a_crash_and_dead_letters_refusals(
    shop: Shop, pool: Pool, worker_settings: Settings, resend_api: FakeResend
) -> None:
    settings = resend_settings(worker_settings, resend_api)
    rpc = open_channel(settings, "tests")
    [orders_consumer, wallet_consumer, *_] = notification_consumers(rpc, settings)
    try:
        await shop.user("ann@example.com", "5.00")
        adjusted = await _event(pool, "smm.wallet.balance.adjusted")
        assert await wallet_consumer.handle(adjusted, _nothing) == Ok()
        assert len(resend_api.emails) == 1
        # The worker died after Resend accepted the email and before it wrote that down and acked:
        async with pool.connection() as conn:
            await conn.execute("UPDATE email_messages SET status = 'queued', transport_message_id = ''")
        assert await wallet_consumer.handle(adjusted, _nothing) == Ok()  # the redelivery
        assert len(resend_api.emails) == 1  # Resend deduplicated on the idempotency key
        keys = {r.headers.get("idempotency-key") for r in resend_api.requests}
        assert len(keys) == 1
        assert None not in keys
        # Delivered once: a third delivery does not even call Resend.
        calls = len(resend_api.requests)
        assert await wallet_consumer.handle(adjusted, _nothing) == Ok()
        assert len(resend_api.requests) == calls

        # Transient failures are retried; a refusal is recorded and dead-lettered with the reason.
        await shop.fund((await shop.http.get("/api/v1/auth/me", headers=shop.admin)).json()["id"], "1.00")
        second = await _event(pool, "smm.wallet.balance.adjusted")
        resend_api.fail_next(1, 500)
        assert isinstance(await wallet_consumer.handle(second, _nothing), Retry)
        resend_api.fail_next(1, 422)
        refused = await wallet_consumer.handle(second, _nothing)
        assert isinstance(refused, Permanent)
        assert "refused" in refused.reason
        async with pool.connection() as conn:
            cursor = await conn.execute("SELECT status, error <> '' FROM email_messages ORDER BY id")
            assert await cursor.fetchall() == [("sent", False), ("failed", True)]
    finally:
        await rpc.channel.close()
        assert orders_consumer.durable.name == "email-orders"


@asynccontextmanager
async def resend_hooks(settings: Settings, pool: Pool) -> AsyncIterator[tuple[str, RunningEdge]]:
    """A server and an edge of the test's own with a Resend webhook secret (the server reads it
    at start): the secret to sign with, and the edge to post to."""
    secret = new_webhook_secret()
    with_secret = settings.model_copy(update={"resend_webhook_secret": SecretStr(secret)})
    server = await create_server(with_secret, pool, address="127.0.0.1:0")
    edge = await start_edge(with_secret.model_copy(update={"grpc_target": f"127.0.0.1:{server.port}"}))
    try:
        yield secret, edge
    finally:
        await edge.stop()
        await server.stop(None)


async def test_a_signed_bounce_suppresses_the_address_and_a_forged_one_is_refused(
    shop: Shop, pool: Pool, worker_settings: Settings, settings: Settings, resend_api: FakeResend
) -> None:
    async with resend_hooks(settings, pool) as (secret, edge):
        rpc = open_channel(worker_settings, "tests")
        eml = worker_settings.model_copy(
            update={"mail_dir": str(Path(worker_settings.var_dir) / "bounce-mail")}
        )
        [orders_consumer, wallet_consumer, *_] = notification_consumers(rpc, eml)
        async with httpx.AsyncClient(base_url=edge.base_url) as hooks:
            user = await shop.user("ann@example.com", "5.00")
            assert (
                await wallet_consumer.handle(await _event(pool, "smm.wallet.balance.adjusted"), _nothing)
                == Ok()
            )
            async with pool.connection() as conn:  # as Resend would have named it
                await conn.execute("UPDATE email_messages SET transport_message_id = 'em_1'")
            body = json.dumps(
                {"type": "email.bounced", "data": {"email_id": "em_1", "bounce": {"type": "Permanent"}}}
            ).encode()
            json_type = {"content-type": "application/json"}
            forged = await hooks.post(
                "/api/v1/webhooks/email/resend",
                content=body,
                headers={**svix_headers(new_webhook_secret(), body), **json_type},
            )
            assert_error(forged, 401, "UNAUTHENTICATED", "INVALID_SIGNATURE")
            signed = await hooks.post(
                "/api/v1/webhooks/email/resend",
                content=body,
                headers={**svix_headers(secret, body), **json_type},
            )
            assert signed.status_code == 200, signed.text
            assert signed.json() == {"applied": True}
            await shop.order(user, serviceId=shop.service_id("2"), link="https://x.com/b", quantity=1000)
            assert (
                await orders_consumer.handle(await _event(pool, "smm.orders.order.created"), _nothing) == Ok()
            )
        await rpc.channel.close()
        async with pool.connection() as conn:
            cursor = await conn.execute("SELECT template, status FROM email_messages ORDER BY id")
            statuses = await cursor.fetchall()
        assert ("order_placed", "suppressed") in statuses
        assert ("balance_adjusted", "bounced") in statuses


async def test_a_resend_event_of_the_wrong_shape_is_refused_or_ignored_never_a_500(
    pool: Pool, settings: Settings
) -> None:
    """The handler read ``data.bounce.type`` with ``.get("bounce", {}).get("type")``: a signed
    ``"bounce": null`` (or a string) raised AttributeError, a signed body nested too deep for the
    JSON parser raised RecursionError, and a signature header or body that Svix cannot even parse
    (no ``v1,`` part, bad base64, not UTF-8) raised ValueError before any check: all were 500s.
    Now null is absent (the bounce counts as permanent, as without one), a wrong type or shape is
    400 BAD_WEBHOOK like any other signed non-event, and an unreadable signature is 401."""
    async with resend_hooks(settings, pool) as (secret, edge):
        async with pool.connection() as conn:
            await conn.execute(
                "INSERT INTO email_messages (event_id, to_address, template, status, transport_message_id)"
                " VALUES ('e1', 'gone@example.com', 'welcome', 'sent', 'em_1'),"
                " ('e2', 'kept@example.com', 'welcome', 'sent', 'em_2')"
            )
        url = "/api/v1/webhooks/email/resend"
        json_type = {"content-type": "application/json"}
        async with httpx.AsyncClient(base_url=edge.base_url) as hooks:

            async def post(body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
                signed = svix_headers(secret, body) if headers is None else headers
                return await hooks.post(url, content=body, headers={**signed, **json_type})

            def bounced(data: object) -> bytes:
                return json.dumps({"type": "email.bounced", "data": data}).encode()

            # A null bounce is no bounce details: permanent, the address is suppressed.
            applied = await post(bounced({"email_id": "em_1", "bounce": None}))
            assert applied.status_code == 200, applied.text
            assert applied.json() == {"applied": True}
            malformed = {
                "bounce is a string": bounced({"email_id": "em_2", "bounce": "Permanent"}),
                "bounce is a list": bounced({"email_id": "em_2", "bounce": []}),
                "bounce type is a number": bounced({"email_id": "em_2", "bounce": {"type": 5}}),
                "email_id is null": bounced({"email_id": None}),
                "email_id is an object": bounced({"email_id": {"id": "em_2"}}),
                "data is null": bounced(None),
                "data is a string": bounced("em_2"),
                "type is null": json.dumps({"type": None, "data": {"email_id": "em_2"}}).encode(),
                "the event is a list": b"[]",
                "the event is null": b"null",
                "nested too deep": b"[" * 100_000 + b"]" * 100_000,
            }
            answers = {name: (await post(body)).status_code for name, body in malformed.items()}
            assert answers == dict.fromkeys(malformed, 400)
            # Events about contacts or domains carry no email id: ignored, or Resend retries them for days.
            for other in (
                {"type": "contact.created", "data": {"id": "c_1"}},
                {"type": "domain.updated", "data": {}},
            ):
                ignored = await post(json.dumps(other).encode())
                assert (ignored.status_code, ignored.json()) == (200, {"applied": False}), ignored.text
            assert_error(await post(malformed["bounce is a string"]), 400, "INVALID_ARGUMENT", "BAD_WEBHOOK")
            body = bounced({"email_id": "em_2"})
            real = svix_headers(secret, body)
            unreadable = {
                "no version": {**real, "svix-signature": "garbage"},
                "bad base64": {**real, "svix-signature": "v1,abc"},
            }
            answers = {name: (await post(body, headers)).status_code for name, headers in unreadable.items()}
            answers["not UTF-8"] = (await post(b"\xff\xfe", svix_headers(secret, b"x"))).status_code
            assert answers == {"no version": 401, "bad base64": 401, "not UTF-8": 401}
            assert_error(
                await post(body, unreadable["no version"]), 401, "UNAUTHENTICATED", "INVALID_SIGNATURE"
            )
        async with pool.connection() as conn:
            cursor = await conn.execute("SELECT to_address, status FROM email_messages ORDER BY id")
            assert await cursor.fetchall() == [("gone@example.com", "bounced"), ("kept@example.com", "sent")]
            cursor = await conn.execute("SELECT address FROM email_suppressions")
            assert await cursor.fetchall() == [("gone@example.com",)]


async def test_a_finished_refill_is_emailed(shop: Shop, pool: Pool, mail_dir: Path) -> None:
    user = await shop.user("ann@example.com", "5.00")
    order = await shop.completed_order(user, "https://x.com/r")
    refill = await shop.http.post(f"/api/v1/dashboard/orders/{order['id']}/refill", json={}, headers=user)
    assert refill.status_code == 200, refill.text
    async with pool.connection() as conn:
        await conn.execute("UPDATE order_refills SET next_poll_time = now()")
    for _ in range(100):
        await shop.settle(order["id"], user)  # polls orders and refills
        async with pool.connection() as conn:
            cursor = await conn.execute("SELECT status FROM order_refills")
            if (await cursor.fetchone()) == ("completed",):
                break
            await conn.execute("UPDATE order_refills SET next_poll_time = now()")
    mail = await wait_for_subject(mail_dir, "ann@example.com", f"Refill of order #{order['id']} completed")
    assert "https://x.com/r" in mail.text


async def test_a_dead_letter_alerts_the_admins_but_never_about_the_mailer_itself(
    shop: Shop, pool: Pool, worker_settings: Settings, tmp_path: Path
) -> None:
    settings = worker_settings.model_copy(update={"mail_dir": str(tmp_path / "dlq-mail")})
    rpc = open_channel(settings, "tests")
    try:
        dlq_consumer = notification_consumers(rpc, settings)[-1]
        assert dlq_consumer.durable.name == "email-dlq"
        headers = {
            "Smm-Dlq-Reason": "INTERNAL: boom",
            "Smm-Dlq-Deliveries": "5",
            "Smm-Original-Subject": "smm.orders.order.created",
        }
        dead = Event(
            id="dlq-1", subject="smm.dlq.dispatch-order-created", payload=b"", headers=headers, delivery=1
        )
        assert await dlq_consumer.handle(dead, _nothing) == Ok()
        alert = await wait_for_subject(tmp_path / "dlq-mail", "admin-staff@example.com", "dead-lettered")
        assert "dispatch-order-created" in alert.text
        assert "INTERNAL: boom" in alert.text
        own = Event(id="dlq-2", subject="smm.dlq.email-orders", payload=b"", headers=headers, delivery=1)
        assert await dlq_consumer.handle(own, _nothing) == Ok()
        async with pool.connection() as conn:
            cursor = await conn.execute("SELECT count(*) FROM email_messages WHERE event_id = 'dlq-2'")
            assert await cursor.fetchone() == (0,)
    finally:
        await rpc.channel.close()


async def test_the_email_worker_delivers_through_smtp_with_starttls_and_auth(
    http: httpx.AsyncClient, pool: Pool, worker_settings: Settings, smtp_tls_files: tuple[Path, Path]
) -> None:
    relay = FakeSmtpServer(*smtp_tls_files, auth_required=True)  # a provider's submission port
    relay.start()
    settings = worker_settings.model_copy(
        update={
            "mail_transport": "smtp",
            "smtp_host": relay.host,
            "smtp_port": relay.port,
            "smtp_username": SMTP_USER,
            "smtp_password": SecretStr(SMTP_PASSWORD),
            "smtp_starttls": True,
            "smtp_ca_file": relay.cafile,
            "mail_from": "Panel <noreply@panel.test>",
        }
    )
    try:
        async with running_worker(settings, "email"):
            ann = bearer((await register(http, "ann@example.com"))["token"])
            created = await http.post("/api/v1/dashboard/api-keys", json={"name": "bot"}, headers=ann)
            assert created.status_code == 200, created.text

            async def both_arrived() -> bool:
                return len(relay.messages) >= 2

            await eventually(both_arrived)
            async with pool.connection() as conn:  # the worker records the delivery after the relay's 250
                for _ in range(100):
                    cursor = await conn.execute(
                        "SELECT template, status, transport, transport_message_id FROM email_messages"
                        " ORDER BY template"
                    )
                    found = await cursor.fetchall()
                    if len(found) == 2 and all(row[1] == "sent" for row in found):
                        break
                    await asyncio.sleep(0.05)
        subjects = sorted(str(m.message["Subject"]) for m in relay.messages)
        assert subjects == ["smm: Confirm your email address", "smm: New API key: bot"]
        assert all(m.tls and m.login == SMTP_USER for m in relay.messages)  # STARTTLS, then AUTH
        assert all(m.rcpt_tos == ["ann@example.com"] for m in relay.messages)
        assert all(m.mail_from == "noreply@panel.test" for m in relay.messages)
        [key_mail] = [m for m in relay.messages if "API key" in str(m.message["Subject"])]
        [verify_mail] = [m for m in relay.messages if "Confirm" in str(m.message["Subject"])]
        # The account email is recorded as every other one is (no Resend id over SMTP).
        assert found == [
            ("api_key_created", "sent", "smtp", str(key_mail.message["Message-ID"])),
            ("verify_email", "sent", "smtp", str(verify_mail.message["Message-ID"])),
        ]
    finally:
        relay.stop()


async def _messages(pool: Pool, key: str) -> list[tuple[str, str, str]]:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT to_address, template, status FROM email_messages WHERE event_id = %s ORDER BY id", (key,)
        )
        return await cursor.fetchall()


async def test_an_order_below_the_threshold_sends_the_order_and_the_low_balance_email(
    shop: Shop, pool: Pool, worker_settings: Settings, resend_api: FakeResend
) -> None:
    """One order.created plans order_placed and low_balance for one user: two messages, two
    idempotency keys (they used to share one row, so Resend refused the second as a conflict)."""
    settings = resend_settings(worker_settings, resend_api)
    rpc = open_channel(settings, "tests")
    orders_consumer = notification_consumers(rpc, settings)[0]
    try:
        user = await shop.user("ann@example.com", "1.00")
        order = await shop.order(
            user, serviceId=shop.service_id("2"), link="https://x.com/two", quantity=1000
        )
        assert order.status_code == 200, order.text
        created = await _event(pool, "smm.orders.order.created")
        resend_api.clear()
        assert await orders_consumer.handle(created, _nothing) == Ok()
        subjects = sorted(str(e.get("subject")) for e in resend_api.emails.values())
        assert len(subjects) == 2, subjects
        assert any("placed" in s for s in subjects), subjects
        assert any("balance is low" in s for s in subjects), subjects
        keys = {r.headers.get("idempotency-key") for r in resend_api.requests}
        assert len(keys) == 2
        assert await _messages(pool, created.id) == [
            ("ann@example.com", "order_placed", "sent"),
            ("ann@example.com", "low_balance", "sent"),
        ]
        # A redelivery plans the same two messages and sends neither again.
        calls = len(resend_api.requests)
        assert await orders_consumer.handle(created, _nothing) == Ok()
        assert len(resend_api.requests) == calls
    finally:
        await rpc.channel.close()


def _dead_letter_of(original: Event, durable: str, sequence: int) -> Event:
    """A dead letter as workers/runner.py publishes it (headers included)."""
    headers = {
        MSG_ID: f"dlq:{durable}:{original.id}:{sequence}",
        EVENT_ID: original.id,
        DLQ_REASON: "UNAVAILABLE: provider down",
        DLQ_DELIVERIES: "6",
        DLQ_SUBJECT: original.subject,
        DLQ_DURABLE: durable,
    }
    return Event(
        id=original.id, subject=f"smm.dlq.{durable}", payload=original.payload, headers=headers, delivery=1
    )


async def test_every_dead_letter_of_one_event_alerts_and_alerts_about_alerts_never_loop(
    shop: Shop, pool: Pool, worker_settings: Settings, resend_api: FakeResend
) -> None:
    settings = resend_settings(worker_settings, resend_api)
    rpc = open_channel(settings, "tests")
    dlq_consumer = next(c for c in notification_consumers(rpc, settings) if c.durable.name == "email-dlq")
    try:
        user = await shop.user("ann@example.com", "20.00")
        order = await shop.order(user, serviceId=shop.service_id("2"), link="https://x.com/dl", quantity=1000)
        assert order.status_code == 200, order.text
        created = await _event(pool, "smm.orders.order.created")
        resend_api.clear()
        # Two durables give up on one event, and one of them again after a replay.
        letters = [
            _dead_letter_of(created, "analytics-orders", 11),
            _dead_letter_of(created, "dispatch-order-created", 12),
            _dead_letter_of(created, "dispatch-order-created", 20),
        ]
        for letter in letters:
            assert await dlq_consumer.handle(letter, _nothing) == Ok()
            assert await dlq_consumer.handle(letter, _nothing) == Ok()  # a redelivery: no second alert
        # The second of one consumer comes within SMM_ADMIN_ALERT_INTERVAL_S of its first: it is
        # held back and counted, not mailed (tests/integration/test_alert_bursts.py).
        bodies = [str(e.get("text")) for e in resend_api.emails.values()]
        assert len(bodies) == 2, bodies
        assert sum("Consumer: dispatch-order-created" in b for b in bodies) == 1
        assert sum("Consumer: analytics-orders" in b for b in bodies) == 1
        for letter, status in zip(letters, ("sent", "sent", "quieted"), strict=True):
            assert await _messages(pool, letter.headers[MSG_ID]) == [
                ("admin-staff@example.com", "admin_alert", status)
            ]
        # The SMS alerter's own dead letters alert by email once per event, and a failed alert
        # about them is never sent again: email and SMS cannot alert about each other for ever.
        resend_api.clear()
        resend_api.fail_next(1, 422)
        first = _dead_letter_of(created, "sms-dlq", 30)
        assert isinstance(await dlq_consumer.handle(first, _nothing), Permanent)
        again = _dead_letter_of(created, "sms-dlq", 31)
        assert await dlq_consumer.handle(again, _nothing) == Ok()
        assert resend_api.emails == {}
        assert await _messages(pool, f"dlq-alerts:{created.id}") == [
            ("admin-staff@example.com", "admin_alert", "failed")
        ]
        # Still never about the mailer's own alert durable.
        own = _dead_letter_of(created, "email-dlq", 32)
        assert await dlq_consumer.handle(own, _nothing) == Ok()
        assert resend_api.emails == {}
    finally:
        await rpc.channel.close()


async def test_a_replayed_event_sends_the_email_that_failed_but_never_a_suppressed_one(
    shop: Shop, pool: Pool, worker_settings: Settings, resend_api: FakeResend
) -> None:
    """Resend refused the key (permanent until the operator fixes it): the email is recorded failed
    and the event dead-lettered. `smm dlq replay` re-drives the event with its id: the email goes out.
    A suppressed address stays unsent."""
    settings = resend_settings(worker_settings, resend_api)
    rpc = open_channel(settings, "tests")
    wallet_consumer = notification_consumers(rpc, settings)[1]
    try:
        await shop.user("ann@example.com", "5.00")
        adjusted = await _event(pool, "smm.wallet.balance.adjusted")
        resend_api.clear()
        resend_api.fail_next(1, 401)
        assert isinstance(await wallet_consumer.handle(adjusted, _nothing), Permanent)
        assert await _messages(pool, adjusted.id) == [("ann@example.com", "balance_adjusted", "failed")]
        replayed = replace(adjusted, headers={MSG_ID: f"{adjusted.id}:replay:7", EVENT_ID: adjusted.id})
        assert await wallet_consumer.handle(replayed, _nothing) == Ok()
        assert len(resend_api.emails) == 1
        assert await _messages(pool, adjusted.id) == [("ann@example.com", "balance_adjusted", "sent")]
        assert await wallet_consumer.handle(replayed, _nothing) == Ok()  # sent: not again
        assert len(resend_api.emails) == 1

        # Failed, then the address bounced: the replay records it suppressed and sends nothing.
        await shop.user("bob@example.com", "5.00")
        bob = await _event(pool, "smm.wallet.balance.adjusted")
        resend_api.fail_next(1, 401)
        assert isinstance(await wallet_consumer.handle(bob, _nothing), Permanent)
        async with pool.connection() as conn:
            await conn.execute(
                "INSERT INTO email_suppressions (address, reason) VALUES ('bob@example.com', 'bounced')"
            )
        assert await wallet_consumer.handle(bob, _nothing) == Ok()
        assert len(resend_api.emails) == 1
        assert await _messages(pool, bob.id) == [("bob@example.com", "balance_adjusted", "suppressed")]
    finally:
        await rpc.channel.close()


async def test_an_address_refused_for_one_admin_still_alerts_the_others(
    shop: Shop, pool: Pool, worker_settings: Settings, resend_api: FakeResend
) -> None:
    """One event, one message per admin: Resend refusing the first admin's address is recorded and
    dead-lettered, but the other admins are still alerted (a dead letter's alert is never planned
    again, so an alert not sent now would never be sent)."""
    settings = resend_settings(worker_settings, resend_api)
    rpc = open_channel(settings, "tests")
    dlq_consumer = next(c for c in notification_consumers(rpc, settings) if c.durable.name == "email-dlq")
    try:
        await shop.user("second-admin@example.com", "1.00")
        async with pool.connection() as conn:
            await conn.execute("UPDATE users SET role = 'admin' WHERE email = 'second-admin@example.com'")
        original = Event(
            id="evt-two-admins", subject="smm.orders.order.created", payload=b"", headers={}, delivery=1
        )
        letter = _dead_letter_of(original, "dispatch-order-created", 41)
        resend_api.clear()
        resend_api.fail_next(1, 422)  # the first admin's address
        outcome = await dlq_consumer.handle(letter, _nothing)
        assert isinstance(outcome, Permanent)
        assert [e["to"] for e in resend_api.emails.values()] == [["second-admin@example.com"]]
        assert await _messages(pool, letter.headers[MSG_ID]) == [
            ("admin-staff@example.com", "admin_alert", "failed"),
            ("second-admin@example.com", "admin_alert", "sent"),
        ]
    finally:
        await rpc.channel.close()


async def test_a_redelivery_after_a_crash_sends_the_same_request_and_keeps_resends_id(
    shop: Shop, pool: Pool, worker_settings: Settings, resend_api: FakeResend
) -> None:
    """Resend accepted the email and the worker died before it recorded Resend's id. By the time
    the event comes back the balance the email shows has moved. The redelivery must compose the
    same request as the first attempt: Resend then replays its first answer (the same email id,
    where a different body would be a 409 and leave no id), the id is recorded, and Resend's later
    bounce for that email finds the message and suppresses the address."""
    settings = resend_settings(worker_settings, resend_api)
    rpc = open_channel(settings, "tests")
    wallet_consumer = notification_consumers(rpc, settings)[1]
    try:
        await shop.user("ann@example.com", "5.00")
        adjusted = await _event(pool, "smm.wallet.balance.adjusted")
        resend_api.clear()
        assert await wallet_consumer.handle(adjusted, _nothing) == Ok()
        [email_id] = resend_api.emails
        async with pool.connection() as conn:  # the crash: Resend's answer was never recorded
            await conn.execute(
                "UPDATE email_messages SET status = 'queued', transport_message_id = '' WHERE event_id = %s",
                (adjusted.id,),
            )
            cursor = await conn.execute("SELECT id::text FROM users WHERE email = 'ann@example.com'")
            [(ann,)] = await cursor.fetchall()
        await shop.fund(ann, "2.00")  # the balance shown in the first email is not the balance now
        assert await wallet_consumer.handle(replace(adjusted, delivery=2), _nothing) == Ok()
        assert [r.status for r in resend_api.requests] == [200, 200]  # replayed, not refused (409)
        assert resend_api.requests[0].json == resend_api.requests[1].json
        assert list(resend_api.emails) == [email_id]
        async with pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT status, transport_message_id FROM email_messages WHERE event_id = %s", (adjusted.id,)
            )
            assert await cursor.fetchall() == [("sent", email_id)]

        secret = new_webhook_secret()
        hooks = Notifications(
            pool,
            PageTokenCodec(b"unused"),
            api_url=settings.api_url,
            web_url=settings.web_url,
            currency=settings.currency,
            low_balance_default=settings.low_balance_threshold,
            resend_webhook_secret=secret,
        )
        bounce = json.dumps(
            {"type": "email.bounced", "data": {"email_id": email_id, "bounce": {"type": "Permanent"}}}
        ).encode()
        assert await hooks.resend_webhook(bounce, svix_headers(secret, bounce)) is True
        async with pool.connection() as conn:
            cursor = await conn.execute("SELECT address, reason FROM email_suppressions")
            assert await cursor.fetchall() == [("ann@example.com", "bounced")]
    finally:
        await rpc.channel.close()


async def test_a_message_that_cannot_be_rendered_is_dead_lettered_at_once_and_recorded_failed(
    shop: Shop, pool: Pool, worker_settings: Settings, resend_api: FakeResend
) -> None:
    """A render error is deterministic (here the worker's SMM_WEB_URL has no scheme, so the
    layout's link is refused): retrying cannot help, so the outcome is Permanent (dead-lettered
    with the reason), the message is recorded failed, and nothing reaches Resend."""
    settings = resend_settings(worker_settings, resend_api, web_url="panel.example")
    rpc = open_channel(settings, "tests")
    wallet_consumer = notification_consumers(rpc, settings)[1]
    try:
        await shop.user("ann@example.com", "5.00")
        adjusted = await _event(pool, "smm.wallet.balance.adjusted")
        resend_api.clear()
        outcome = await wallet_consumer.handle(adjusted, _nothing)
        assert isinstance(outcome, Permanent), outcome
        assert "cannot be rendered" in outcome.reason
        assert "UnsafeURLError" in outcome.reason
        assert resend_api.requests == []
        assert await _messages(pool, adjusted.id) == [("ann@example.com", "balance_adjusted", "failed")]
        async with pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT error FROM email_messages WHERE event_id = %s", (adjusted.id,)
            )
            [(error,)] = await cursor.fetchall()
        assert "not an absolute http(s) URL" in error
    finally:
        await rpc.channel.close()


async def _all_published(pool: Pool) -> bool:
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT count(*) FROM outbox_events WHERE published_at IS NULL")
        return (await cursor.fetchone()) == (0,)


async def test_an_email_worker_started_late_mails_nothing_about_old_events_and_keeps_its_place(
    shop: Shop, pool: Pool, worker_settings: Settings, tmp_path: Path
) -> None:
    """The email worker started for the first time days after the rest (mail configured later),
    or a release that adds a notification durable: its new durables start at the recent past
    (SMM_NOTIFY_START_WINDOW_S, 2 s here), so nobody gets mail about last week's orders or a reset
    link for a request nobody waits for. Once created, a durable keeps its place: an event
    published while the worker was stopped is mailed after the restart, however old."""
    ann = await register(shop.http, "ann@example.com")  # a verification email, asked for
    await shop.fund(ann["user"]["id"], "20.00", reason="old funds")  # a balance email
    forgot = await shop.http.post("/api/v1/auth/password/forgot", json={"email": "ann@example.com"})
    assert forgot.status_code == 200
    await eventually(lambda: _all_published(pool))
    await asyncio.sleep(2.5)  # every event above is now older than the window
    folder = tmp_path / "mail"
    settings = worker_settings.model_copy(update={"mail_dir": str(folder), "notify_start_window_s": 2.0})
    async with running_worker(settings, "email"):
        await shop.fund(ann["user"]["id"], "7.00", reason="new funds")
        await wait_for_subject(folder, "ann@example.com", "Your balance was adjusted")
        await register(shop.http, "bob@example.com")
        await wait_for_mail(folder, "bob@example.com")
        # Each durable takes its stream in order, one at a time: the old events, had they been
        # delivered, would have been mailed before these.
        ann_mail = [m for m in read_mail(folder) if m.to == "ann@example.com"]
        assert [m.subject for m in ann_mail] == ["smm: Your balance was adjusted"]
        assert "new funds" in ann_mail[0].text

    # Stopped, then an event, then restarted after the window: the durable exists, so it is
    # mailed (declaring an existing durable again never moves it).
    await shop.fund(ann["user"]["id"], "3.00", reason="while away")
    await eventually(lambda: _all_published(pool))
    await asyncio.sleep(2.5)

    async def mailed_while_away() -> bool:
        return any("while away" in m.text for m in read_mail(folder) if m.to == "ann@example.com")

    async with running_worker(settings, "email"):
        await eventually(mailed_while_away)
