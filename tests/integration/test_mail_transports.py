"""The SMTP and Resend transports against real protocol servers on loopback (aiosmtpd, and a Sanic
stand-in for Resend's API), and choosing a transport by name."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
from collections.abc import AsyncIterator, Callable
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
import resend
from svix.webhooks import Webhook, WebhookVerificationError

from ops.embedded import free_port
from tests.fakes.resend_api import (
    RESEND_API_KEY,
    FakeResend,
    new_webhook_secret,
    start_fake_resend,
    svix_headers,
)
from tests.fakes.smtp_server import SMTP_PASSWORD, SMTP_USER, FakeSmtpServer
from workers.mail.eml import EmlTransport
from workers.mail.resend_transport import ResendTransport
from workers.mail.smtp import SmtpTransport, message_id_for
from workers.mail.transports import (
    IdempotencyConflictError,
    PermanentMailError,
    TransientMailError,
    make_transport,
)

pytestmark = pytest.mark.integration
# The fixtures `smtp_server` and `resend_api` (harmless if tests/conftest.py lists these too).

FROM = "SMM Panel <noreply@panel.test>"
TEXT = "Hello Alice,\n\nOpen https://panel.test/verify?token=abc to confirm.\n"
HTML = '<!doctype html><html><body><p>Hello Alice,</p><p><a href="https://panel.test/verify?token=abc">Confirm</a></p></body></html>'


def compose(subject: str = "SMM Panel: Confirm your email address", *, text: str = TEXT) -> EmailMessage:
    """A message shaped like the worker's account emails: both parts, a fresh Message-ID each time."""
    message = EmailMessage()
    message["From"] = FROM
    message["To"] = "Alice Example <alice@example.com>"
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain="smm.local")
    message["X-Smm-Kind"] = "verify-email"
    message.set_content(text)
    message.add_alternative(HTML, subtype="html")
    return message


def smtp_transport(server: FakeSmtpServer, **overrides: object) -> SmtpTransport:
    settings: dict[str, object] = {
        "host": server.host,
        "port": server.port,
        "username": SMTP_USER,
        "password": SMTP_PASSWORD,
        "starttls": True,
        "timeout_s": 10.0,
        "from_address": FROM,
        "cafile": server.cafile,
    }
    settings.update(overrides)
    return SmtpTransport(**settings)  # type: ignore[arg-type]


# --- SMTP -------------------------------------------------------------------------------------


async def test_smtp_starttls_and_auth_deliver_exactly_the_message(smtp_server: FakeSmtpServer) -> None:
    message = compose()
    composed_id = message["Message-ID"]

    sent_id = await smtp_transport(smtp_server).send(message, idempotency_key="evt-0001")

    assert sent_id == message_id_for("evt-0001", "panel.test")
    [mail] = smtp_server.messages
    assert mail.tls, "the session was not upgraded with STARTTLS"
    assert mail.login == SMTP_USER
    assert mail.mail_from == "noreply@panel.test"
    assert mail.rcpt_tos == ["alice@example.com"]
    got = mail.message
    assert got["Subject"] == "SMM Panel: Confirm your email address"
    assert got["From"] == FROM
    assert got["To"] == "Alice Example <alice@example.com>"
    assert got["Message-ID"] == sent_id
    assert got["X-Smm-Kind"] == "verify-email"
    assert got.get_content_type() == "multipart/alternative"
    text = got.get_body(preferencelist=("plain",))
    html = got.get_body(preferencelist=("html",))
    assert text is not None
    assert html is not None
    assert text.get_content() == TEXT
    assert html.get_content().strip() == HTML
    assert message["Message-ID"] == composed_id, "the caller's message was changed"


async def test_smtp_plain_without_auth(smtp_server: FakeSmtpServer) -> None:
    transport = smtp_transport(smtp_server, starttls=False, username=None, password=None, cafile=None)
    await transport.send(compose(), idempotency_key="evt-plain")
    [mail] = smtp_server.messages
    assert not mail.tls
    assert mail.login is None


async def test_smtp_every_attempt_for_one_event_carries_the_same_message_id(
    smtp_server: FakeSmtpServer,
) -> None:
    transport = smtp_transport(smtp_server)
    first = await transport.send(compose(), idempotency_key="evt-dup")
    again = await transport.send(compose(), idempotency_key="evt-dup")  # recomposed after a crash
    other = await transport.send(compose(), idempotency_key="evt-other")

    assert first == again != other
    # SMTP cannot refuse the second copy; receivers can recognise it by its Message-ID.
    assert [m.message["Message-ID"] for m in smtp_server.messages] == [first, first, other]


