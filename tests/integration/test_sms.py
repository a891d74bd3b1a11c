"""Text messages against a loopback Twilio: phone verification codes (expiring, single-use, few
attempts, a new one voids the old), strict E.164, staff alerts, opted-in order and security
notices (API-key orders off by default), signed status callbacks (forged ones refused), suppressed
numbers, retries and dead letters, and no second text for a redelivered event."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pyotp
import pytest
from pydantic import SecretStr
from smm.v1 import accounts_service_pb2 as apb
from smm.v1 import accounts_service_pb2_grpc as apb_grpc
from smm.v1 import events_pb2
from smm.v1.events_pb2 import SECURITY_CHANGE_TWO_FACTOR_ENABLED, SecurityChanged

from core.config import Settings
from core.events import Namespace, connect
from ops.email_preview import preview_sms
from ops.embedded import free_port
from server.common.db import Pool
from server.notifications.logic import QUERIES as SMS_QUERIES
from tests.fakes.twilio_api import TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_FROM, FakeTwilio, SentText
from tests.fix_db import make_settings
from tests.fix_edge import RunningEdge
from tests.fix_grpc import system_metadata
from tests.fix_nats import running_worker
from tests.fix_shop import Shop, ready_to_poll
from tests.integration.test_accounts import PASSWORD, bearer, register
from tests.integration.test_alert_bursts import review
from tests.integration.test_edge_http import assert_error
from tests.integration.test_events import eventually
from workers.dlq import list_dead_letters
from workers.rpc import open_channel
from workers.runner import Consumer, Event, Ok, Permanent, Retry
from workers.sms import consumers as sms_consumers
from workers.texts import render as texts_render
from workers.texts.transport import TextMessage
from workers.texts.transports import PermanentSmsError, TransientSmsError
from workers.texts.twilio_transport import TwilioTransport

pytestmark = pytest.mark.integration
ANN_PHONE = "+15551230001"
BOB_PHONE = "+15551230002"
CY_PHONE = "+15551230003"
ADMIN_PHONE = "+15551230009"
CODE = re.compile(r"code is (\d{6})")


@pytest.fixture
def settings(db_url: str, nats_url: str, namespace: str, twilio_api: FakeTwilio) -> Settings:
    """The test settings with Twilio as the SMS transport (the server checks callbacks with the token)."""
    return make_settings(
        db_url,
        nats_url=nats_url,
        nats_namespace=namespace,
        relay_poll_s=0.2,
        sms_transport="twilio",
        twilio_account_sid=TWILIO_ACCOUNT_SID,
        twilio_auth_token=SecretStr(TWILIO_AUTH_TOKEN),
        twilio_from=TWILIO_FROM,
        twilio_api_url=twilio_api.base_url,
    )


@pytest.fixture
def twilio(twilio_api: FakeTwilio, edge: RunningEdge) -> FakeTwilio:
    """The fake, posting its callbacks to the edge (signed over the public URL, as behind a proxy)."""
    twilio_api.deliver_to = edge.base_url
    return twilio_api


@pytest.fixture
async def accounts(channel: grpc.aio.Channel) -> apb_grpc.AccountsServiceStub:
    return apb_grpc.AccountsServiceStub(channel)


async def wait_for_text(twilio: FakeTwilio, number: str, contains: str = "", count: int = 1) -> SentText:
    async def arrived() -> bool:
        return len([t for t in twilio.texts_to(number) if contains in t.body]) >= count

    await eventually(arrived)
    return [t for t in twilio.texts_to(number) if contains in t.body][-1]


async def user_id(http: httpx.AsyncClient, headers: dict[str, str]) -> int:
    return int((await http.get("/api/v1/auth/me", headers=headers)).json()["id"])


async def mint_code(accounts: Any, uid: int, number: str) -> str:
    """What the SMS worker does: ask the server for the code of the pending verification."""
    request = apb.PrepareAccountSmsRequest(
        request_id="test", user_id=uid, kind=apb.ACCOUNT_SMS_KIND_PHONE_VERIFICATION, to=number
    )
    prepared = await accounts.PrepareAccountSms(request, metadata=system_metadata())
    assert prepared.send, prepared.skip_reason
    return str(prepared.code)


async def verified_phone(http: httpx.AsyncClient, accounts: Any, headers: dict[str, str], number: str) -> int:
    uid = await user_id(http, headers)
    added = await http.post("/api/v1/dashboard/profile/phone", json={"phone": number}, headers=headers)
    assert added.status_code == 200, added.text
    code = await mint_code(accounts, uid, number)
    done = await http.post("/api/v1/dashboard/profile/phone/verify", json={"code": code}, headers=headers)
    assert done.status_code == 200, done.text
    assert done.json()["phoneVerified"] is True
    return uid


async def opt_in(http: httpx.AsyncClient, headers: dict[str, str], **preferences: Any) -> None:
    response = await http.patch(
        "/api/v1/dashboard/profile", json={"notificationPreferences": preferences}, headers=headers
    )
    assert response.status_code == 200, response.text


async def rows(pool: Pool, query: str, *params: Any) -> list[tuple[Any, ...]]:
    async with pool.connection() as conn:
        cursor = await conn.execute(query, params)
        return await cursor.fetchall()


async def latest_event(pool: Pool, subject: str) -> Event:
    [(event_id, payload)] = await rows(
        pool,
        "SELECT event_id::text, payload FROM outbox_events WHERE subject = %s ORDER BY id DESC LIMIT 1",
        subject,
    )
    return Event(id=event_id, subject=subject, payload=bytes(payload), headers={}, delivery=1)


async def _nothing() -> None:
    return None


def consumer(all_consumers: list[Consumer], name: str) -> Consumer:
    [found] = [c for c in all_consumers if c.durable.name == name]
    return found


@pytest.fixture
async def sms_worker(worker_settings: Settings) -> AsyncIterator[list[Consumer]]:
    """The SMS worker's consumers, called by hand (no NATS delivery in between)."""
    rpc = open_channel(worker_settings, "tests")
    try:
        yield sms_consumers(rpc, worker_settings)
    finally:
        await rpc.channel.close()


