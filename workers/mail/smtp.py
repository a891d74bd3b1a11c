"""The SMTP transport: one connection per message to a relay (your provider's or your own).

What it guarantees about duplicates, honestly: SMTP has no idempotency key. The worker's per-event
dedup upstream keeps an acknowledged event from being sent again; this transport cannot stop a
second delivery when an attempt is repeated after the relay accepted the message but before the
worker acknowledged the event (a crash, or a connection lost while waiting for the reply to the end
of DATA). What it does: the ``Message-ID`` is derived from the idempotency key, so every attempt for
one event carries the same Message-ID and a repeated delivery is recognisable as a duplicate (many
receivers and mail clients collapse messages with the same Message-ID). Errors are classified as
``TransientMailError`` (connection problems, timeouts, 4xx replies: nothing should have been
accepted, retry) or ``PermanentMailError`` (5xx replies for the sender, recipients, credentials or a
policy; STARTTLS required but not offered; an untrusted certificate).

A message for several recipients that some of them refuse counts as sent (to the others), with a
warning: a retry would send the accepted copies twice.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import ssl
from email.message import EmailMessage
from email.utils import parseaddr

import aiosmtplib

from workers.mail.transports import PermanentMailError, TransientMailError

log = logging.getLogger(__name__)

__all__ = ["SmtpTransport", "message_id_for"]


def message_id_for(idempotency_key: str, domain: str) -> str:
    """The Message-ID for every attempt at the message of one event."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    return f"<{digest}@{domain}>"


class SmtpTransport:
    def __init__(
        self,
        host: str,
        port: int,
        username: str | None,
        password: str | None,
        starttls: bool,
        timeout_s: float,
        from_address: str,
        *,
        cafile: str | None = None,
    ) -> None:
        """``starttls``: upgrade with STARTTLS and refuse to go on without it (certificates are
        verified against the system's CAs, or ``cafile`` for a private CA); when false, speak plain
        SMTP, as to a relay on the same host. AUTH happens when ``username`` is set."""
        if bool(username) != bool(password):
            raise ValueError("SMTP username and password go together: set both or neither")
        _, envelope_from = parseaddr(from_address)
        if "@" not in envelope_from:
            raise ValueError(f"SMTP from address {from_address!r} has no mailbox")
        self.host = host
        self.port = port
        self.username = username or None
        self.password = password or None
        self.starttls = starttls
        self.timeout_s = timeout_s
        self.from_address = from_address
        self.envelope_from = envelope_from  # MAIL FROM: bounces come back here
        self.domain = envelope_from.rpartition("@")[2]
        self.tls_context = ssl.create_default_context(cafile=cafile) if starttls else None

    async def send(self, message: EmailMessage, *, idempotency_key: str) -> str:
        outgoing = copy.deepcopy(message)  # the caller's message stays as composed
        message_id = message_id_for(idempotency_key, self.domain)
        del outgoing["Message-ID"]
        outgoing["Message-ID"] = message_id
        if outgoing["From"] is None:
            outgoing["From"] = self.from_address
        try:
            refused, _reply = await aiosmtplib.send(
                outgoing,
                sender=self.envelope_from,
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                start_tls=self.starttls,
                use_tls=False,
                tls_context=self.tls_context,
                timeout=self.timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:  # every recipient refused: nothing sent
            codes = [r.code for r in exc.recipients]
            detail = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
            if any(400 <= c < 500 for c in codes):
                raise TransientMailError(f"SMTP recipients refused: {detail}", code=min(codes)) from exc
            raise PermanentMailError(f"SMTP recipients refused: {detail}", code=min(codes)) from exc
        except aiosmtplib.SMTPResponseException as exc:  # MAIL, DATA, AUTH, HELO or the greeting
            reply = f"SMTP {type(exc).__name__}: {exc.code} {exc.message}"
            if 500 <= exc.code < 600:
                raise PermanentMailError(reply, code=exc.code) from exc
            raise TransientMailError(reply, code=exc.code) from exc
        except ssl.SSLCertVerificationError as exc:
            raise PermanentMailError(f"SMTP server certificate not trusted: {exc}") from exc
        except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPServerDisconnected) as exc:
            raise TransientMailError(f"SMTP connection failed: {exc}") from exc
        except aiosmtplib.SMTPTimeoutError as exc:
            raise TransientMailError(f"SMTP timed out: {exc}") from exc
        except aiosmtplib.SMTPException as exc:  # the server lacks what we require (STARTTLS, AUTH)
            raise PermanentMailError(f"SMTP: {exc}") from exc
        except OSError as exc:  # other socket or TLS failures
            raise TransientMailError(f"SMTP connection failed: {exc}") from exc
        if refused:
            log.warning(
                "some recipients refused message %s: %s",
                message_id,
                {addr: f"{r.code} {r.message}" for addr, r in refused.items()},
            )
        return message_id
