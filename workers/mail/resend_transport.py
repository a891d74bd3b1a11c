"""The Resend transport: the HTTP API (``POST /emails``) through the ``resend`` SDK.

Duplicates: the idempotency key goes out as Resend's ``Idempotency-Key`` header, so a repeated
attempt for one event (a redelivery after a crash before the ack, a retry after a timeout) returns
the first attempt's email id and sends nothing. Resend keeps keys for 24 hours; keys longer than its
256-character limit are replaced by their SHA-256. Resend compares the body too: the same key with
different content is refused (``IdempotencyConflictError``), so the message composed for one event
must be the same on every attempt. The ``Message-ID`` is not sent (Resend sets its own), so a
freshly generated one does not count as different content.

The SDK keeps its configuration in module globals (``resend.api_key``, ``resend.api_url`` and
``resend.default_async_http_client``). This transport uses the SDK's native async call
(``Emails.send_async``; no thread) and assigns those globals immediately before each call. The SDK
reads them while it builds the request, before its first ``await``, so on one event loop no other
coroutine can run in between, and two transports with different accounts can coexist (a test pins
this). Code calling the SDK from other threads at the same time would race with it: the intended
shape is one Resend account per process, used from the worker's event loop.

The HTTP client: the SDK's default opens a new ``httpx.AsyncClient`` per request (about 50 ms of CPU
to build its TLS context, and a new TCP and TLS handshake with Resend every time). This transport
gives the SDK its own client instead, one pooled ``httpx.AsyncClient`` per event loop, kept alive
between messages; ``aclose()`` releases it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Mapping
from email.message import EmailMessage, MIMEPart
from email.utils import formataddr, getaddresses
from typing import Any

import httpx
import resend
from resend.exceptions import ResendError
from resend.http_client_async import AsyncHTTPClient

from workers.mail.transports import IdempotencyConflictError, PermanentMailError, TransientMailError

__all__ = ["ResendTransport", "resend_params"]

# Headers of the composed message passed on to Resend as custom headers (besides From, To, Cc, Bcc,
# Reply-To and Subject, which have their own fields). Anything passed must be the same on every
# attempt, or Resend refuses the retry as a different request.
_FORWARDED_HEADERS = ("List-Unsubscribe", "List-Unsubscribe-Post")
_MAX_KEY = 256


class PooledHttpxClient(AsyncHTTPClient):
    """The SDK's async HTTP client seam, over one long-lived ``httpx.AsyncClient`` per event loop."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        json: dict[str, object] | list[object] | None = None,
        files: dict[str, Any] | None = None,
        data: dict[str, str] | None = None,
    ) -> tuple[bytes, int, Mapping[str, str]]:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:  # pooled connections belong to one loop
            self._client = httpx.AsyncClient(timeout=self.timeout_s)
            self._loop = loop
        try:
            response = await self._client.request(
                method, url, headers=headers, json=json if data is None else None, data=data, files=files
            )
        except httpx.RequestError as exc:  # the SDK turns this into its "HttpClientError"
            raise RuntimeError(f"Request failed: {exc!r}") from exc
        return response.content, response.status_code, response.headers

    async def aclose(self) -> None:
        client, self._client, self._loop = self._client, None, None
        if client is not None:
            await client.aclose()


