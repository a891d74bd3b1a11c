"""Account emails as MIME messages (plain text and HTML). The notifications issue replaces these
texts with Jinja2 templates and a message catalogue; the shapes stay the same."""

from __future__ import annotations

import html
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid

from smm.v1 import accounts_service_pb2 as accounts_pb


@dataclass(frozen=True)
class Sender:
    panel_name: str
    address: str


_TEXTS: dict[int, tuple[str, str, str]] = {
    # kind: (subject, the paragraph before the link, the button label)
    accounts_pb.ACCOUNT_EMAIL_KIND_VERIFY_EMAIL: (
        "Confirm your email address",
        "Please confirm that this is your email address by opening the link below.",
        "Confirm my address",
    ),
    accounts_pb.ACCOUNT_EMAIL_KIND_RESET_PASSWORD: (
        "Reset your password",
        "Someone (we hope you) asked to reset the password of your account. Open the link below to "
        "choose a new one. If it was not you, ignore this message: your password stays as it is.",
        "Choose a new password",
    ),
    accounts_pb.ACCOUNT_EMAIL_KIND_CHANGE_EMAIL: (
        "Confirm your new email address",
        "Open the link below to make this the address of your account.",
        "Confirm my new address",
    ),
}


def compose(prepared: accounts_pb.PrepareAccountEmailResponse, sender: Sender) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender.address
    message["To"] = prepared.to
    message["Message-ID"] = make_msgid(domain="smm.local")
    greeting = f"Hello {prepared.name}," if prepared.name else "Hello,"
    if prepared.kind == accounts_pb.ACCOUNT_EMAIL_KIND_CHANGE_EMAIL_NOTICE:
        subject = "Your email address is being changed"
        lines = [
            greeting,
            f"Someone asked to change the address of your {sender.panel_name} account to "
            f"{prepared.new_email}. The change happens only when that address confirms it.",
            "If it was not you, change your password now.",
        ]
        message["Subject"] = f"{sender.panel_name}: {subject}"
        message.set_content("\n\n".join(lines) + "\n")
        message.add_alternative(_html(lines, link="", label=""), subtype="html")
        return message
    subject, before, label = _TEXTS[prepared.kind]
    expires = prepared.link_expire_time.ToDatetime().strftime("%Y-%m-%d %H:%M UTC")
    lines = [greeting, before, prepared.link, f"The link works once and until {expires}."]
    message["Subject"] = f"{sender.panel_name}: {subject}"
    message.set_content("\n\n".join(lines) + "\n")
    message.add_alternative(
        _html([greeting, before, lines[3]], link=prepared.link, label=label), subtype="html"
    )
    return message


def _html(paragraphs: list[str], *, link: str, label: str) -> str:
    body = "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs[:2])
    if link:
        body += f'<p><a href="{html.escape(link, quote=True)}">{html.escape(label)}</a></p>'
    body += "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs[2:])
    return f"<!doctype html><html><body>{body}</body></html>"
