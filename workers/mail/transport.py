"""The transport seam: something that delivers one composed message."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Protocol


class Transport(Protocol):
    async def send(self, message: EmailMessage, *, idempotency_key: str) -> str:
        """Deliver ``message``; return the transport's message id. The same idempotency key
        (the event id) must never deliver twice."""
        ...
