"""The local SMS transport: each text becomes a ``.txt`` file under ``./var/sms``.

The default, so ``make run`` works offline and a person can read what would have been sent (a
verification code included). A redelivered event overwrites its own file (named after the event
and message ids), so it never appears twice. Files are owner-only: they may hold a live code.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from workers.texts.transport import TextMessage


class FileSmsTransport:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    async def send(self, message: TextMessage, *, idempotency_key: str) -> str:
        return await asyncio.to_thread(self._write, message, idempotency_key)

    def _write(self, message: TextMessage, key: str) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in key)[:80] or "message"
        path = self.folder / f"{safe}.txt"
        partial = path.with_suffix(".txt.partial")
        text = f"To: {message.to}\n\n{message.body}"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        partial.replace(path)  # atomic: a reader never sees half a message
        return f"file-{safe}"