# --- Phone numbers and codes -------------------------------------------------------------------


async def test_a_phone_is_verified_with_the_code_twilio_delivered(
    http: httpx.AsyncClient, worker_settings: Settings, pool: Pool, twilio: FakeTwilio
) -> None:
    ann = bearer((await register(http))["token"])
    async with running_worker(worker_settings, "sms"):
        added = await http.post("/api/v1/dashboard/profile/phone", json={"phone": ANN_PHONE}, headers=ann)
        assert added.status_code == 200, added.text
        assert added.json()["phone"] == ANN_PHONE
        assert added.json()["phoneVerified"] is False
        text = await wait_for_text(twilio, ANN_PHONE, "verification code")
        assert text.sender == TWILIO_FROM
        assert text.status_callback.startswith("http://127.0.0.1:8080/api/v1/webhooks/sms/twilio?message_id=")
        [code] = CODE.findall(text.body)
        assert "10 minutes" in text.body
        wrong = "000000" if code != "000000" else "111111"
        refused = await http.post("/api/v1/dashboard/profile/phone/verify", json={"code": wrong}, headers=ann)
        error = assert_error(refused, 400, "FAILED_PRECONDITION", "INVALID_CODE")
        assert error["details"][0]["metadata"]["attempts_left"] == "4"
        done = await http.post("/api/v1/dashboard/profile/phone/verify", json={"code": code}, headers=ann)
        assert done.status_code == 200, done.text
        assert done.json()["phoneVerified"] is True
        profile = (await http.get("/api/v1/dashboard/profile", headers=ann)).json()
        assert (profile["phone"], profile["phoneVerified"]) == (ANN_PHONE, True)
        # Twilio's signed callbacks reached the edge and moved the message on to delivered.
        await twilio.settle()
        assert [c.status for c in twilio.callbacks] == [200, 200]
        # ("sent" may have come after the worker recorded the same: then it changes nothing.)
        assert twilio.callbacks[-1].answer.replace(" ", "") == '{"applied":true}'
        assert await rows(pool, "SELECT template, status, transport_message_id FROM sms_messages") == [
            ("phone_verification", "delivered", text.sid)
        ]
    # Single use: once spent, the code does not work again, even for the same unverified number.
    again = await http.post("/api/v1/dashboard/profile/phone/verify", json={"code": code}, headers=ann)
    assert_error(again, 400, "FAILED_PRECONDITION", "PHONE_ALREADY_VERIFIED")
    async with pool.connection() as conn:
        await conn.execute("UPDATE users SET phone_verified_at = NULL")
    reused = await http.post("/api/v1/dashboard/profile/phone/verify", json={"code": code}, headers=ann)
    assert_error(reused, 400, "FAILED_PRECONDITION", "CODE_EXPIRED")
    assert await rows(pool, "SELECT count(*) FROM phone_codes WHERE used_time IS NULL") == [(0,)]


async def test_wrong_codes_count_and_spend_the_code_after_the_limit(
    http: httpx.AsyncClient, accounts: Any
) -> None:
    ann = bearer((await register(http))["token"])
    await http.post("/api/v1/dashboard/profile/phone", json={"phone": ANN_PHONE}, headers=ann)
    code = await mint_code(accounts, await user_id(http, ann), ANN_PHONE)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for left in (4, 3, 2, 1):
        refused = await http.post("/api/v1/dashboard/profile/phone/verify", json={"code": wrong}, headers=ann)
        error = assert_error(refused, 400, "FAILED_PRECONDITION", "INVALID_CODE")
        assert error["details"][0]["metadata"] == {"attempts_left": str(left)}
    spent = await http.post("/api/v1/dashboard/profile/phone/verify", json={"code": wrong}, headers=ann)
    assert_error(spent, 400, "FAILED_PRECONDITION", "CODE_EXPIRED")
    # Void now: even the right code no longer works.
    late = await http.post("/api/v1/dashboard/profile/phone/verify", json={"code": code}, headers=ann)
    assert_error(late, 400, "FAILED_PRECONDITION", "CODE_EXPIRED")
    # Not a code at all: a field error, and no attempt is spent on it.
    junk = await http.post("/api/v1/dashboard/profile/phone/verify", json={"code": "12ab"}, headers=ann)
    assert_error(junk, 400, "INVALID_ARGUMENT")


