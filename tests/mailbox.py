"""Reading what the local transport wrote under the mail folder, as a person would."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

_LINK = re.compile(r"https?://\S+")


@dataclass(frozen=True)
class Mail:
    path: Path
    message: EmailMessage

    @property
    def to(self) -> str:
        return str(self.message["To"])

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        assert part is not None
        return str(part.get_content())  # type: ignore[attr-defined]

    @property
    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html",))
        assert part is not None
        return str(part.get_content())  # type: ignore[attr-defined]

    @property
    def link(self) -> str:
        found = [link for link in _LINK.findall(self.text) if "token=" in link]
        assert len(found) == 1, self.text
        return str(found[0])

    @property
    def token(self) -> str:
        return parse_qs(urlsplit(self.link).query)["token"][0]


def read_mail(folder: Path) -> list[Mail]:
    if not folder.exists():
        return []
    paths = sorted(folder.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns)
    return [Mail(p, BytesParser(policy=policy.default).parsebytes(p.read_bytes())) for p in paths]  # type: ignore[misc]


async def wait_for_mail(folder: Path, to: str, count: int = 1, timeout_s: float = 10.0) -> list[Mail]:
    """The first ``count`` messages to ``to``, waiting for the worker to write them."""
    async with asyncio.timeout(timeout_s):
        while True:
            found = [m for m in read_mail(folder) if m.to == to]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.05)


async def wait_for_subject(folder: Path, to: str, subject: str, timeout_s: float = 10.0) -> Mail:
    """The first message to ``to`` whose subject contains ``subject``."""
    async with asyncio.timeout(timeout_s):
        while True:
            for mail in read_mail(folder):
                if mail.to == to and subject in mail.subject:
                    return mail
            await asyncio.sleep(0.05)
