"""The local transport: each message becomes an ``.eml`` file under ``./var/mail``.

The default, so ``make run`` works offline and a person can open what would have been sent. A
redelivered event overwrites its own file (named after the event id), so it never appears twice.
"""

from __future__ import annotations

import asyncio
import os
from email.message import EmailMessage
from pathlib import Path


class EmlTransport:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    async def send(self, message: EmailMessage, *, idempotency_key: str) -> str:
        return await asyncio.to_thread(self._write, message, idempotency_key)

    def _write(self, message: EmailMessage, key: str) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        safe = "".join(c for c in key if c.isalnum() or c in "-_")[:80] or "message"
        path = self.folder / f"{safe}.eml"
        partial = path.with_suffix(".eml.partial")
        # Owner-only: the file holds a live single-use link.
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(message.as_bytes())
        partial.replace(path)  # atomic: a reader never sees half a message
        return str(message["Message-ID"])