async def test_codes_expire_and_a_new_code_voids_the_old(
    http: httpx.AsyncClient, accounts: Any, pool: Pool
) -> None:
    ann = bearer((await register(http))["token"])
    uid = await user_id(http, ann)
    await http.post("/api/v1/dashboard/profile/phone", json={"phone": ANN_PHONE}, headers=ann)
    expiring = await mint_code(accounts, uid, ANN_PHONE)
    [(ttl,)] = await rows(
        pool, "SELECT round(extract(epoch FROM expire_time - create_time)) FROM phone_codes"
    )
    assert ttl == 600  # SMM_PHONE_CODE_TTL_MINUTES, 10 by default
    async with pool.connection() as conn:  # ten minutes pass
        await conn.execute("UPDATE phone_codes SET expire_time = now() - interval '1 second'")
    expired = await http.post("/api/v1/dashboard/profile/phone/verify", json={"code": expiring}, headers=ann)
    assert_error(expired, 400, "FAILED_PRECONDITION", "CODE_EXPIRED")

    first = await mint_code(accounts, uid, ANN_PHONE)
    second = await mint_code(accounts, uid, ANN_PHONE)
    if first != second:  # one chance in a million that they are equal
        old = await http.post("/api/v1/dashboard/profile/phone/verify", json={"code": first}, headers=ann)
        assert_error(old, 400, "FAILED_PRECONDITION", "INVALID_CODE")  # void: only the newest counts
    new = await http.post("/api/v1/dashboard/profile/phone/verify", json={"code": second}, headers=ann)
    assert new.status_code == 200, new.text
    # Codes are stored only as keyed hashes.
    hashes = await rows(pool, "SELECT encode(code_hash, 'escape'), length(code_hash) FROM phone_codes")
    assert all(length == 32 and second not in text for text, length in hashes)
    # A code minted for another number (the user changed it since) is not minted at all.
    stale = apb.PrepareAccountSmsRequest(
        request_id="x", user_id=uid, kind=apb.ACCOUNT_SMS_KIND_PHONE_VERIFICATION, to=BOB_PHONE
    )
    assert not (await accounts.PrepareAccountSms(stale, metadata=system_metadata())).send


@pytest.mark.parametrize(
    "phone",
    [
        "5551234567",
        "+1 555 123 4567",
        "+1-555-123-4567",
        "+0123456789",
        "+1234567",
        "+1234567890123456",
        "+1555abc4567",
        "",
    ],
)
async def test_a_number_that_is_not_e164_is_refused_by_field(http: httpx.AsyncClient, phone: str) -> None:
    ann = bearer((await register(http))["token"])
    response = await http.post("/api/v1/dashboard/profile/phone", json={"phone": phone}, headers=ann)
    error = assert_error(response, 400, "INVALID_ARGUMENT")
    [bad_request] = [d for d in error["details"] if d["@type"].endswith("BadRequest")]
    assert [v["field"] for v in bad_request["fieldViolations"]] == ["phone"]


async def test_changing_or_removing_the_number_unverifies_it_and_sends_are_limited(
    http: httpx.AsyncClient, accounts: Any, pool: Pool
) -> None:
    ann = bearer((await register(http))["token"])
    await verified_phone(http, accounts, ann, ANN_PHONE)
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO sms_suppressions (number, reason) VALUES (%s, 'undelivered')", (BOB_PHONE,)
        )
    again = await http.post("/api/v1/dashboard/profile/phone", json={"phone": ANN_PHONE}, headers=ann)
    assert_error(again, 400, "FAILED_PRECONDITION", "PHONE_ALREADY_VERIFIED")
    changed = await http.post("/api/v1/dashboard/profile/phone", json={"phone": BOB_PHONE}, headers=ann)
    assert changed.status_code == 200, changed.text
    assert (changed.json()["phone"], changed.json()["phoneVerified"]) == (BOB_PHONE, False)
    assert await rows(pool, "SELECT count(*) FROM sms_suppressions") == [(0,)]  # set again: unsuppressed
    # Two texts a minute per account (SMM_RATE_SMS_PER_ACCOUNT_PER_MIN): the third waits.
    limited = await http.post("/api/v1/dashboard/profile/phone", json={"phone": BOB_PHONE}, headers=ann)
    assert_error(limited, 429, "RESOURCE_EXHAUSTED", "RATE_LIMITED")
    removed = await http.delete("/api/v1/dashboard/profile/phone", headers=ann)
    assert (removed.json()["phone"], removed.json()["phoneVerified"]) == ("", False)
    assert await rows(pool, "SELECT count(*) FROM phone_codes WHERE used_time IS NULL") == [(0,)]
    nothing = await http.post("/api/v1/dashboard/profile/phone/verify", json={"code": "123456"}, headers=ann)
    assert_error(nothing, 400, "FAILED_PRECONDITION", "NO_PHONE")
    # The preferences map is checked: known channels and topics, booleans.
    bad = await http.patch(
        "/api/v1/dashboard/profile",
        json={"notificationPreferences": {"sms": {"order_finished": "yes", "weather": True}}},
        headers=ann,
    )
    error = assert_error(bad, 400, "INVALID_ARGUMENT")
    [bad_request] = [d for d in error["details"] if d["@type"].endswith("BadRequest")]
    assert {v["field"] for v in bad_request["fieldViolations"]} == {
        "profile.notification_preferences.sms.order_finished",
        "profile.notification_preferences.sms.weather",
    }


# --- Who gets a text ---------------------------------------------------------------------------


