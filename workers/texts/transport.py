"""The SMS transport seam: something that delivers one text message."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class TextMessage:
    to: str  # E.164
    body: str
    # Where the provider reports what became of the message ("" for none).
    status_callback_url: str = ""


class SmsTransport(Protocol):
    async def send(self, message: TextMessage, *, idempotency_key: str) -> str:
        """Deliver ``message``; return the transport's message id (Twilio's SID). The key
        (``<event id>:<message id>``) names the attempt; not every provider can use it."""
        ...
