"""Verification, password reset and email change, with links read from the .eml files the
email worker writes, as a person would read them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from core.config import Settings
from server.common.db import Pool
from tests.fakes.resend_api import FakeResend, resend_settings
from tests.fix_nats import running_worker
from tests.integration.test_accounts import PASSWORD, register
from tests.integration.test_edge_http import assert_error
from tests.mailbox import _LINK, read_mail, wait_for_mail
from workers.email import consumers as email_consumers
from workers.rpc import open_channel
from workers.runner import Event, Ok, Permanent

pytestmark = pytest.mark.integration


@pytest.fixture
def mail_dir(tmp_path: Path) -> Path:
    return tmp_path / "mail"


@pytest.fixture
async def email_worker(worker_settings: Settings, mail_dir: Path) -> AsyncIterator[None]:
    async with running_worker(worker_settings.model_copy(update={"mail_dir": str(mail_dir)}), "email"):
        yield


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_registration_sends_a_single_use_verification_link(
    http: httpx.AsyncClient, email_worker: None, mail_dir: Path
) -> None:
    body = await register(http, "ann@example.com")
    assert body["user"]["emailVerified"] is False
    [mail] = await wait_for_mail(mail_dir, "ann@example.com")
    assert "Confirm your email address" in mail.subject
    assert mail.link.startswith("http://127.0.0.1:8080/verify-email?token=smm_l_")
    assert mail.link.replace("&", "&amp;") in mail.html  # the HTML part carries the same link
    assert oct(mail.path.stat().st_mode & 0o777) == "0o600"

    verified = await http.post("/api/v1/auth/email/verify", json={"token": mail.token})
    assert verified.status_code == 200, verified.text
    assert verified.json() == {"email": "ann@example.com"}
    me = await http.get("/api/v1/auth/me", headers=bearer(body["token"]))
    assert me.json()["emailVerified"] is True

    again = await http.post("/api/v1/auth/email/verify", json={"token": mail.token})
    assert_error(again, 400, "FAILED_PRECONDITION", "INVALID_LINK")
    resend = await http.post("/api/v1/auth/email/verification", json={}, headers=bearer(body["token"]))
    assert_error(resend, 400, "FAILED_PRECONDITION", "EMAIL_ALREADY_VERIFIED")


async def test_a_new_verification_link_voids_the_earlier_one(
    http: httpx.AsyncClient, email_worker: None, mail_dir: Path
) -> None:
    body = await register(http, "ann@example.com")
    [first] = await wait_for_mail(mail_dir, "ann@example.com")
    resend = await http.post("/api/v1/auth/email/verification", json={}, headers=bearer(body["token"]))
    assert resend.status_code == 200, resend.text
    second = (await wait_for_mail(mail_dir, "ann@example.com", 2))[1]
    assert second.token != first.token
    old = await http.post("/api/v1/auth/email/verify", json={"token": first.token})
    assert_error(old, 400, "FAILED_PRECONDITION", "INVALID_LINK")
    new = await http.post("/api/v1/auth/email/verify", json={"token": second.token})
    assert new.status_code == 200


async def test_forgotten_password_reply_never_tells_who_has_an_account(
    http: httpx.AsyncClient, email_worker: None, mail_dir: Path, pool: Pool
) -> None:
    body = await register(http, "ann@example.com")
    await wait_for_mail(mail_dir, "ann@example.com")  # the verification mail
    known = await http.post("/api/v1/auth/password/forgot", json={"email": "ANN@example.com"})
    unknown = await http.post("/api/v1/auth/password/forgot", json={"email": "nobody@example.com"})
    assert known.status_code == unknown.status_code == 200
    assert known.json() == unknown.json() == {}

    reset_mail = (await wait_for_mail(mail_dir, "ann@example.com", 2))[1]
    assert "Reset your password" in reset_mail.subject
    assert reset_mail.link.startswith("http://127.0.0.1:8080/reset-password?token=")
    assert not [m for m in read_mail(mail_dir) if m.to == "nobody@example.com"]

    # A password that breaks the rules is refused without using the link up.
    short = await http.post(
        "/api/v1/auth/password/reset", json={"token": reset_mail.token, "newPassword": "x"}
    )
    assert_error(short, 400, "INVALID_ARGUMENT")
    done = await http.post(
        "/api/v1/auth/password/reset", json={"token": reset_mail.token, "newPassword": "a brand new secret"}
    )
    assert done.status_code == 200, done.text

    # Every session ended; the old password is dead, the new one works; the link is used up.
    old_session = await http.get("/api/v1/auth/me", headers=bearer(body["token"]))
    assert_error(old_session, 401, "UNAUTHENTICATED", "INVALID_CREDENTIAL")
    old_login = await http.post("/api/v1/auth/login", json={"email": "ann@example.com", "password": PASSWORD})
    assert_error(old_login, 401, "UNAUTHENTICATED", "INVALID_LOGIN")
    new_login = await http.post(
        "/api/v1/auth/login", json={"email": "ann@example.com", "password": "a brand new secret"}
    )
    assert new_login.status_code == 200
    assert new_login.json()["user"]["emailVerified"] is True  # the link proved the inbox
    reused = await http.post(
        "/api/v1/auth/password/reset", json={"token": reset_mail.token, "newPassword": "yet another secret"}
    )
    assert_error(reused, 400, "FAILED_PRECONDITION", "INVALID_LINK")


async def test_reset_links_expire(
    http: httpx.AsyncClient, email_worker: None, mail_dir: Path, pool: Pool
) -> None:
    await register(http, "ann@example.com")
    await http.post("/api/v1/auth/password/forgot", json={"email": "ann@example.com"})
    mails = await wait_for_mail(mail_dir, "ann@example.com", 2)
    reset_mail = next(m for m in mails if "reset-password" in m.text)
    # The default lifetime is an hour, and the mail says until when.
    assert "The link works once and until" in reset_mail.text
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT expire_time - create_time FROM account_tokens WHERE purpose = 'reset_password'"
        )
        [(lifetime,)] = await cursor.fetchall()
        assert lifetime.total_seconds() == 3600
        # An hour passes.
        await conn.execute(
            "UPDATE account_tokens SET expire_time = now() - interval '1 second' WHERE purpose = 'reset_password'"
        )
    late = await http.post(
        "/api/v1/auth/password/reset", json={"token": reset_mail.token, "newPassword": "a brand new secret"}
    )
    assert_error(late, 400, "FAILED_PRECONDITION", "INVALID_LINK")


async def test_a_verification_link_cannot_reset_a_password_nor_the_other_way(
    http: httpx.AsyncClient, email_worker: None, mail_dir: Path
) -> None:
    await register(http, "ann@example.com")
    [verify_mail] = await wait_for_mail(mail_dir, "ann@example.com")
    wrong_use = await http.post(
        "/api/v1/auth/password/reset", json={"token": verify_mail.token, "newPassword": "a brand new secret"}
    )
    assert_error(wrong_use, 400, "FAILED_PRECONDITION", "INVALID_LINK")
    # It was not used up by the wrong call.
    assert (
        await http.post("/api/v1/auth/email/verify", json={"token": verify_mail.token})
    ).status_code == 200


async def test_email_change_is_confirmed_by_the_new_address_and_noticed_by_the_old(
    http: httpx.AsyncClient, email_worker: None, mail_dir: Path
) -> None:
    body = await register(http, "ann@example.com")
    await wait_for_mail(mail_dir, "ann@example.com")
    headers = bearer(body["token"])
    wrong = await http.post(
        "/api/v1/auth/email/change", json={"newEmail": "ann@new.example", "password": "not my password"},
        headers=headers,
    )  # fmt: skip
    assert_error(wrong, 400, "FAILED_PRECONDITION", "WRONG_PASSWORD")
    started = await http.post(
        "/api/v1/auth/email/change",
        json={"newEmail": "ann@new.example", "password": PASSWORD},
        headers=headers,
    )
    assert started.status_code == 200, started.text
    assert started.json() == {"pendingEmail": "ann@new.example"}
    me = (await http.get("/api/v1/auth/me", headers=headers)).json()
    assert me["email"] == "ann@example.com"
    assert me["pendingEmail"] == "ann@new.example"

    [confirm] = await wait_for_mail(mail_dir, "ann@new.example")
    notice = (await wait_for_mail(mail_dir, "ann@example.com", 2))[1]
    assert "being changed" in notice.subject
    assert "ann@new.example" in notice.text
    assert "token=" not in notice.text  # a notice carries no link

    confirmed = await http.post("/api/v1/auth/email/verify", json={"token": confirm.token})
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json() == {"email": "ann@new.example"}
    me = (await http.get("/api/v1/auth/me", headers=headers)).json()
    assert (me["email"], me["pendingEmail"], me["emailVerified"]) == ("ann@new.example", "", True)
    login = await http.post("/api/v1/auth/login", json={"email": "ann@new.example", "password": PASSWORD})
    assert login.status_code == 200


async def test_email_change_to_a_taken_address_is_refused(http: httpx.AsyncClient) -> None:
    body = await register(http, "ann@example.com")
    await register(http, "bob@example.com")
    taken = await http.post(
        "/api/v1/auth/email/change",
        json={"newEmail": "BOB@example.com", "password": PASSWORD},
        headers=bearer(body["token"]),
    )
    assert_error(taken, 409, "ALREADY_EXISTS", "EMAIL_TAKEN")
    invalid = await http.post(
        "/api/v1/auth/email/change",
        json={"newEmail": "nope", "password": PASSWORD},
        headers=bearer(body["token"]),
    )
    assert_error(invalid, 400, "INVALID_ARGUMENT")


async def test_a_suspended_account_gets_no_reset_mail(
    http: httpx.AsyncClient, email_worker: None, mail_dir: Path, pool: Pool
) -> None:
    await register(http, "ann@example.com")
    await wait_for_mail(mail_dir, "ann@example.com")
    async with pool.connection() as conn:
        await conn.execute("UPDATE users SET status = 'suspended' WHERE email = 'ann@example.com'")
    reply = await http.post("/api/v1/auth/password/forgot", json={"email": "ann@example.com"})
    assert reply.status_code == 200
    assert reply.json() == {}
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT count(*) FROM outbox_events WHERE subject = 'smm.accounts.email.requested'"
        )
        [(requested,)] = await cursor.fetchall()
    assert requested == 1  # only the verification at sign-up


async def test_links_never_sit_in_the_outbox(
    http: httpx.AsyncClient, email_worker: None, mail_dir: Path, pool: Pool
) -> None:
    await register(http, "ann@example.com")
    await http.post("/api/v1/auth/password/forgot", json={"email": "ann@example.com"})
    mails = await wait_for_mail(mail_dir, "ann@example.com", 2)
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT payload FROM outbox_events")
        payloads = [bytes(row[0]) for row in await cursor.fetchall()]
        cursor = await conn.execute("SELECT token_hash FROM account_tokens")
        stored = [bytes(row[0]) for row in await cursor.fetchall()]
    for mail in mails:
        assert all(mail.token.encode() not in p for p in payloads)
        assert mail.token.encode() not in stored  # only hashes are stored


async def test_a_redelivered_account_email_keeps_the_delivered_link_working(
    http: httpx.AsyncClient, pool: Pool, worker_settings: Settings, resend_api: FakeResend
) -> None:
    """Resend accepted the verification email and the worker died before the ack: the redelivery
    (same event, same idempotency key) must not void the link the user already holds."""
    settings = resend_settings(worker_settings, resend_api)
    rpc = open_channel(settings, "tests")
    [account_consumer, *_] = email_consumers(rpc, settings)
    try:
        await register(http, "ann@example.com")
        event = await account_email_event(pool)
        assert await account_consumer.handle(event, _nothing) == Ok()
        [delivered] = resend_api.emails.values()
        assert await account_consumer.handle(replace(event, delivery=2), _nothing) == Ok()
        assert len(resend_api.emails) == 1  # Resend sent nothing new
        token = parse_qs(urlsplit(_LINK.findall(delivered["text"])[0]).query)["token"][0]
        verified = await http.post("/api/v1/auth/email/verify", json={"token": token})
        assert verified.status_code == 200, verified.text
    finally:
        await rpc.channel.close()


async def test_an_account_email_that_cannot_be_rendered_is_dead_lettered_at_once(
    http: httpx.AsyncClient, pool: Pool, worker_settings: Settings, resend_api: FakeResend
) -> None:
    """A render error (the worker's SMM_WEB_URL has no scheme) is deterministic: Permanent at once
    (dead-lettered with the reason, never retried), so no retry mints another link, and the
    reason never holds the link's token."""
    settings = resend_settings(worker_settings, resend_api, web_url="panel.example")
    rpc = open_channel(settings, "tests")
    [account_consumer, *_] = email_consumers(rpc, settings)
    try:
        await register(http, "ann@example.com")
        event = await account_email_event(pool)
        outcome = await account_consumer.handle(event, _nothing)
        assert isinstance(outcome, Permanent), outcome
        assert "cannot be rendered" in outcome.reason
        assert "UnsafeURLError" in outcome.reason
        assert "token" not in outcome.reason
        assert resend_api.requests == []
        async with pool.connection() as conn:
            cursor = await conn.execute("SELECT count(*) FROM account_tokens")
            assert await cursor.fetchone() == (1,)  # one link minted, for the one attempt
            # Recorded failed with the error (replayed once fixed), which holds no link either.
            cursor = await conn.execute("SELECT template, status, error FROM email_messages")
            [(template, status, error)] = await cursor.fetchall()
        assert (template, status) == ("verify_email", "failed")
        assert "UnsafeURLError" in error
        assert "token" not in error
    finally:
        await rpc.channel.close()


async def account_email_event(pool: Pool) -> Event:
    """The one account-email event in the outbox, as the email worker would receive it."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT event_id::text, subject, payload FROM outbox_events"
            " WHERE subject = 'smm.accounts.email.requested'"
        )
        [(event_id, subject, payload)] = await cursor.fetchall()
    return Event(id=event_id, subject=subject, payload=bytes(payload), headers={}, delivery=1)


async def _nothing() -> None:
    return None