async def test_staff_alerts_go_to_admins_with_a_verified_phone_unless_switched_off(
    shop: Shop, accounts: Any, pool: Pool, sms_worker: list[Consumer], twilio: FakeTwilio
) -> None:
    await verified_phone(shop.http, accounts, shop.admin, ADMIN_PHONE)
    dlq = consumer(sms_worker, "sms-dlq")
    headers = {
        "Smm-Dlq-Reason": "INTERNAL: boom",
        "Smm-Dlq-Deliveries": "5",
        "Smm-Original-Subject": "smm.orders.order.created",
    }
    dead = Event(id="dlq-1", subject="smm.dlq.email-orders", payload=b"", headers=headers, delivery=1)
    assert await dlq.handle(dead, _nothing) == Ok()
    alert = await wait_for_text(twilio, ADMIN_PHONE, "alert")
    assert alert.body.startswith("smm alert: A message was dead-lettered")
    assert "Consumer: email-orders" in alert.body  # the mailer's failures reach staff by text
    # Never a text about the SMS worker's own dead letters (it could loop).
    own = Event(id="dlq-2", subject="smm.dlq.sms-orders", payload=b"", headers=headers, delivery=1)
    assert await dlq.handle(own, _nothing) == Ok()
    await opt_in(shop.http, shop.admin, sms={"admin_alert": False})
    quiet = Event(
        id="dlq-3", subject="smm.dlq.dispatch-order-created", payload=b"", headers=headers, delivery=1
    )
    assert await dlq.handle(quiet, _nothing) == Ok()
    assert len(twilio.texts_to(ADMIN_PHONE)) == 1
    assert await rows(pool, "SELECT event_id FROM sms_messages WHERE template = 'admin_alert'") == [
        ("dlq-1",)
    ]


async def test_a_provider_low_on_funds_is_texted_to_the_admins(
    shop: Shop, accounts: Any, sms_worker: list[Consumer], twilio: FakeTwilio
) -> None:
    await verified_phone(shop.http, accounts, shop.admin, ADMIN_PHONE)
    low = events_pb2.ProviderBalanceLow(
        provider_id=3, provider_name="Upstream B", balance="1.50", low_balance="20.00", currency="USD"
    )
    payload = low.SerializeToString()
    event = Event(
        id="low-1", subject="smm.providers.alert.low_balance", payload=payload, headers={}, delivery=1
    )
    assert await consumer(sms_worker, "sms-providers").handle(event, _nothing) == Ok()
    alert = await wait_for_text(twilio, ADMIN_PHONE, "alert")
    assert alert.body.startswith("smm alert: A provider's balance is low")
    assert "Upstream B" in alert.body


async def keyed_order(shop: Shop, who: dict[str, str], link: str) -> dict[str, Any]:
    """An order placed with a new API key of the user's, sent and completed."""
    key = (await shop.http.post("/api/v1/dashboard/api-keys", json={"name": "bot"}, headers=who)).json()
    keyed = {"Authorization": f"Bearer {key['secret']}"}
    order: dict[str, Any] = (
        await shop.order(keyed, serviceId=shop.service_id("2"), link=link, quantity=1000)
    ).json()
    await shop.submit(order["id"])
    await shop.settle(order["id"], who)
    return order


async def test_order_texts_only_for_users_who_opted_in_and_api_orders_off_by_default(
    shop: Shop, accounts: Any, pool: Pool, worker_settings: Settings, twilio: FakeTwilio
) -> None:
    ann = await shop.user("ann@example.com", "20.00")
    bob = await shop.user("bob@example.com", "20.00")
    await verified_phone(shop.http, accounts, ann, ANN_PHONE)
    await verified_phone(shop.http, accounts, bob, BOB_PHONE)
    await opt_in(shop.http, ann, sms={"order_finished": True})  # bob keeps the default: off
    # Orders placed with an API key text nobody unless the user asks for that too. Cy asks from the
    # start: turning it on for Ann later would race the worker, which reads the preference when it
    # handles her earlier order's event. (And her number is verified before the worker runs: the
    # worker would answer the verification event with a new code, voiding the one used here.)
    cy = await shop.user("cy@example.com", "20.00")
    await verified_phone(shop.http, accounts, cy, CY_PHONE)
    await opt_in(shop.http, cy, sms={"order_finished": True}, api_order_sms=True)
    likes = shop.service_id("2")
    async with running_worker(worker_settings, "sms"):
        for who in (bob, ann):
            order = (await shop.order(who, serviceId=likes, link="https://x.com/sms", quantity=1000)).json()
            await shop.submit(order["id"])
            await ready_to_poll(pool)
            await shop.settle(order["id"], who)
        done = await wait_for_text(twilio, ANN_PHONE, f"order #{order['id']}")
        assert done.body.startswith(f"smm: order #{order['id']} (")
        assert done.body.endswith("is complete. Charged 0.325 USD.")
        quiet = await keyed_order(shop, ann, "https://x.com/api")
        loud = await keyed_order(shop, cy, "https://x.com/api2")
        await wait_for_text(twilio, CY_PHONE, f"order #{loud['id']}")
    assert twilio.texts_to(BOB_PHONE) == []
    assert not [t for t in twilio.texts_to(ANN_PHONE) if f"order #{quiet['id']} " in t.body]
    history = await shop.http.get(
        f"/api/v1/admin/users/{await user_id(shop.http, ann)}/notifications", headers=shop.admin
    )
    channels = {(n["channel"], n["template"]) for n in history.json()["notifications"]}
    assert ("sms", "order_completed") in channels
    assert all(n["to"] == ANN_PHONE for n in history.json()["notifications"])


