"""Signed status webhooks: one POST per order state change, best-effort, in order.

Header ``X-Smm-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``; body
``{"order": <int>, "status": "...", "start_count": "...", "remains": "...", "charge": "..."}``
(the types of the ``status`` reply). A delivery that fails is logged and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable

import httpx

from demo.provider.orders import Order
from demo.provider.protocol import format_money

__all__ = ["SIGNATURE_HEADER", "WebhookSender", "payload", "sign"]

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-Smm-Signature"


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Smm-Signature`` value for ``body`` sent at ``timestamp``."""
    message = str(timestamp).encode() + b"." + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def payload(order: Order) -> bytes:
    return json.dumps(
        {
            "order": order.id,
            "status": order.status,
            "start_count": str(order.start_count),
            "remains": str(order.remains),
            "charge": format_money(order.charge_micros),
        },
        separators=(",", ":"),
    ).encode()


class WebhookSender:
    """A queue drained by one task, so an order's changes arrive in the order they happened."""

    def __init__(
        self,
        url: str,
        secret: str,
        http: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self._secret = secret
        self._http = http
        self._clock = clock
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0
        self.failed = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="demo-webhooks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def enqueue(self, order: Order) -> None:
        self._queue.put_nowait(payload(order))

    async def _run(self) -> None:
        while True:
            body = await self._queue.get()
            await self._deliver(body)

    async def _deliver(self, body: bytes) -> None:
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            SIGNATURE_HEADER: sign(self._secret, body, int(self._clock())),
        }
        try:
            response = await self._http.post(self.url, content=body, headers=headers, timeout=5.0)
        except httpx.HTTPError as exc:
            self.failed += 1
            log.warning("demo webhook failed: %s", type(exc).__name__, extra={"url": self.url})
            return
        if response.is_success:
            self.delivered += 1
        else:
            self.failed += 1
            log.warning("demo webhook refused: HTTP %d", response.status_code, extra={"url": self.url})
