"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives.

It offers STARTTLS with a self-signed certificate made at run time (``cafile`` is what a client must
trust) and AUTH PLAIN/LOGIN for one fixed user, without requiring either, so one server serves
plain, STARTTLS and authenticated tests. ``fail_next`` makes it refuse the next messages with a
chosen reply at a chosen stage of the transaction.

The server runs in aiosmtpd's own thread and event loop; the test reads ``messages`` from its own.

(PYTEST_DONT_REWRITE: test modules import this before pytest loads it as a plugin.)
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, Literal

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ops.embedded import free_port

__all__ = [
    "SMTP_PASSWORD",
    "SMTP_USER",
    "FakeSmtpServer",
    "ReceivedMail",
    "smtp_server",
    "smtp_tls_files",
    "write_self_signed_cert",
]

SMTP_USER = "mailer"
SMTP_PASSWORD = "smtp-test-password"
HOST = "127.0.0.1"

Stage = Literal["mail", "rcpt", "data"]

_REPLIES = {
    421: "421 4.3.2 Service not available, closing transmission channel",
    450: "450 4.2.0 Mailbox unavailable, try again later",
    451: "451 4.3.0 Local error in processing, try again later",
    452: "452 4.3.1 Insufficient system storage",
    550: "550 5.1.1 Mailbox unavailable",
    552: "552 5.3.4 Message too big for system",
    553: "553 5.1.3 Mailbox name not allowed",
    554: "554 5.7.1 Message rejected by policy",
}


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool  # the session had been upgraded with STARTTLS
    login: str | None  # the AUTH user, if the session authenticated

    @property
    def message(self) -> EmailMessage:
        """The message as a mail store keeps it: parsed, with the wire's CRLF line ends as LF."""
        parsed = BytesParser(policy=policy.default).parsebytes(self.data.replace(b"\r\n", b"\n"))
        assert isinstance(parsed, EmailMessage)
        return parsed


def write_self_signed_cert(folder: Path, host: str = HOST) -> tuple[Path, Path]:
    """A self-signed certificate (its own CA) for ``host`` and ``localhost``; returns (cert, key)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smm test smtp")])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


class _Handler:
    def __init__(self, server: FakeSmtpServer) -> None:
        self.server = server

    async def handle_MAIL(
        self, smtp: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        failure = self.server._take_failure()
        envelope.__dict__["_fake_failure"] = failure
        if failure is not None and failure[1] == "mail":
            return failure[0]
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, smtp: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        failure = envelope.__dict__.get("_fake_failure")
        if failure is not None and failure[1] == "rcpt":
            return str(failure[0])
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        failure = envelope.__dict__.get("_fake_failure")
        if failure is not None and failure[1] == "data":
            return str(failure[0])
        auth = session.auth_data
        content = envelope.original_content or b""
        self.server._store(
            ReceivedMail(
                mail_from=str(envelope.mail_from),
                rcpt_tos=list(envelope.rcpt_tos),
                data=content,
                tls=session.ssl is not None,
                login=auth.login.decode() if isinstance(auth, LoginPassword) else None,
            )
        )
        return "250 2.0.0 OK: queued"


def _authenticate(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == SMTP_USER.encode()
        and auth_data.password == SMTP_PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


class FakeSmtpServer:
    """An SMTP relay on ``host:port``. ``auth_required``: refuse mail from unauthenticated sessions
    (530), as a provider's submission port does."""

    def __init__(self, cert: Path, key: Path, *, auth_required: bool = False) -> None:
        self.host = HOST
        self.port = free_port()
        self.cafile = str(cert)
        self._lock = threading.Lock()
        self._messages: list[ReceivedMail] = []
        self._failures: list[tuple[str, Stage]] = []
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(cert, key)
        self._controller = Controller(
            _Handler(self),
            hostname=self.host,
            port=self.port,
            server_hostname="smtp.test",
            tls_context=tls,
            require_starttls=False,
            authenticator=_authenticate,
            auth_required=auth_required,
            auth_require_tls=False,  # plain-text tests authenticate too
        )

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    @property
    def messages(self) -> list[ReceivedMail]:
        with self._lock:
            return list(self._messages)

    def fail_next(self, count: int = 1, code: int = 451, *, stage: Stage = "data") -> None:
        """Refuse the next ``count`` messages with ``code`` (a 4xx or 5xx reply) in answer to
        MAIL FROM, to each RCPT TO, or to the end of DATA (the default)."""
        reply = _REPLIES.get(code, f"{code} {code // 100}.0.0 Refused by the test")
        with self._lock:
            self._failures.extend([(reply, stage)] * count)

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()
            self._failures.clear()

    def _take_failure(self) -> tuple[str, Stage] | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def _store(self, mail: ReceivedMail) -> None:
        with self._lock:
            self._messages.append(mail)


@pytest.fixture(scope="session")
def smtp_tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_self_signed_cert(tmp_path_factory.mktemp("smtp-tls"))


@pytest.fixture
def smtp_server(smtp_tls_files: tuple[Path, Path]) -> Iterator[FakeSmtpServer]:
    server = FakeSmtpServer(*smtp_tls_files)
    server.start()
    yield server
    server.stop()