async def test_security_notices_and_an_undelivered_text_suppresses_the_number(
    http: httpx.AsyncClient, accounts: Any, pool: Pool, sms_worker: list[Consumer], twilio: FakeTwilio
) -> None:
    ann = bearer((await register(http))["token"])
    await verified_phone(http, accounts, ann, ANN_PHONE)
    await opt_in(http, ann, sms={"security": True})
    security = consumer(sms_worker, "sms-security")
    twilio.undeliverable[ANN_PHONE] = "30006"  # a landline
    changed = await http.post(
        "/api/v1/auth/password",
        json={"currentPassword": PASSWORD, "newPassword": "another long password"},
        headers=ann,
    )
    assert changed.status_code == 200, changed.text
    ann = bearer(changed.json()["token"])
    assert await security.handle(await latest_event(pool, "smm.accounts.security.changed"), _nothing) == Ok()
    notice = await wait_for_text(twilio, ANN_PHONE, "password was changed")
    assert "Not you?" in notice.body
    await twilio.settle()
    assert [c.params["MessageStatus"] for c in twilio.callbacks] == ["sent", "undelivered"]
    assert await rows(pool, "SELECT status, error_code FROM sms_messages") == [("undelivered", "30006")]
    assert await rows(pool, "SELECT number, reason, error_code FROM sms_suppressions") == [
        (ANN_PHONE, "undelivered", "30006")
    ]
    # Suppressed: the next notice is recorded as such and nothing is sent.
    api_key = await http.post("/api/v1/dashboard/api-keys", json={"name": "bot"}, headers=ann)
    assert api_key.status_code == 200
    keys = consumer(sms_worker, "sms-api-keys")
    assert await keys.handle(await latest_event(pool, "smm.accounts.api_key.created"), _nothing) == Ok()
    assert len(twilio.texts_to(ANN_PHONE)) == 1
    statuses = await rows(pool, "SELECT template, status FROM sms_messages ORDER BY id")
    assert statuses == [("security_notice", "undelivered"), ("api_key_created", "suppressed")]


async def test_status_callbacks_need_twilios_signature(
    http: httpx.AsyncClient, accounts: Any, pool: Pool, sms_worker: list[Consumer], twilio: FakeTwilio
) -> None:
    ann = bearer((await register(http))["token"])
    twilio.send_callbacks = False  # this test posts them itself
    await http.post("/api/v1/dashboard/profile/phone", json={"phone": ANN_PHONE}, headers=ann)
    codes = consumer(sms_worker, "sms-phone-codes")
    assert await codes.handle(await latest_event(pool, "smm.accounts.sms.requested"), _nothing) == Ok()
    [text] = twilio.texts_to(ANN_PHONE)
    params = {
        "MessageSid": text.sid,
        "MessageStatus": "delivered",
        "To": ANN_PHONE,
        "AccountSid": TWILIO_ACCOUNT_SID,
    }
    forged = await twilio.post_callback(text.status_callback, params, signature="bm90IGEgc2lnbmF0dXJl")
    assert forged.status == 401
    unsigned = await http.post(
        "/api/v1/webhooks/sms/twilio" + text.status_callback.split("twilio", 1)[1], data=params
    )
    assert_error(unsigned, 401, "UNAUTHENTICATED", "INVALID_SIGNATURE")
    other_url = await twilio.post_callback(
        text.status_callback.replace("message_id=", "message_id=9"), params
    )  # signed, but for another message than the one it names: nothing to change
    assert other_url.status == 200
    assert await rows(pool, "SELECT status FROM sms_messages") == [("sent",)]
    signed = await twilio.post_callback(text.status_callback, params)
    assert signed.status == 200
    assert signed.answer.replace(" ", "") == '{"applied":true}'
    # Out of order: a late "sent" never moves a delivered message back.
    late = await twilio.post_callback(text.status_callback, {**params, "MessageStatus": "sent"})
    assert late.answer.replace(" ", "") == '{"applied":false}'
    # An unknown SID is answered 200 (so Twilio stops retrying) and changes nothing.
    plain_url = text.status_callback.split("?", 1)[0]
    unknown = await twilio.post_callback(plain_url, {**params, "MessageSid": "SM" + "0" * 32})
    assert (unknown.status, unknown.answer.replace(" ", "")) == (200, '{"applied":false}')
    assert await rows(pool, "SELECT status, transport_message_id FROM sms_messages") == [
        ("delivered", text.sid)
    ]


# --- Nothing lost, nothing twice ---------------------------------------------------------------


