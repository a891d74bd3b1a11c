"""Opaque, signed page tokens (AIP-158).

A token carries the keyset position and a hash of the filter it was issued for, signed with
HMAC-SHA256, so a client can neither forge a position nor reuse a token with other filters.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from server.common.errors import InvalidArgument


class PageTokenCodec:
    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("a page token secret is required")
        self._secret = secret

    def encode(self, position: dict[str, Any], *, filters: object) -> str:
        payload = json.dumps({"p": position, "f": _digest(filters)}, separators=(",", ":")).encode()
        signature = hmac.new(self._secret, payload, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(signature + payload).decode().rstrip("=")

    def decode(self, token: str, *, filters: object) -> dict[str, Any]:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            signature, payload = raw[:16], raw[16:]
            expected = hmac.new(self._secret, payload, hashlib.sha256).digest()[:16]
            if not hmac.compare_digest(signature, expected):
                raise ValueError("bad signature")
            data = json.loads(payload)
        except ValueError as exc:
            raise InvalidArgument.for_field("page_token", "is not a valid page token") from exc
        if data.get("f") != _digest(filters):
            raise InvalidArgument.for_field("page_token", "was issued for other filters")
        position = data.get("p")
        if not isinstance(position, dict):
            raise InvalidArgument.for_field("page_token", "is not a valid page token")
        return position


def _digest(filters: object) -> str:
    return hashlib.sha256(json.dumps(filters, sort_keys=True, default=str).encode()).hexdigest()[:16]


def page_size(requested: int, *, default: int, maximum: int) -> int:
    if requested < 0:
        raise InvalidArgument.for_field("page_size", "must not be negative")
    if requested == 0:
        return default
    return min(requested, maximum)


class HasId(Protocol):
    @property
    def id(self) -> int: ...


R = TypeVar("R", bound=HasId)
NEWEST = 2**63 - 1


async def newest_first_page(
    tokens: PageTokenCodec,
    page_token: str,
    filters: dict[str, Any],
    size: int,
    fetch: Callable[[int, int], Awaitable[list[R]]],
) -> tuple[list[R], str]:
    """One page of a newest-first keyset listing by id: ``fetch(before_id, limit)`` returns rows with
    ids below ``before_id``; one extra row tells whether another page follows."""
    before_id = NEWEST
    if page_token:
        before_id = int(tokens.decode(page_token, filters=filters)["before_id"])
    rows = await fetch(before_id, size + 1)
    if len(rows) <= size:
        return rows, ""
    rows = rows[:size]
    return rows, tokens.encode({"before_id": rows[-1].id}, filters=filters)