@pytest.mark.parametrize(
    ("code", "stage", "error"),
    [
        (451, "data", TransientMailError),
        (452, "rcpt", TransientMailError),
        (451, "mail", TransientMailError),
        (550, "rcpt", PermanentMailError),
        (554, "data", PermanentMailError),
        (553, "mail", PermanentMailError),
    ],
)
async def test_smtp_replies_are_classified(
    smtp_server: FakeSmtpServer, code: int, stage: str, error: type[Exception]
) -> None:
    transport = smtp_transport(smtp_server)
    smtp_server.fail_next(1, code, stage=stage)  # type: ignore[arg-type]

    with pytest.raises(error) as raised:
        await transport.send(compose(), idempotency_key="evt-fail")
    assert raised.value.code == code  # type: ignore[attr-defined]
    assert smtp_server.messages == []

    await transport.send(compose(), idempotency_key="evt-fail")  # the refusal was for one message
    assert len(smtp_server.messages) == 1


async def test_smtp_451_is_transient_and_550_permanent(smtp_server: FakeSmtpServer) -> None:
    transport = smtp_transport(smtp_server)
    smtp_server.fail_next(1, 451)
    with pytest.raises(TransientMailError):
        await transport.send(compose(), idempotency_key="evt-451")
    smtp_server.fail_next(1, 550)
    with pytest.raises(PermanentMailError):
        await transport.send(compose(), idempotency_key="evt-550")
    assert not issubclass(TransientMailError, PermanentMailError)
    assert not issubclass(PermanentMailError, TransientMailError)


async def test_smtp_wrong_password_is_permanent(smtp_server: FakeSmtpServer) -> None:
    with pytest.raises(PermanentMailError) as raised:
        await smtp_transport(smtp_server, password="wrong").send(compose(), idempotency_key="evt-auth")
    assert raised.value.code == 535
    assert smtp_server.messages == []


async def test_smtp_untrusted_certificate_is_permanent(smtp_server: FakeSmtpServer) -> None:
    with pytest.raises(PermanentMailError, match="certificate"):
        await smtp_transport(smtp_server, cafile=None).send(compose(), idempotency_key="evt-tls")
    assert smtp_server.messages == []


async def test_smtp_unreachable_is_transient() -> None:
    transport = SmtpTransport("127.0.0.1", free_port(), None, None, False, 5.0, FROM)
    with pytest.raises(TransientMailError):
        await transport.send(compose(), idempotency_key="evt-down")


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A TCP server on loopback that accepts connections and never says a word; yields its port."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_server_that_never_answers_is_transient() -> None:
    async with silent_server() as port:
        smtp = SmtpTransport("127.0.0.1", port, None, None, False, 0.3, FROM)
        with pytest.raises(TransientMailError, match=r"(?i)timed out"):
            await smtp.send(compose(), idempotency_key="evt-silent")
        api = ResendTransport(RESEND_API_KEY, f"http://127.0.0.1:{port}", FROM, timeout_s=0.3)
        with pytest.raises(TransientMailError):
            await api.send(compose(), idempotency_key="evt-silent")
        await api.aclose()


def test_smtp_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="username and password"):
        SmtpTransport("127.0.0.1", 25, "user", None, False, 5.0, FROM)
    with pytest.raises(ValueError, match="no mailbox"):
        SmtpTransport("127.0.0.1", 25, None, None, False, 5.0, "nobody")


# --- Resend -----------------------------------------------------------------------------------


ResendFactory = Callable[..., ResendTransport]


@pytest.fixture
async def resend_transport() -> AsyncIterator[ResendFactory]:
    """Makes transports for a fake (overriding any setting) and closes their connections after."""
    made: list[ResendTransport] = []

    def make(fake: FakeResend, **overrides: object) -> ResendTransport:
        settings: dict[str, object] = {
            "api_key": fake.api_key,
            "api_url": fake.base_url,
            "from_address": FROM,
        }
        settings.update(overrides)
        made.append(ResendTransport(**settings))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for transport in made:
        await transport.aclose()


async def test_resend_delivers_with_the_right_json_and_auth(
    resend_api: FakeResend, resend_transport: ResendFactory
) -> None:
    email_id = await resend_transport(resend_api).send(compose(), idempotency_key="evt-r1")

    assert list(resend_api.emails) == [email_id]
    [request] = resend_api.requests
    assert (request.method, request.path, request.status) == ("POST", "/emails", 200)
    assert request.headers["authorization"] == f"Bearer {RESEND_API_KEY}"
    assert request.headers["idempotency-key"] == "evt-r1"
    assert request.headers["content-type"].startswith("application/json")
    assert request.json == {
        "from": FROM,
        "to": ["Alice Example <alice@example.com>"],
        "subject": "SMM Panel: Confirm your email address",
        "html": HTML + "\n",
        "text": TEXT,
    }