async def test_transient_failures_are_retried_permanent_ones_recorded_and_redeliveries_send_once(
    http: httpx.AsyncClient, accounts: Any, pool: Pool, sms_worker: list[Consumer], twilio: FakeTwilio
) -> None:
    twilio.send_callbacks = False
    ann = bearer((await register(http))["token"])
    await http.post("/api/v1/dashboard/profile/phone", json={"phone": ANN_PHONE}, headers=ann)
    codes = consumer(sms_worker, "sms-phone-codes")
    event = await latest_event(pool, "smm.accounts.sms.requested")
    twilio.fail_next(1, 500)
    retry = await codes.handle(event, _nothing)
    assert isinstance(retry, Retry)
    assert "Twilio 500" in retry.reason
    assert await rows(pool, "SELECT status, error <> '' FROM sms_messages") == [("queued", True)]
    twilio.fail_next(1, 429)
    throttled = await codes.handle(event, _nothing)
    assert isinstance(throttled, Retry)
    assert throttled.delay_s == 1.0  # Twilio's Retry-After
    assert await codes.handle(event, _nothing) == Ok()
    [text] = twilio.texts_to(ANN_PHONE)
    [(status, sid)] = await rows(pool, "SELECT status, transport_message_id FROM sms_messages")
    assert (status, sid) == ("sent", text.sid)
    # The redelivery of an event whose text went out sends nothing, and mints no new code.
    [(codes_before,)] = await rows(pool, "SELECT count(*) FROM phone_codes")
    assert await codes.handle(event, _nothing) == Ok()
    assert len(twilio.texts_to(ANN_PHONE)) == 1
    assert await rows(pool, "SELECT count(*) FROM phone_codes") == [(codes_before,)]
    [first_code] = CODE.findall(text.body)
    works = await http.post("/api/v1/dashboard/profile/phone/verify", json={"code": first_code}, headers=ann)
    assert works.status_code == 200, works.text

    # A number Twilio refuses: failed with its code, the number suppressed, the event dead-lettered.
    bob = bearer((await register(http, "bob@example.com"))["token"])
    twilio.invalid_numbers.add(BOB_PHONE)
    await http.post("/api/v1/dashboard/profile/phone", json={"phone": BOB_PHONE}, headers=bob)
    refused = await codes.handle(await latest_event(pool, "smm.accounts.sms.requested"), _nothing)
    assert isinstance(refused, Permanent)
    assert "21211" in refused.reason
    assert await rows(
        pool, "SELECT status, error_code FROM sms_messages WHERE to_number = %s", BOB_PHONE
    ) == [("failed", "21211")]
    assert await rows(pool, "SELECT number FROM sms_suppressions") == [(BOB_PHONE,)]


async def dead_letters_of(settings: Settings, durable: str) -> list[Any]:
    """The durable's dead letters, once it has any (the worker runs meanwhile)."""
    nc = await connect(settings.nats_url, name=f"tests-{durable}")
    try:
        letters: list[Any] = []

        async def dead_lettered() -> bool:
            letters[:] = await list_dead_letters(nc, Namespace(settings.nats_namespace), durable=durable)
            return bool(letters)

        await eventually(dead_lettered)
    finally:
        await nc.close()
    return letters


async def test_a_refused_text_is_dead_lettered_with_the_reason_by_the_running_worker(
    http: httpx.AsyncClient, worker_settings: Settings, pool: Pool, twilio: FakeTwilio
) -> None:
    twilio.invalid_numbers.add(BOB_PHONE)
    bob = bearer((await register(http, "bob@example.com"))["token"])
    async with running_worker(worker_settings, "sms"):
        await http.post("/api/v1/dashboard/profile/phone", json={"phone": BOB_PHONE}, headers=bob)
        letters = await dead_letters_of(worker_settings, "sms-phone-codes")
    [letter] = letters
    assert letter.subject == "smm.accounts.sms.requested"
    assert "21211" in letter.reason
    assert "not a valid phone number" in letter.reason
    assert await rows(pool, "SELECT status FROM sms_messages") == [("failed",)]


