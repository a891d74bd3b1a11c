"""Account emails (verification, password reset, email change) leave the same trail as
notification emails: an ``email_messages`` row with the transport's id, the address and the kind,
never the link or the body. So a hard bounce or a complaint that Resend reports for one suppresses
the address as it does for any other email, and staff see the message in the user's history."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import grpc
import httpx
import pytest
from smm.v1 import accounts_service_pb2 as pb
from smm.v1 import accounts_service_pb2_grpc as pb_grpc

from core.config import Settings
from server.common.db import Pool
from server.main import ServerHandle
from tests.fakes.resend_api import FakeResend, resend_settings, svix_headers
from tests.fix_grpc import system_metadata
from tests.fix_shop import Shop
from tests.integration.test_accounts import register
from tests.integration.test_notifications import resend_hooks
from tests.mailbox import _LINK, read_mail
from workers.email import consumers as email_consumers
from workers.rpc import open_channel
from workers.runner import Event, Ok

pytestmark = pytest.mark.integration
JSON = {"content-type": "application/json"}


async def _events(pool: Pool, subject: str) -> list[Event]:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT event_id::text, subject, payload FROM outbox_events WHERE subject = %s ORDER BY id",
            (subject,),
        )
        rows = await cursor.fetchall()
    return [Event(id=r[0], subject=r[1], payload=bytes(r[2]), headers={}, delivery=1) for r in rows]


async def _rows(pool: Pool) -> list[tuple[object, ...]]:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT template, to_address, status, transport, transport_message_id, error"
            " FROM email_messages ORDER BY id"
        )
        return list(await cursor.fetchall())


async def _stored_text(pool: Pool) -> str:
    """Everything the message table holds, as text: where a link would show if it were stored."""
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT coalesce(string_agg(m::text, ' '), '') FROM email_messages m")
        row = await cursor.fetchone()
    assert row is not None
    return str(row[0])


def _token(body: dict[str, object]) -> str:
    link = _LINK.findall(str(body["text"]))[0]
    return parse_qs(urlsplit(link).query)["token"][0]


async def _nothing() -> None:
    return None


async def test_a_bounced_account_email_suppresses_the_address_and_staff_see_it(
    shop: Shop, pool: Pool, worker_settings: Settings, settings: Settings, resend_api: FakeResend
) -> None:
    worker = resend_settings(worker_settings, resend_api)
    rpc = open_channel(worker, "tests")
    [account_consumer, _orders, wallet_consumer, *_] = email_consumers(rpc, worker)
    try:
        async with resend_hooks(settings, pool) as (secret, edge):
            user = await shop.user("ann@example.com", "5.00")  # a verification email, a balance email
            [verify] = await _events(pool, "smm.accounts.email.requested")
            assert await account_consumer.handle(verify, _nothing) == Ok()
            [(email_id, sent)] = resend_api.emails.items()
            token = _token(sent)
            assert await _rows(pool) == [("verify_email", "ann@example.com", "sent", "resend", email_id, "")]
            assert token not in await _stored_text(pool)  # the link is a credential: never stored
            assert "Confirm your email address" not in await _stored_text(pool)  # nor the body

            async with httpx.AsyncClient(base_url=edge.base_url) as hooks:
                body = json.dumps(
                    {"type": "email.bounced", "data": {"email_id": email_id, "bounce": {"type": "Permanent"}}}
                ).encode()
                bounced = await hooks.post(
                    "/api/v1/webhooks/email/resend",
                    content=body,
                    headers={**svix_headers(secret, body), **JSON},
                )
            assert bounced.status_code == 200, bounced.text
            assert bounced.json() == {"applied": True}

            # The next notification to the address is not sent.
            [adjusted] = await _events(pool, "smm.wallet.balance.adjusted")
            assert await wallet_consumer.handle(adjusted, _nothing) == Ok()
            assert len(resend_api.emails) == 1
            rows = await _rows(pool)
            assert rows[0][:3] == ("verify_email", "ann@example.com", "bounced")
            assert rows[1][:3] == ("balance_adjusted", "ann@example.com", "suppressed")

            # Staff see the account email, without its content.
            me = (await shop.http.get("/api/v1/auth/me", headers=user)).json()
            history = await shop.http.get(f"/api/v1/admin/users/{me['id']}/notifications", headers=shop.admin)
            assert history.status_code == 200, history.text
            listed = {n["template"]: n for n in history.json()["notifications"]}
            assert listed["verify_email"]["status"] == "bounced"
            assert listed["verify_email"]["to"] == "ann@example.com"
            assert token not in history.text

            # Account emails still go to a suppressed address: a user who fixed their mailbox must be
            # able to reset their password (docs/NOTIFICATIONS.md).
            forgot = await shop.http.post("/api/v1/auth/password/forgot", json={"email": "ann@example.com"})
            assert forgot.status_code == 200, forgot.text
            [_, reset] = await _events(pool, "smm.accounts.email.requested")
            assert await account_consumer.handle(reset, _nothing) == Ok()
            assert len(resend_api.emails) == 2
            reset_id = next(i for i in resend_api.emails if i != email_id)
            assert (await _rows(pool))[2] == (
                "password_reset",
                "ann@example.com",
                "sent",
                "resend",
                reset_id,
                "",
            )
            assert _token(resend_api.emails[reset_id]) not in await _stored_text(pool)
    finally:
        await rpc.channel.close()


async def test_a_redelivered_account_email_updates_its_own_row(
    http: httpx.AsyncClient, pool: Pool, worker_settings: Settings, resend_api: FakeResend
) -> None:
    """A redelivery of an account email that was recorded sends nothing and mints no link; one whose
    send was not recorded (the worker died in between) mints a new link, which Resend refuses as a
    duplicate (409, no email id): the same row is recorded sent, saying its id is unknown."""
    settings = resend_settings(worker_settings, resend_api)
    rpc = open_channel(settings, "tests")
    [account_consumer, *_] = email_consumers(rpc, settings)
    try:
        await register(http, "ann@example.com")
        [event] = await _events(pool, "smm.accounts.email.requested")
        assert await account_consumer.handle(event, _nothing) == Ok()
        [email_id] = resend_api.emails
        assert await account_consumer.handle(replace(event, delivery=2), _nothing) == Ok()
        assert len(resend_api.requests) == 1  # recorded as sent: not even asked again
        async with pool.connection() as conn:
            cursor = await conn.execute("SELECT count(*) FROM account_tokens")
            assert await cursor.fetchone() == (1,)  # and no other link minted
            # The worker died after Resend took the email and before it recorded the answer.
            await conn.execute("UPDATE email_messages SET status = 'queued', transport_message_id = ''")
        assert await account_consumer.handle(replace(event, delivery=3), _nothing) == Ok()
        assert len(resend_api.emails) == 1  # Resend sent nothing new (409)
        [(template, to, status, transport, sent_id, error)] = await _rows(pool)
        assert (template, to, status, transport, sent_id) == (
            "verify_email",
            "ann@example.com",
            "sent",
            "resend",
            "",
        )
        assert "409" in error
        assert email_id not in error
    finally:
        await rpc.channel.close()


async def test_an_account_email_through_eml_is_recorded_sent(
    http: httpx.AsyncClient, pool: Pool, worker_settings: Settings, tmp_path: Path
) -> None:
    settings = worker_settings.model_copy(update={"mail_transport": "eml", "mail_dir": str(tmp_path)})
    rpc = open_channel(settings, "tests")
    [account_consumer, *_] = email_consumers(rpc, settings)
    try:
        await register(http, "ann@example.com")
        [event] = await _events(pool, "smm.accounts.email.requested")
        assert await account_consumer.handle(event, _nothing) == Ok()
        [row] = await _rows(pool)
        assert row[:4] == ("verify_email", "ann@example.com", "sent", "eml")
        [mail] = read_mail(tmp_path)
        assert mail.token not in await _stored_text(pool)
    finally:
        await rpc.channel.close()


async def test_no_link_is_minted_for_an_address_other_than_the_planned_one(
    http: httpx.AsyncClient, pool: Pool, grpc_server: ServerHandle
) -> None:
    """The row names the inbox the message goes to: a link asked for another address than the one
    planned (the account's address changed in between) is not minted."""
    body = await register(http, "ann@example.com")
    uid = int(body["user"]["id"])
    kind = pb.ACCOUNT_EMAIL_KIND_RESET_PASSWORD
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_server.port}") as channel:
        accounts = pb_grpc.AccountsServiceStub(channel)
        stale = pb.PrepareAccountEmailRequest(request_id="t1", user_id=uid, kind=kind, to="old@example.com")
        skipped = await accounts.PrepareAccountEmail(stale, metadata=system_metadata("email"))
        assert not skipped.send
        assert not skipped.link
        planned = pb.PrepareAccountEmailRequest(request_id="t2", user_id=uid, kind=kind, to="ann@example.com")
        prepared = await accounts.PrepareAccountEmail(planned, metadata=system_metadata("email"))
        assert prepared.send
        assert prepared.to == "ann@example.com"
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT count(*) FROM account_tokens WHERE purpose = 'reset_password'")
        assert await cursor.fetchone() == (1,)


