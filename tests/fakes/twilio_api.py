"""A loopback stand-in for Twilio's Messages API, served over real HTTP by Sanic, that also posts
signed status callbacks.

What it implements, as Twilio documents it: ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``
with HTTP basic authentication (the account SID and auth token; 401 with code 20003 otherwise, 404
20404 for another account's path); a form body with ``To`` (E.164, else 400 code 21211), ``From`` or
``MessagingServiceSid`` (else 21603), ``Body`` (else 21602; at most 1600 characters, else 21617)
and an optional ``StatusCallback``; a 201 answer with the message resource (``sid`` is ``SM`` and 32
hex digits, ``status`` ``queued``). Errors have Twilio's shape ``{"code", "message", "more_info",
"status"}``.

After accepting a message with a ``StatusCallback``, it posts Twilio's callbacks to that URL, form
encoded and signed with ``X-Twilio-Signature`` (the SDK's ``RequestValidator.compute_signature``
over the URL and the parameters): ``sent``, then ``delivered``, or ``undelivered`` with an
``ErrorCode`` for the numbers in ``undeliverable``. ``deliver_to`` sends them to another origin
than the URL's own (the edge on loopback, as a reverse proxy would) while signing the public URL.

Knobs: ``fail_next`` answers the next requests with 500, 503, 429 (with ``Retry-After``) or 400
before anything is stored; numbers in ``invalid_numbers`` are refused with 21211. Every request and
every callback is recorded; ``settle()`` waits for the callbacks in flight.

(PYTEST_DONT_REWRITE: test modules import this before pytest loads it as a plugin.)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx
import pytest
from sanic import Request, Sanic
from sanic.response import HTTPResponse
from sanic.response import json as json_response
from twilio.request_validator import RequestValidator

from ops.embedded import free_port

__all__ = [
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_FROM",
    "Callback",
    "FakeTwilio",
    "SentText",
    "start_fake_twilio",
    "twilio_api",
    "twilio_signature",
]

TWILIO_ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
TWILIO_AUTH_TOKEN = "twilio-test-auth-token-0123456789"
TWILIO_FROM = "+15550006666"
_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
_names = itertools.count()

_FAILURES = {
    500: (20500, "Internal Server Error"),
    503: (20503, "Service Unavailable"),
    429: (20429, "Too Many Requests"),
    400: (21211, "The 'To' number is not a valid phone number."),
}


@dataclass
class SentText:
    sid: str
    to: str
    sender: str
    body: str
    status_callback: str


@dataclass
class Callback:
    url: str  # the URL signed (the StatusCallback)
    params: dict[str, str]
    status: int  # what the receiver answered
    answer: str


@dataclass
class FakeTwilio:
    account_sid: str = TWILIO_ACCOUNT_SID
    auth_token: str = TWILIO_AUTH_TOKEN
    base_url: str = ""
    messages: dict[str, SentText] = field(default_factory=dict)
    requests: list[dict[str, str]] = field(default_factory=list)
    callbacks: list[Callback] = field(default_factory=list)
    invalid_numbers: set[str] = field(default_factory=set)
    undeliverable: dict[str, str] = field(default_factory=dict)  # number -> ErrorCode
    deliver_to: str = ""  # origin that receives the callbacks, e.g. http://127.0.0.1:PORT
    send_callbacks: bool = True
    _failures: list[int] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def fail_next(self, count: int = 1, status: int = 500) -> None:
        """Answer the next ``count`` authenticated requests with ``status`` (Twilio's error body)."""
        self._failures.extend([status] * count)

    def texts_to(self, number: str) -> list[SentText]:
        return [m for m in self.messages.values() if m.to == number]

    async def settle(self, timeout_s: float = 10.0) -> None:
        """Wait until every status callback in flight was answered."""
        async with asyncio.timeout(timeout_s):
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def handle_create(self, request: Request, account: str) -> HTTPResponse:
        form = {k: v for k, v in parse_qsl(request.body.decode("utf-8"), keep_blank_values=True)}
        self.requests.append(form)
        if not self._authorised(request.headers.get("authorization", "")):
            return _error(401, 20003, "Authenticate")
        if account != self.account_sid:
            return _error(
                404, 20404, f"The requested resource /Accounts/{account}/Messages.json was not found"
            )
        if self._failures:
            status = self._failures.pop(0)
            code, message = _FAILURES.get(status, (20500, "Injected failure"))
            return _error(status, code, message, headers={"retry-after": "1"} if status == 429 else None)
        to = form.get("To", "")
        if not to:
            return _error(400, 21604, "A 'To' phone number is required.")
        if not _E164.fullmatch(to) or to in self.invalid_numbers:
            return _error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        sender = form.get("From") or form.get("MessagingServiceSid") or ""
        if not sender:
            return _error(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required.")
        body = form.get("Body", "")
        if not body:
            return _error(400, 21602, "Message body is required.")
        if len(body) > 1600:
            return _error(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        sid = "SM" + secrets.token_hex(16)
        callback = form.get("StatusCallback", "")
        self.messages[sid] = SentText(sid, to, sender, body, callback)
        if callback and self.send_callbacks:
            task = asyncio.get_running_loop().create_task(self._post_callbacks(self.messages[sid]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        now = format_datetime(datetime.now(UTC))
        return json_response(
            {
                "sid": sid,
                "account_sid": self.account_sid,
                "to": to,
                "from": form.get("From"),
                "messaging_service_sid": form.get("MessagingServiceSid"),
                "body": body,
                "status": "queued",
                "num_segments": "1",
                "direction": "outbound-api",
                "api_version": "2010-04-01",
                "date_created": now,
                "date_updated": now,
                "date_sent": None,
                "error_code": None,
                "error_message": None,
                "price": None,
                "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
            },
            status=201,
        )

    def _authorised(self, header: str) -> bool:
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return secrets.compare_digest(user, self.account_sid) and secrets.compare_digest(
            password, self.auth_token
        )

    async def _post_callbacks(self, text: SentText) -> None:
        final = ["undelivered"] if text.to in self.undeliverable else ["delivered"]
        for status in ["sent", *final]:
            params = {
                "SmsSid": text.sid,
                "SmsStatus": status,
                "MessageStatus": status,
                "To": text.to,
                "MessageSid": text.sid,
                "AccountSid": self.account_sid,
                "From": text.sender,
                "ApiVersion": "2010-04-01",
            }
            if status == "undelivered":
                params["ErrorCode"] = self.undeliverable[text.to]
            await self.post_callback(text.status_callback, params)

    async def post_callback(
        self, url: str, params: dict[str, str], *, signature: str | None = None
    ) -> Callback:
        """Post one status callback as Twilio would (signed over ``url`` unless ``signature`` is given)."""
        signed = twilio_signature(self.auth_token, url, params) if signature is None else signature
        target = url
        if self.deliver_to:
            parts, origin = urlsplit(url), urlsplit(self.deliver_to)
            target = urlunsplit((origin.scheme, origin.netloc, parts.path, parts.query, ""))
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(
                target,
                data=params,
                headers={"X-Twilio-Signature": signed, "User-Agent": "TwilioProxy/1.1"},
            )
        recorded = Callback(url, params, response.status_code, response.text)
        self.callbacks.append(recorded)
        return recorded


def twilio_signature(auth_token: str, url: str, params: dict[str, str]) -> str:
    """``X-Twilio-Signature`` for a callback to ``url`` with form ``params``."""
    signature: str = RequestValidator(auth_token).compute_signature(url, params)
    return signature


def _error(status: int, code: int, message: str, *, headers: dict[str, str] | None = None) -> HTTPResponse:
    return json_response(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status=status,
        headers=headers,
    )


@dataclass
class RunningFakeTwilio:
    fake: FakeTwilio
    server: Any

    async def stop(self) -> None:
        await self.fake.settle()
        await self.server.before_stop()
        self.server.close()
        await self.server.wait_closed()
        await self.server.after_stop()


async def start_fake_twilio(fake: FakeTwilio | None = None) -> RunningFakeTwilio:
    fake = fake or FakeTwilio()
    app = Sanic(f"fake-twilio-{next(_names)}")
    app.config.TOUCHUP = False  # as in tests/fix_edge.py: many apps per test session
    # Longer than the clients' keep-alive (httpx's 5 s), as the real API's load balancers are: with
    # 1 s the fake closed an idle connection just as a client reused it, a ReadError in a test
    # (test_notifications, a redelivery about a second after the first send) that the real
    # service does not cause.
    app.config.KEEP_ALIVE_TIMEOUT = 30

    @app.post("/2010-04-01/Accounts/<account>/Messages.json")
    async def create_message(request: Request, account: str) -> HTTPResponse:
        return fake.handle_create(request, account)

    port = free_port()
    server: Any = await app.create_server(
        host="127.0.0.1", port=port, return_asyncio_server=True, access_log=False, debug=False
    )
    assert server is not None
    await server.startup()
    await server.before_start()
    await server.after_start()
    fake.base_url = f"http://127.0.0.1:{port}"
    return RunningFakeTwilio(fake, server)


@pytest.fixture
async def twilio_api() -> AsyncIterator[FakeTwilio]:
    running = await start_fake_twilio()
    yield running.fake
    await running.stop()