async def test_a_text_that_cannot_be_rendered_is_recorded_failed_and_dead_lettered_at_once(
    http: httpx.AsyncClient,
    worker_settings: Settings,
    pool: Pool,
    twilio: FakeTwilio,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A render error is deterministic (here the worker predates a template the server plans, as
    in a rolling deploy: ``LookupError``; ``RENDER_ERRORS`` as for email): the running worker records
    the text failed with the error and dead-letters the event on its first delivery, never retrying
    it, and nothing reaches Twilio."""
    monkeypatch.setattr(
        texts_render, "TEMPLATES", tuple(t for t in texts_render.TEMPLATES if t != "phone_verification")
    )
    ann = bearer((await register(http))["token"])
    async with running_worker(worker_settings, "sms"):
        added = await http.post("/api/v1/dashboard/profile/phone", json={"phone": ANN_PHONE}, headers=ann)
        assert added.status_code == 200, added.text
        letters = await dead_letters_of(worker_settings, "sms-phone-codes")
    [letter] = letters
    assert letter.subject == "smm.accounts.sms.requested"
    assert letter.deliveries == 1  # terminated on the first delivery, not after max_deliver
    assert "cannot be rendered" in letter.reason
    assert "LookupError" in letter.reason
    assert twilio.requests == []
    [(status, error, sid)] = await rows(pool, "SELECT status, error, transport_message_id FROM sms_messages")
    assert (status, sid) == ("failed", "")
    assert "no text message template 'phone_verification'" in error


async def _an_api_key_security_text(
    http: httpx.AsyncClient, accounts: Any, pool: Pool, sms_worker: list[Consumer], twilio: FakeTwilio
) -> tuple[Consumer, Event]:
    """A user with a verified phone who wants security texts creates an API key: the consumer that
    texts about it, and the event it handles (Twilio sends no status callbacks)."""
    twilio.send_callbacks = False
    ann = bearer((await register(http))["token"])
    await verified_phone(http, accounts, ann, ANN_PHONE)
    await opt_in(http, ann, sms={"security": True})
    await http.post("/api/v1/dashboard/api-keys", json={"name": "bot"}, headers=ann)
    return consumer(sms_worker, "sms-api-keys"), await latest_event(pool, "smm.accounts.api_key.created")


async def test_a_crash_between_the_send_and_its_record_is_the_documented_window(
    http: httpx.AsyncClient, accounts: Any, pool: Pool, sms_worker: list[Consumer], twilio: FakeTwilio
) -> None:
    keys, event = await _an_api_key_security_text(http, accounts, pool, sms_worker, twilio)
    assert await keys.handle(event, _nothing) == Ok()
    # The worker died after recording the SID and before acking: the redelivery sends nothing.
    assert await keys.handle(event, _nothing) == Ok()
    assert len(twilio.texts_to(ANN_PHONE)) == 1
    # It died after Twilio accepted and before the SID was recorded ("sending", no SID): with no
    # idempotency key at Twilio, the redelivery sends again rather than risk losing the notice.
    async with pool.connection() as conn:
        await conn.execute("UPDATE sms_messages SET status = 'sending', transport_message_id = ''")
    assert await keys.handle(event, _nothing) == Ok()
    assert len(twilio.texts_to(ANN_PHONE)) == 2
    assert await rows(pool, "SELECT count(*), min(status) FROM sms_messages") == [(1, "sent")]


async def test_the_twilio_transport_classifies_what_goes_wrong(twilio_api: FakeTwilio) -> None:
    message = TextMessage(ANN_PHONE, "hello")
    wrong_token = TwilioTransport(TWILIO_ACCOUNT_SID, "not-the-token", TWILIO_FROM, twilio_api.base_url)
    with pytest.raises(PermanentSmsError) as refused:
        await wrong_token.send(message, idempotency_key="k")
    assert (refused.value.status, refused.value.code) == (401, "20003")
    await wrong_token.aclose()
    closed = TwilioTransport(
        TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_FROM, f"http://127.0.0.1:{free_port()}"
    )
    with pytest.raises(TransientSmsError) as unreachable:
        await closed.send(message, idempotency_key="k")
    assert not unreachable.value.ambiguous  # nothing left: safe to retry
    await closed.aclose()
    service = TwilioTransport(TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, "MG" + "1" * 32, twilio_api.base_url)
    twilio_api.fail_next(1, 503)
    with pytest.raises(TransientSmsError) as unavailable:
        await service.send(message, idempotency_key="k")
    assert unavailable.value.status == 503
    sid = await service.send(message, idempotency_key="k")
    assert re.fullmatch(r"SM[0-9a-f]{32}", sid)
    assert twilio_api.requests[-1]["MessagingServiceSid"] == "MG" + "1" * 32
    assert "From" not in twilio_api.requests[-1]
    await service.aclose()


def test_sms_preview_prints_a_text(capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings("postgresql://unused", panel_name="Panel")
    assert preview_sms(settings, "phone_verification") == 0
    assert "Panel: your verification code is 482913" in capsys.readouterr().out
    assert preview_sms(settings, "nope") == 2


async def test_turning_on_two_factor_raises_a_security_notice(
    http: httpx.AsyncClient, accounts: Any, pool: Pool, sms_worker: list[Consumer], twilio: FakeTwilio
) -> None:
    twilio.send_callbacks = False
    ann = bearer((await register(http))["token"])
    await verified_phone(http, accounts, ann, ANN_PHONE)
    await opt_in(http, ann, sms={"security": True})
    security = consumer(sms_worker, "sms-security")
    setup = (await http.post("/api/v1/auth/totp/setup", json={}, headers=ann)).json()
    enabled = await http.post(
        "/api/v1/auth/totp/enable",
        json={"password": PASSWORD, "code": pyotp.TOTP(setup["secret"]).now()},
        headers=ann,
    )
    assert enabled.status_code == 200, enabled.text
    assert await security.handle(await latest_event(pool, "smm.accounts.security.changed"), _nothing) == Ok()
    await wait_for_text(twilio, ANN_PHONE, "two-factor sign-in was turned on")
    payloads = await rows(
        pool, "SELECT payload FROM outbox_events WHERE subject = 'smm.accounts.security.changed' ORDER BY id"
    )
    changes = [SecurityChanged.FromString(bytes(p)).change for (p,) in payloads]
    assert changes == [SECURITY_CHANGE_TWO_FACTOR_ENABLED]


# --- Keys, dead-letter alerts and replays ------------------------------------------------------


async def test_one_event_may_plan_two_texts_for_one_number(http: httpx.AsyncClient, pool: Pool) -> None:
    """Rows are keyed by (event, number, template): a second template for the same number and event
    is a message of its own, not folded into the first."""
    uid = await user_id(http, bearer((await register(http))["token"]))
    async with pool.connection() as conn:
        for template in ("order_completed", "admin_alert", "order_completed"):
            await SMS_QUERIES.execute(
                conn,
                "plan_sms",
                event_id="e-two",
                user_id=uid,
                to_number=ANN_PHONE,
                template=template,
                status="queued",
                resend_failed=True,
            )
    assert await rows(pool, "SELECT template FROM sms_messages WHERE event_id = 'e-two' ORDER BY id") == [
        ("order_completed",),
        ("admin_alert",),
    ]


def _sms_dead_letter(event_id: str, durable: str, sequence: int) -> Event:
    headers = {
        "Nats-Msg-Id": f"dlq:{durable}:{event_id}:{sequence}",
        "Smm-Event-Id": event_id,
        "Smm-Dlq-Reason": "UNAVAILABLE: down",
        "Smm-Dlq-Deliveries": "6",
        "Smm-Original-Subject": "smm.orders.order.created",
        "Smm-Dlq-Durable": durable,
    }
    return Event(id=event_id, subject=f"smm.dlq.{durable}", payload=b"", headers=headers, delivery=1)


async def test_every_dead_letter_of_one_event_texts_the_admins_once(
    shop: Shop, accounts: Any, pool: Pool, sms_worker: list[Consumer], twilio: FakeTwilio
) -> None:
    await verified_phone(shop.http, accounts, shop.admin, ADMIN_PHONE)
    dlq = consumer(sms_worker, "sms-dlq")
    # Two durables give up on one event, one of them twice (a replayed event dead-lettered again).
    for durable, sequence in (
        ("email-orders", 1),
        ("dispatch-order-created", 2),
        ("dispatch-order-created", 9),
    ):
        letter = _sms_dead_letter("ev-1", durable, sequence)
        assert await dlq.handle(letter, _nothing) == Ok()
        assert await dlq.handle(letter, _nothing) == Ok()  # redelivered: not again
    # The second of one consumer is within SMM_ADMIN_ALERT_INTERVAL_S of the first: held back.
    assert len(twilio.texts_to(ADMIN_PHONE)) == 2
    # The email alerter's own dead letters: one text per event, however many there are.
    for sequence in (10, 11):
        assert await dlq.handle(_sms_dead_letter("ev-1", "email-dlq", sequence), _nothing) == Ok()
    assert len(twilio.texts_to(ADMIN_PHONE)) == 3
    assert await rows(
        pool,
        "SELECT event_id, status = 'quieted' FROM sms_messages WHERE template = 'admin_alert' ORDER BY id",
    ) == [
        ("dlq:email-orders:ev-1:1", False),
        ("dlq:dispatch-order-created:ev-1:2", False),
        ("dlq:dispatch-order-created:ev-1:9", True),
        ("dlq-alerts:ev-1", False),
    ]


async def test_a_burst_of_review_alerts_texts_once_and_the_next_says_how_many_were_held_back(
    shop: Shop, accounts: Any, pool: Pool, sms_worker: list[Consumer], twilio: FakeTwilio
) -> None:
    await verified_phone(shop.http, accounts, shop.admin, ADMIN_PHONE)
    orders = consumer(sms_worker, "sms-orders")
    for n in (1, 2, 3, 2):  # the last one a redelivery
        assert await orders.handle(review(n), _nothing) == Ok()
    [first] = twilio.texts_to(ADMIN_PHONE)
    assert "Order 1: the provider's answer is unknown" in first.body
    assert await rows(
        pool,
        "SELECT event_id, status = 'quieted' FROM sms_messages WHERE template = 'admin_alert' ORDER BY id",
    ) == [("review-1", False), ("review-2", True), ("review-3", True)]
    # The email window is its own: texts held back do not hold mail back, nor the other way.
    assert await rows(pool, "SELECT channel, kind, held_back FROM admin_alert_windows") == [
        ("sms", "review", 2)
    ]
    await rows(
        pool, "UPDATE admin_alert_windows SET open_time = open_time - interval '601 seconds' RETURNING kind"
    )
    assert await orders.handle(review(4), _nothing) == Ok()
    texts = twilio.texts_to(ADMIN_PHONE)
    assert len(texts) == 2
    assert "Order 4: the provider's answer is unknown" in texts[-1].body
    assert "2 more alert(s) like this were held back since" in texts[-1].body


async def test_a_replayed_event_resends_a_text_twilio_refused_but_never_one_it_took(
    http: httpx.AsyncClient, accounts: Any, pool: Pool, sms_worker: list[Consumer], twilio: FakeTwilio
) -> None:
    keys, event = await _an_api_key_security_text(http, accounts, pool, sms_worker, twilio)
    twilio.fail_next(1, 401)  # credentials refused until the operator fixes them: failed, dead-lettered
    assert isinstance(await keys.handle(event, _nothing), Permanent)
    assert await rows(pool, "SELECT status, transport_message_id FROM sms_messages") == [("failed", "")]
    # `smm dlq replay` re-drives the event with its id after the fix: the text goes out.
    assert await keys.handle(event, _nothing) == Ok()
    [text] = twilio.texts_to(ANN_PHONE)
    assert await rows(pool, "SELECT status, transport_message_id FROM sms_messages") == [("sent", text.sid)]
    # Twilio took it and reported it failed later: it has a SID and is never sent again.
    async with pool.connection() as conn:
        await conn.execute("UPDATE sms_messages SET status = 'failed'")
    assert await keys.handle(event, _nothing) == Ok()
    assert len(twilio.texts_to(ANN_PHONE)) == 1


async def test_a_number_refused_for_one_admin_still_texts_the_others(
    shop: Shop, accounts: Any, pool: Pool, sms_worker: list[Consumer], twilio: FakeTwilio
) -> None:
    """Twilio refusing one admin's number is recorded and dead-lettered, but the other admins are
    still texted: a dead letter's alert is never planned again, so one not sent now never would be."""
    await verified_phone(shop.http, accounts, shop.admin, ADMIN_PHONE)
    second = await shop.user("second-admin@example.com", "1.00")
    await verified_phone(shop.http, accounts, second, BOB_PHONE)
    async with pool.connection() as conn:
        await conn.execute("UPDATE users SET role = 'admin' WHERE email = 'second-admin@example.com'")
    twilio.invalid_numbers.add(ADMIN_PHONE)
    letter = _sms_dead_letter("ev-2", "dispatch-order-created", 3)
    outcome = await consumer(sms_worker, "sms-dlq").handle(letter, _nothing)
    assert isinstance(outcome, Permanent)
    assert "21211" in outcome.reason
    await wait_for_text(twilio, BOB_PHONE, "alert")
    assert await rows(
        pool, "SELECT to_number, status FROM sms_messages WHERE template = 'admin_alert' ORDER BY id"
    ) == [(ADMIN_PHONE, "failed"), (BOB_PHONE, "sent")]
