"""The Twilio transport: ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` over httpx.

Why the REST call rather than the ``twilio`` SDK's client: the SDK's client is synchronous
(``requests``) unless given its aiohttp-based ``AsyncTwilioHttpClient``, has no setting for the API's
base URL (tests and regional set-ups would need a custom HTTP client that rewrites URLs), and
wraps errors in its own exceptions. The message endpoint is one documented form POST with basic
authentication, so the transport speaks it directly through one pooled ``httpx.AsyncClient`` (the
project's way of calling HTTP, with the base URL injected), and classifies answers itself. The SDK
is still what verifies Twilio's signatures, on the server (``RequestValidator``).

Duplicates, honestly: Twilio has no idempotency key for creating a message. The worker records the
message as ``sending`` before this call and its SID after, and never sends a message that has a
SID; what it cannot prevent is a second text when the worker dies (or the answer is lost: a read
timeout, marked ``ambiguous``) after Twilio accepted the message and before the SID was recorded.
Losing a verification code or an alert would be worse than that rare second copy.

Errors: network failures, timeouts, HTTP 429 (with ``Retry-After``) and 5xx are transient; any
other 4xx is permanent, with Twilio's error code (``21211`` invalid number, ``21614`` not a mobile
number, ``21610`` the recipient replied STOP, ``20003`` wrong credentials...).
"""

from __future__ import annotations

import httpx

from workers.texts.transport import TextMessage
from workers.texts.transports import PermanentSmsError, TransientSmsError

__all__ = ["TwilioTransport"]


class TwilioTransport:
    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        sender: str,
        api_url: str = "https://api.twilio.com",
        *,
        timeout_s: float = 15.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        """``sender``: a number in E.164, or a Messaging Service SID (``MG...``)."""
        if not (account_sid and auth_token and sender):
            raise ValueError("Twilio needs an account SID, an auth token and a sender")
        self.account_sid = account_sid
        self.sender = sender
        self.timeout_s = timeout_s
        self._auth = httpx.BasicAuth(account_sid, auth_token)
        self._client = client or httpx.AsyncClient(base_url=api_url.rstrip("/"), timeout=timeout_s)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def send(self, message: TextMessage, *, idempotency_key: str) -> str:
        form = {"To": message.to, "Body": message.body}
        form["MessagingServiceSid" if self.sender.startswith("MG") else "From"] = self.sender
        if message.status_callback_url:
            form["StatusCallback"] = message.status_callback_url
        path = f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        try:
            response = await self._client.post(path, data=form, auth=self._auth, timeout=self.timeout_s)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise TransientSmsError(f"Twilio unreachable: {type(exc).__name__}") from exc
        except httpx.RequestError as exc:  # the request may have arrived: the outcome is unknown
            raise TransientSmsError(f"Twilio did not answer: {type(exc).__name__}", ambiguous=True) from exc
        if response.status_code in (200, 201):
            sid = _json(response).get("sid")
            if not isinstance(sid, str) or not sid:
                raise TransientSmsError("Twilio answered without a message SID", ambiguous=True)
            return sid
        detail = _json(response)
        code = str(detail.get("code") or "")
        reply = f"Twilio {response.status_code} {code}: {detail.get('message') or response.reason_phrase}"
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientSmsError(
                reply,
                status=response.status_code,
                retry_after_s=_retry_after(response.headers.get("retry-after")),
            )
        raise PermanentSmsError(reply, status=response.status_code, code=code)


def _json(response: httpx.Response) -> dict[str, object]:
    try:
        parsed = response.json()
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _retry_after(value: str | None) -> float | None:
    try:
        return None if value is None else max(0.0, float(value))
    except ValueError:
        return None
