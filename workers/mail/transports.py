"""Choosing a transport, and the two ways a delivery attempt can fail.

Every transport raises one of two errors so the worker can decide without knowing the transport:

- ``TransientMailError``: nothing is known to have been delivered and trying again later may work
  (connection refused or reset, timeouts, SMTP 4xx replies, HTTP 429 and 5xx). Retry the event.
- ``PermanentMailError``: the same attempt will fail the same way (SMTP 5xx for the recipient, the
  sender, the credentials or a policy; HTTP 4xx validation or authentication errors). Do not retry;
  record the failure. Configuration mistakes (a wrong password, a server that offers no STARTTLS when
  it is required, an untrusted certificate) are permanent too: every retry would fail until a person
  changes the settings.

Anything else a transport raises is a bug, not a delivery outcome.
"""

from __future__ import annotations

from pathlib import Path

from workers.mail.transport import Transport

__all__ = [
    "TRANSPORT_KINDS",
    "IdempotencyConflictError",
    "PermanentMailError",
    "TransientMailError",
    "make_transport",
]

TRANSPORT_KINDS = ("eml", "smtp", "resend")


class TransientMailError(Exception):
    """Delivery failed in a way that may succeed later. ``code`` is the SMTP reply or HTTP status
    when there was one; ``retry_after_s`` is the server's hint (HTTP ``Retry-After``), if any."""

    def __init__(self, message: str, *, code: int | None = None, retry_after_s: float | None = None):
        super().__init__(message)
        self.code = code
        self.retry_after_s = retry_after_s


class PermanentMailError(Exception):
    """Delivery failed and the same attempt would fail again. ``code`` as for the transient error."""

    def __init__(self, message: str, *, code: int | None = None):
        super().__init__(message)
        self.code = code


class IdempotencyConflictError(PermanentMailError):
    """The provider already accepted a message under this idempotency key, with different content
    (Resend's 409 ``invalid_idempotent_request``). An earlier attempt was delivered, so this is not a
    lost message: do not retry, and do not send it under a new key either. It means the message
    composed for one event was not the same on each attempt."""


def make_transport(
    kind: str,
    *,
    from_address: str,
    mail_dir: str | Path = "var/mail",
    smtp_host: str = "",
    smtp_port: int = 587,
    smtp_username: str = "",
    smtp_password: str = "",
    smtp_starttls: bool = True,
    smtp_timeout_s: float = 30.0,
    smtp_cafile: str | None = None,
    resend_api_key: str = "",
    resend_api_url: str = "https://api.resend.com",
    resend_timeout_s: float = 30.0,
) -> Transport:
    """The transport named by ``kind`` (``eml``, ``smtp`` or ``resend``), from plain settings.

    Only the settings of the chosen kind are read; the chosen kind's required ones must be set.
    """
    chosen = kind.strip().lower()
    if chosen == "eml":
        from workers.mail.eml import EmlTransport

        return EmlTransport(mail_dir)
    if chosen == "smtp":
        if not smtp_host:
            raise ValueError("mail transport 'smtp' needs an SMTP host")
        from workers.mail.smtp import SmtpTransport  # imported here: it imports the errors above

        return SmtpTransport(
            smtp_host,
            smtp_port,
            smtp_username or None,
            smtp_password or None,
            smtp_starttls,
            smtp_timeout_s,
            from_address,
            cafile=smtp_cafile,
        )
    if chosen == "resend":
        if not resend_api_key:
            raise ValueError("mail transport 'resend' needs a Resend API key")
        from workers.mail.resend_transport import ResendTransport

        return ResendTransport(resend_api_key, resend_api_url, from_address, timeout_s=resend_timeout_s)
    raise ValueError(f"unknown mail transport {kind!r}: choose one of {', '.join(TRANSPORT_KINDS)}")