async def test_resend_redelivery_with_the_same_key_sends_once(
    resend_api: FakeResend, resend_transport: ResendFactory
) -> None:
    transport = resend_transport(resend_api)
    first = await transport.send(compose(), idempotency_key="evt-crash")
    # The worker crashed before acking; the event comes back and is composed again (a new
    # Message-ID, the same content) and sent under the same key.
    again = await transport.send(compose(), idempotency_key="evt-crash")

    assert first == again
    assert list(resend_api.emails) == [first]
    assert [r.status for r in resend_api.requests] == [200, 200]
    assert {r.headers["idempotency-key"] for r in resend_api.requests} == {"evt-crash"}


async def test_resend_passes_copies_reply_to_unsubscribe_and_attachments(
    resend_api: FakeResend, resend_transport: ResendFactory
) -> None:
    message = compose()
    message["Cc"] = "Bob <bob@example.com>, carol@example.com"
    message["Bcc"] = "audit@panel.test"
    message["Reply-To"] = "support@panel.test"
    message["List-Unsubscribe"] = "<https://panel.test/unsubscribe?t=1>"
    message.add_attachment(b"%PDF-1.4 receipt", maintype="application", subtype="pdf", filename="receipt.pdf")

    email_id = await resend_transport(resend_api).send(message, idempotency_key="evt-extras")

    body = resend_api.emails[email_id]
    assert body["cc"] == ["Bob <bob@example.com>", "carol@example.com"]
    assert body["bcc"] == ["audit@panel.test"]
    assert body["reply_to"] == ["support@panel.test"]
    assert body["headers"] == {"List-Unsubscribe": "<https://panel.test/unsubscribe?t=1>"}
    assert body["attachments"] == [
        {"filename": "receipt.pdf", "content": "JVBERi0xLjQgcmVjZWlwdA==", "content_type": "application/pdf"}
    ]
    assert body["text"] == TEXT


async def test_resend_same_key_with_different_content_is_a_conflict(
    resend_api: FakeResend, resend_transport: ResendFactory
) -> None:
    transport = resend_transport(resend_api)
    await transport.send(compose(), idempotency_key="evt-changed")
    with pytest.raises(IdempotencyConflictError) as raised:
        await transport.send(compose(text="Something else\n"), idempotency_key="evt-changed")
    assert isinstance(raised.value, PermanentMailError)
    assert raised.value.code == 409
    assert len(resend_api.emails) == 1


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, TransientMailError),
        (503, TransientMailError),
        (429, TransientMailError),
        (422, PermanentMailError),
    ],
)
async def test_resend_errors_are_classified(
    resend_api: FakeResend, resend_transport: ResendFactory, status: int, error: type[Exception]
) -> None:
    transport = resend_transport(resend_api)
    resend_api.fail_next(1, status)

    with pytest.raises(error) as raised:
        await transport.send(compose(), idempotency_key="evt-err")
    assert raised.value.code == status  # type: ignore[attr-defined]
    assert resend_api.emails == {}
    if status == 429:
        assert raised.value.retry_after_s == 1.0  # type: ignore[attr-defined]

    email_id = await transport.send(compose(), idempotency_key="evt-err")  # the retry goes through
    assert list(resend_api.emails) == [email_id]


async def test_resend_wrong_api_key_is_permanent(
    resend_api: FakeResend, resend_transport: ResendFactory
) -> None:
    with pytest.raises(PermanentMailError) as raised:
        await resend_transport(resend_api, api_key="re_wrong").send(compose(), idempotency_key="evt-key")
    assert raised.value.code == 403
    assert resend_api.emails == {}


async def test_resend_unreachable_is_transient() -> None:
    transport = ResendTransport(RESEND_API_KEY, f"http://127.0.0.1:{free_port()}", FROM, timeout_s=5)
    with pytest.raises(TransientMailError, match="unreachable"):
        await transport.send(compose(), idempotency_key="evt-down")
    await transport.aclose()


async def test_resend_keeps_one_connection_and_closes_it(
    resend_api: FakeResend, resend_transport: ResendFactory
) -> None:
    transport = resend_transport(resend_api)
    for i in range(3):
        await transport.send(compose(), idempotency_key=f"evt-pool-{i}")
    assert len({r.client_port for r in resend_api.requests}) == 1, "a new connection for each email"
    assert resend.default_async_http_client is transport.http

    await transport.aclose()
    assert resend.default_async_http_client is not transport.http  # the SDK's own client again
    await transport.send(compose(), idempotency_key="evt-pool-after-close")  # reopens
    assert len(resend_api.emails) == 4


