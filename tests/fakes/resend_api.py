"""A loopback stand-in for Resend's HTTP API (``POST /emails``), served over real HTTP by Sanic.

What it implements, as Resend documents it: Bearer authentication (401 ``missing_api_key``, 403
``invalid_api_key``); a JSON body with ``from``, ``to``, ``subject`` and ``html`` or ``text`` (422
otherwise); ``{"id": "<uuid>"}`` on success; the ``Idempotency-Key`` header (1-256 characters, else
400 ``invalid_idempotency_key``): the same key with the same body replays the first answer and
stores nothing new, the same key with a different body gets 409 ``invalid_idempotent_request``.
Error bodies have Resend's shape ``{"statusCode", "name", "message"}``.

``fail_next`` makes the next requests fail (500, 429 or 422, before any email is stored or any key
is used); every request is recorded. ``svix_headers`` signs a webhook body the way Resend (through
Svix) does, for webhook tests.

(PYTEST_DONT_REWRITE: test modules import this before pytest loads it as a plugin.)
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import itertools
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import SecretStr
from sanic import Request, Sanic
from sanic.response import HTTPResponse
from sanic.response import json as json_response
from svix.webhooks import Webhook

from ops.embedded import free_port

if TYPE_CHECKING:
    from core.config import Settings

__all__ = [
    "RESEND_API_KEY",
    "FakeResend",
    "RecordedRequest",
    "new_webhook_secret",
    "resend_api",
    "start_fake_resend",
    "svix_headers",
]

RESEND_API_KEY = "re_test_0123456789abcdef"
_names = itertools.count()

_FAILURES = {
    500: ("application_error", "An unexpected error occurred."),
    502: ("application_error", "Bad gateway."),
    503: ("application_error", "Service unavailable."),
    429: ("rate_limit_exceeded", "Too many requests. You can only make 2 requests per second."),
    422: ("validation_error", "Invalid `to` field."),
    400: ("validation_error", "Invalid request."),
    403: ("invalid_api_key", "API key is invalid"),
}


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    client_port: int  # the client's end of the connection: one port for many requests is keep-alive
    status: int = 0  # the status the fake answered with

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeResend:
    api_key: str = RESEND_API_KEY
    base_url: str = ""
    emails: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> the accepted body
    requests: list[RecordedRequest] = field(default_factory=list)
    _idempotency: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    _failures: list[int] = field(default_factory=list)

    def fail_next(self, count: int = 1, status: int = 500) -> None:
        """Answer the next ``count`` authenticated requests with ``status`` (Resend's error body)."""
        self._failures.extend([status] * count)

    def clear(self) -> None:
        self.emails.clear()
        self.requests.clear()
        self._idempotency.clear()
        self._failures.clear()

    def handle_send(self, request: Request) -> HTTPResponse:
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=request.body,
            client_port=request.conn_info.client_port if request.conn_info else 0,
        )
        self.requests.append(recorded)
        response = self._send(request)
        recorded.status = response.status
        return response

    def _send(self, request: Request) -> HTTPResponse:
        authorization = request.headers.get("authorization", "")
        if not authorization.startswith("Bearer ") or not authorization[7:].strip():
            return _error(401, "missing_api_key", "Missing API key in the authorization header")
        if not secrets.compare_digest(authorization[7:].strip(), self.api_key):
            return _error(403, "invalid_api_key", "API key is invalid")
        if self._failures:
            status = self._failures.pop(0)
            name, message = _FAILURES.get(status, ("application_error", "Injected failure."))
            headers = {"retry-after": "1"} if status == 429 else None
            return _error(status, name, message, headers=headers)
        try:
            body = json.loads(request.body or b"")
        except ValueError:
            return _error(400, "validation_error", "Invalid JSON body.")
        if not isinstance(body, dict):
            return _error(422, "validation_error", "The body must be a JSON object.")
        key = request.headers.get("idempotency-key")
        fingerprint = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        if key is not None:
            if not 1 <= len(key) <= 256:
                return _error(400, "invalid_idempotency_key", "The key must be between 1-256 chars.")
            if key in self._idempotency:
                seen, answer = self._idempotency[key]
                if seen != fingerprint:
                    return _error(
                        409,
                        "invalid_idempotent_request",
                        "Same idempotency key used with a different request payload.",
                    )
                return json_response(answer)
        problem = _validate(body)
        if problem is not None:
            return _error(422, *problem)
        email_id = str(uuid.uuid4())
        self.emails[email_id] = body
        answer = {"id": email_id}
        if key is not None:
            self._idempotency[key] = (fingerprint, answer)
        return json_response(answer)


