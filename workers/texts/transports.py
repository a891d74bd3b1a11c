"""Choosing an SMS transport, and the two ways a delivery attempt can fail.

- ``TransientSmsError``: trying again later may work (connection refused or reset, timeouts, HTTP
  429 and 5xx). ``ambiguous`` says whether the provider may have accepted the message anyway (a
  timeout after the request went out): then the attempt's outcome is unknown.
- ``PermanentSmsError``: the same attempt will fail the same way (HTTP 4xx: an invalid or
  unreachable number, a sender the account may not use, wrong credentials). ``code`` is the
  provider's error code (Twilio's ``21211``), which the server uses to suppress bad numbers.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from workers.texts.transport import SmsTransport

__all__ = ["SMS_TRANSPORT_KINDS", "PermanentSmsError", "TransientSmsError", "make_sms_transport"]

SMS_TRANSPORT_KINDS = ("file", "twilio")


class TransientSmsError(Exception):
    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
        ambiguous: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s
        self.ambiguous = ambiguous


class PermanentSmsError(Exception):
    def __init__(self, message: str, *, status: int | None = None, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def make_sms_transport(
    kind: str,
    *,
    sms_dir: str | Path = "var/sms",
    twilio_account_sid: str = "",
    twilio_auth_token: str = "",
    twilio_from: str = "",
    twilio_api_url: str = "https://api.twilio.com",
    timeout_s: float = 15.0,
    client: httpx.AsyncClient | None = None,
) -> SmsTransport:
    """The transport named by ``kind`` (``file`` or ``twilio``), from plain settings."""
    chosen = kind.strip().lower()
    if chosen == "file":
        from workers.texts.file_transport import FileSmsTransport

        return FileSmsTransport(sms_dir)
    if chosen == "twilio":
        if not (twilio_account_sid and twilio_auth_token and twilio_from):
            raise ValueError("SMS transport 'twilio' needs an account SID, an auth token and a sender")
        from workers.texts.twilio_transport import TwilioTransport

        return TwilioTransport(
            twilio_account_sid,
            twilio_auth_token,
            twilio_from,
            twilio_api_url,
            timeout_s=timeout_s,
            client=client,
        )
    raise ValueError(f"unknown SMS transport {kind!r}: choose one of {', '.join(SMS_TRANSPORT_KINDS)}")