async def test_an_account_email_delivered_after_a_bounce_lifts_it_but_not_a_complaint(
    shop: Shop, pool: Pool, worker_settings: Settings, settings: Settings, resend_api: FakeResend
) -> None:
    """A bounce suppressed the address for good (until the user changed it): a mailbox that was
    full or briefly gone got no order mail ever again, though the account emails sent to it since
    arrived. A message planned after the bounce and delivered lifts it; an older message's late
    delivery news does not, and a complaint (the user asked for no mail) is never lifted."""
    worker = resend_settings(worker_settings, resend_api)
    rpc = open_channel(worker, "tests")
    [account_consumer, _orders, wallet_consumer, *_] = email_consumers(rpc, worker)

    async def suppressions() -> list[tuple[object, ...]]:
        async with pool.connection() as conn:
            cursor = await conn.execute("SELECT address, reason FROM email_suppressions ORDER BY address")
            return list(await cursor.fetchall())

    try:
        async with (
            resend_hooks(settings, pool) as (secret, edge),
            httpx.AsyncClient(base_url=edge.base_url) as hooks,
        ):

            async def news(kind: str, email_id: str) -> None:
                data: dict[str, object] = {"email_id": email_id}
                if kind == "email.bounced":
                    data["bounce"] = {"type": "Permanent"}
                body = json.dumps({"type": kind, "data": data}).encode()
                answer = await hooks.post(
                    "/api/v1/webhooks/email/resend",
                    content=body,
                    headers={**svix_headers(secret, body), **JSON},
                )
                assert answer.status_code == 200, answer.text

            await shop.user("ann@example.com", "5.00")
            [verify] = await _events(pool, "smm.accounts.email.requested")
            assert await account_consumer.handle(verify, _nothing) == Ok()
            [verify_id] = resend_api.emails
            await news("email.bounced", verify_id)
            assert await suppressions() == [("ann@example.com", "bounced")]
            await news("email.delivered", verify_id)  # late news of the message that bounced
            assert await suppressions() == [("ann@example.com", "bounced")]

            forgot = await shop.http.post("/api/v1/auth/password/forgot", json={"email": "ann@example.com"})
            assert forgot.status_code == 200, forgot.text
            [_, reset] = await _events(pool, "smm.accounts.email.requested")
            assert await account_consumer.handle(reset, _nothing) == Ok()
            [reset_id] = [i for i in resend_api.emails if i != verify_id]
            await news("email.delivered", reset_id)  # the mailbox takes mail again
            assert await suppressions() == []
            [adjusted] = await _events(pool, "smm.wallet.balance.adjusted")
            assert await wallet_consumer.handle(adjusted, _nothing) == Ok()
            assert ("balance_adjusted", "ann@example.com", "sent") in [r[:3] for r in await _rows(pool)]

            await news("email.complained", reset_id)
            assert await suppressions() == [("ann@example.com", "complained")]
            again = await shop.http.post("/api/v1/auth/password/forgot", json={"email": "ann@example.com"})
            assert again.status_code == 200, again.text
            [*_, last] = await _events(pool, "smm.accounts.email.requested")
            assert await account_consumer.handle(last, _nothing) == Ok()
            last_id = list(resend_api.emails)[-1]  # the newest: this reset
            await news("email.delivered", last_id)
            assert await suppressions() == [("ann@example.com", "complained")]
    finally:
        await rpc.channel.close()