async def test_resend_long_idempotency_key_is_hashed_to_fit(
    resend_api: FakeResend, resend_transport: ResendFactory
) -> None:
    key = "evt-" + "x" * 300
    transport = resend_transport(resend_api)
    first = await transport.send(compose(), idempotency_key=key)
    assert first == await transport.send(compose(), idempotency_key=key)
    assert {len(r.headers["idempotency-key"]) for r in resend_api.requests} == {64}
    assert len(resend_api.emails) == 1


async def test_resend_transports_for_two_accounts_do_not_mix_up_the_sdk_globals(
    resend_transport: ResendFactory,
) -> None:
    one = await start_fake_resend(FakeResend(api_key="re_account_one"))
    two = await start_fake_resend(FakeResend(api_key="re_account_two"))
    try:
        t1, t2 = resend_transport(one.fake), resend_transport(two.fake)
        sends = [
            (t1 if i % 2 == 0 else t2).send(compose(), idempotency_key=f"evt-mix-{i}") for i in range(20)
        ]
        await asyncio.gather(*sends)
    finally:
        await one.stop()
        await two.stop()
    assert len(one.fake.emails) == len(two.fake.emails) == 10
    assert {r.headers["authorization"] for r in one.fake.requests} == {"Bearer re_account_one"}
    assert {r.headers["authorization"] for r in two.fake.requests} == {"Bearer re_account_two"}


# --- make_transport ---------------------------------------------------------------------------


async def test_make_transport_eml_writes_a_file(tmp_path: Path) -> None:
    transport = make_transport("eml", mail_dir=tmp_path / "mail", from_address=FROM)
    assert isinstance(transport, EmlTransport)
    message = compose()

    sent_id = await transport.send(message, idempotency_key="evt-eml")

    assert sent_id == message["Message-ID"]
    written = tmp_path / "mail" / "evt-eml.eml"
    assert written.read_bytes() == message.as_bytes()


async def test_make_transport_smtp_sends_through_the_relay(smtp_server: FakeSmtpServer) -> None:
    transport = make_transport(
        "SMTP",
        from_address=FROM,
        smtp_host=smtp_server.host,
        smtp_port=smtp_server.port,
        smtp_username=SMTP_USER,
        smtp_password=SMTP_PASSWORD,
        smtp_starttls=True,
        smtp_timeout_s=10,
        smtp_cafile=smtp_server.cafile,
    )
    assert isinstance(transport, SmtpTransport)
    await transport.send(compose(), idempotency_key="evt-make-smtp")
    [mail] = smtp_server.messages
    assert mail.tls
    assert mail.login == SMTP_USER


async def test_make_transport_resend_sends_through_the_api(resend_api: FakeResend) -> None:
    transport = make_transport(
        "resend", from_address=FROM, resend_api_key=resend_api.api_key, resend_api_url=resend_api.base_url
    )
    assert isinstance(transport, ResendTransport)
    email_id = await transport.send(compose(), idempotency_key="evt-make-resend")
    assert list(resend_api.emails) == [email_id]
    await transport.aclose()


def test_make_transport_refuses_unknown_kinds_and_missing_settings() -> None:
    with pytest.raises(
        ValueError, match=r"unknown mail transport 'sendgrid': choose one of eml, smtp, resend"
    ):
        make_transport("sendgrid", from_address=FROM)
    with pytest.raises(ValueError, match="SMTP host"):
        make_transport("smtp", from_address=FROM)
    with pytest.raises(ValueError, match="API key"):
        make_transport("resend", from_address=FROM)


# --- the webhook signing helper ---------------------------------------------------------------


def test_svix_headers_verify_with_svix_and_the_resend_sdk() -> None:
    secret = new_webhook_secret()
    payload = json.dumps({"type": "email.delivered", "data": {"email_id": "abc"}}).encode()
    headers = svix_headers(secret, payload)

    Webhook(secret).verify(payload, headers)  # raises when wrong
    event = resend.Webhooks.verify(
        {
            "payload": payload.decode(),
            "headers": {
                "id": headers["svix-id"],
                "timestamp": headers["svix-timestamp"],
                "signature": headers["svix-signature"],
            },
            "webhook_secret": secret,
        }
    )
    assert event["type"] == "email.delivered"

    with pytest.raises(WebhookVerificationError):
        Webhook(new_webhook_secret()).verify(payload, headers)
    stale = svix_headers(
        secret, payload, timestamp=datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    )
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(payload, stale)