def _validate(body: dict[str, Any]) -> tuple[str, str] | None:
    for name in ("from", "to", "subject"):
        if not body.get(name):
            return "missing_required_field", f"Missing `{name}` field."
    to = body["to"]
    recipients = [to] if isinstance(to, str) else to
    if not isinstance(recipients, list) or not all(isinstance(r, str) and "@" in r for r in recipients):
        return "validation_error", "Invalid `to` field."
    if len(recipients) > 50:
        return "validation_error", "Too many recipients: at most 50."
    if "@" not in str(body["from"]):
        return "validation_error", "Invalid `from` field."
    if not (body.get("html") or body.get("text") or body.get("template")):
        return "missing_required_field", "Missing `html` or `text` field."
    return None


def _error(status: int, name: str, message: str, *, headers: dict[str, str] | None = None) -> HTTPResponse:
    return json_response(
        {"statusCode": status, "name": name, "message": message}, status=status, headers=headers
    )


@dataclass
class RunningFakeResend:
    fake: FakeResend
    server: Any

    async def stop(self) -> None:
        await self.server.before_stop()
        self.server.close()
        await self.server.wait_closed()
        await self.server.after_stop()


async def start_fake_resend(fake: FakeResend | None = None) -> RunningFakeResend:
    fake = fake or FakeResend()
    app = Sanic(f"fake-resend-{next(_names)}")
    app.config.TOUCHUP = False  # as in tests/fix_edge.py: many apps per test session
    # Longer than the clients' keep-alive (httpx's 5 s), as the real API's load balancers are: with
    # 1 s the fake closed an idle connection just as a client reused it, a ReadError in a test
    # (test_notifications, a redelivery about a second after the first send) that the real
    # service does not cause.
    app.config.KEEP_ALIVE_TIMEOUT = 30

    @app.post("/emails")
    async def send_email(request: Request) -> HTTPResponse:
        return fake.handle_send(request)

    port = free_port()
    server: Any = await app.create_server(
        host="127.0.0.1", port=port, return_asyncio_server=True, access_log=False, debug=False
    )
    assert server is not None
    await server.startup()
    await server.before_start()
    await server.after_start()
    fake.base_url = f"http://127.0.0.1:{port}"
    return RunningFakeResend(fake, server)


@pytest.fixture
async def resend_api() -> AsyncIterator[FakeResend]:
    running = await start_fake_resend()
    yield running.fake
    await running.stop()


def new_webhook_secret() -> str:
    """A signing secret in Resend's (Svix's) format: ``whsec_`` and base64 of random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode("ascii")


def svix_headers(
    secret: str,
    payload: bytes,
    *,
    msg_id: str | None = None,
    timestamp: datetime.datetime | None = None,
) -> dict[str, str]:
    """The ``svix-id``, ``svix-timestamp`` and ``svix-signature`` headers Resend sends with a
    webhook whose body is ``payload``, signed with ``secret`` (``whsec_...``). Pass ``timestamp``
    (timezone-aware) to make a stale delivery, ``msg_id`` to repeat one."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    timestamp = timestamp or datetime.datetime.now(datetime.UTC)
    if timestamp.tzinfo is None:
        raise ValueError("svix_headers needs a timezone-aware timestamp")
    timestamp = timestamp.astimezone(datetime.UTC)
    signature = Webhook(secret).sign(msg_id, timestamp, payload.decode("utf-8"))
    return {
        "svix-id": msg_id,
        "svix-timestamp": str(int(timestamp.timestamp())),
        "svix-signature": signature,
    }


def resend_settings(worker_settings: Settings, fake: FakeResend, **extra: object) -> Settings:
    """Worker settings that send mail through ``fake`` (plus any ``extra`` setting)."""
    return worker_settings.model_copy(
        update={
            "mail_transport": "resend",
            "resend_api_url": fake.base_url,
            "resend_api_key": SecretStr(fake.api_key),
            **extra,
        }
    )
