"""Provider status webhooks: an optional accelerator for providers that push status changes.

``X-Smm-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`` with the
provider's own secret, within five minutes of now, compared in constant time. A verified body
(``{"order", "status", "start_count", "remains", "charge"}``, the status reply's shape) goes down
the same path as a poll result, so a duplicate delivery changes nothing and polling stays the
source of truth.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from server.common.db import Pool
from server.common.errors import InvalidArgument, NotFound, Unauthenticated
from server.orders.errors import DOMAIN
from server.orders.repo import QUERIES
from server.orders.tracking import Tracker
from server.providers.adapters.parse import ParseError, normalise_keys, parse_status, to_id
from server.providers.clients import ProviderClients

TOLERANCE_S = 300


def verify_signature(secret: str, body: bytes, header: str, now: float) -> None:
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    timestamp, given = parts.get("t", ""), parts.get("v1", "")
    # compare_digest raises on non-ASCII text: a header decoded from arbitrary bytes can hold any.
    if (
        not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12)
        or not given
        or not given.isascii()
    ):
        raise _forged("the X-Smm-Signature header is missing or malformed")
    if abs(now - int(timestamp)) > TOLERANCE_S:
        raise _forged("the signature is too old (or from the future)")
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, given):
        raise _forged("the signature does not match")


def _forged(message: str) -> Unauthenticated:
    return Unauthenticated(message, reason="INVALID_SIGNATURE", domain=DOMAIN)


class ProviderWebhooks:
    def __init__(self, clients: ProviderClients, tracker: Tracker, pool: Pool) -> None:
        self._clients = clients
        self._tracker = tracker
        self._pool = pool

    async def receive(self, provider_id: int, body: bytes, signature: str) -> bool:
        secret = await self._clients.webhook_secret(provider_id)
        if secret is None:
            raise NotFound("no webhooks for this provider", reason="WEBHOOKS_OFF", domain=DOMAIN)
        verify_signature(secret, body, signature, time.time())
        try:
            data = json.loads(body)
            # The id is read by the rule that stored it from the add reply ("0023", 23.0 -> "23").
            upstream_id = to_id(normalise_keys(data).get("order")) if isinstance(data, dict) else None
            if upstream_id is None:
                raise ValueError("no order id")
            status = parse_status(data)
        except (ValueError, KeyError, TypeError, RecursionError, ParseError) as exc:
            raise InvalidArgument(
                "the webhook body is not a status", reason="BAD_WEBHOOK", domain=DOMAIN
            ) from exc
        async with self._pool.connection() as conn:
            order_id = await QUERIES.scalar(
                conn, "order_by_upstream", provider_id=provider_id, upstream_order_id=upstream_id
            )
        if order_id is None:
            return False  # not ours (or not yet stored): polling will catch up
        return await self._tracker.apply(int(order_id), status) > 0