class ResendTransport:
    def __init__(self, api_key: str, api_url: str, from_address: str, *, timeout_s: float = 30.0) -> None:
        if not api_key:
            raise ValueError("Resend needs an API key")
        self.api_key = api_key
        self.api_url = api_url.rstrip("/")
        self.from_address = from_address
        self.timeout_s = timeout_s
        self.http = PooledHttpxClient(timeout_s)

    async def aclose(self) -> None:
        """Close the pooled HTTP connections (the transport opens them again if used later)."""
        if resend.default_async_http_client is self.http:
            resend.default_async_http_client = resend._auto_async_http_client
        await self.http.aclose()

    async def send(self, message: EmailMessage, *, idempotency_key: str) -> str:
        params = resend_params(message, default_from=self.from_address)
        key = idempotency_key
        if not 1 <= len(key) <= _MAX_KEY:
            key = hashlib.sha256(idempotency_key.encode()).hexdigest()
        options: resend.Emails.SendOptions = {"idempotency_key": key}
        try:
            async with asyncio.timeout(self.timeout_s):
                # No await between these assignments and the call reading them (see the module doc).
                resend.api_key = self.api_key
                resend.api_url = self.api_url
                resend.default_async_http_client = self.http
                reply = await resend.Emails.send_async(params, options)
        except TimeoutError as exc:
            raise TransientMailError(f"Resend did not answer within {self.timeout_s} s") from exc
        except ResendError as exc:
            raise _classify(exc) from exc
        email_id = reply.get("id") if isinstance(reply, dict) else None
        if not isinstance(email_id, str) or not email_id:
            # Retrying with the same key is safe: Resend replays the accepted request's answer.
            raise TransientMailError(f"Resend answered without an email id: {reply!r}")
        return email_id


def resend_params(message: EmailMessage, *, default_from: str) -> resend.Emails.SendParams:
    """The JSON body of ``POST /emails`` for one composed message."""
    to = _addresses(message, "To")
    if not to:
        raise PermanentMailError("the message has no To address")
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    if text is None and html is None:
        raise PermanentMailError("the message has neither a text nor an HTML part")
    params: resend.Emails.SendParams = {
        "from": str(message["From"]) if message["From"] is not None else default_from,
        "to": to,
        "subject": str(message["Subject"] or ""),
    }
    if html is not None:
        params["html"] = _content(html)
    if text is not None:
        params["text"] = _content(text)
    if cc := _addresses(message, "Cc"):
        params["cc"] = cc
    if bcc := _addresses(message, "Bcc"):
        params["bcc"] = bcc
    if reply_to := _addresses(message, "Reply-To"):
        params["reply_to"] = reply_to
    headers = {name: str(message[name]) for name in _FORWARDED_HEADERS if message[name] is not None}
    if headers:
        params["headers"] = headers
    attachments: list[resend.Attachment] = []
    for part in message.iter_attachments():
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        attachments.append(
            {
                "filename": part.get_filename() or "attachment",
                "content": base64.b64encode(payload).decode("ascii"),
                "content_type": part.get_content_type(),
            }
        )
    if attachments:
        params["attachments"] = list(attachments)
    return params


def _addresses(message: EmailMessage, header: str) -> list[str]:
    found: list[str] = []
    for value in message.get_all(header, []):
        addresses = getattr(value, "addresses", None)  # policy.default headers parse addresses
        if addresses is not None:
            found.extend(str(a) for a in addresses)
        else:  # compat32 headers are plain strings
            found.extend(formataddr(pair) for pair in getaddresses([str(value)]) if pair[1])
    return found


def _content(part: MIMEPart) -> str:
    content = part.get_content()
    return content if isinstance(content, str) else content.decode("utf-8", "replace")


def _classify(exc: ResendError) -> TransientMailError | PermanentMailError:
    try:
        code = int(exc.code)
    except (TypeError, ValueError):
        code = 500
    reply = f"Resend {code} {exc.error_type}: {exc.message}"
    if exc.error_type == "HttpClientError":  # the SDK's wrapper for connection errors
        return TransientMailError(f"Resend unreachable: {exc.message}")
    if code == 409 and exc.error_type == "invalid_idempotent_request":
        return IdempotencyConflictError(reply, code=code)
    if code == 409 and exc.error_type == "concurrent_idempotent_requests":
        return TransientMailError(reply, code=code)  # the first attempt is still in flight
    if code == 429 or code >= 500:
        return TransientMailError(reply, code=code, retry_after_s=_retry_after(exc.headers))
    return PermanentMailError(reply, code=code)


def _retry_after(headers: dict[str, str] | None) -> float | None:
    for name, value in (headers or {}).items():
        if name.lower() == "retry-after":
            try:
                return float(value)
            except ValueError:
                return None
    return None
