"""AIP-155 request ids: a retried mutating RPC returns the first answer.

``claim`` runs first in the unit of work: it inserts (rpc, actor, request_id). A concurrent
duplicate blocks on the primary key until the first transaction ends, then sees its stored
answer. ``remember`` stores the answer in the same transaction as the effect.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message
from psycopg import AsyncConnection

from server.common.errors import Aborted, FailedPrecondition, InvalidArgument

# The longest request id (an Idempotency-Key) taken; a longer one is refused, never cut.
MAX_REQUEST_ID = 200
CLAIM = """
INSERT INTO idempotent_requests (rpc, actor, request_id, request_hash)
VALUES (%(rpc)s, %(actor)s, %(request_id)s, %(request_hash)s)
ON CONFLICT ON CONSTRAINT idempotent_requests_pkey DO NOTHING
"""
LOOKUP = """
SELECT request_hash, response FROM idempotent_requests
WHERE rpc = %(rpc)s AND actor = %(actor)s AND request_id = %(request_id)s
"""
REMEMBER = """
UPDATE idempotent_requests SET response = %(response)s
WHERE rpc = %(rpc)s AND actor = %(actor)s AND request_id = %(request_id)s
"""


@dataclass(frozen=True)
class RequestKey:
    rpc: str
    actor: str
    request_id: str
    request_hash: bytes

    def params(self) -> dict[str, str]:
        return {"rpc": self.rpc, "actor": self.actor, "request_id": self.request_id}


def request_hash(request: Message) -> bytes:
    return hashlib.sha256(request.SerializeToString(deterministic=True)).digest()


def checked_request_id(request_id: str) -> str:
    """The request id as given; longer than ``MAX_REQUEST_ID`` is refused, never cut: two ids that
    differ past the limit would name one request, and the second would be answered with the first."""
    if len(request_id) > MAX_REQUEST_ID:
        raise InvalidArgument.for_field("request_id", f"must be at most {MAX_REQUEST_ID} characters")
    return request_id


def request_key(rpc: str, actor: str, request_id: str, request: Message) -> RequestKey | None:
    """The key of a request, or None when the caller sent no request id (no replay protection)."""
    if not request_id:
        return None
    return RequestKey(rpc, actor, checked_request_id(request_id), request_hash(request))


async def claim(conn: AsyncConnection[Any], key: RequestKey) -> bytes | None:
    """None when this call owns the request id; the stored answer when a previous call does."""
    async with conn.cursor() as cur:
        await cur.execute(CLAIM, {**key.params(), "request_hash": key.request_hash})
        if cur.rowcount == 1:
            return None
        await cur.execute(LOOKUP, key.params())
        row = await cur.fetchone()
    if row is None:  # pragma: no cover - the conflicting row cannot vanish inside our transaction
        raise Aborted("retry the request", reason="CONFLICT_RETRY")
    stored_hash, response = row
    if bytes(stored_hash) != key.request_hash:
        raise reused(key)
    if response is None:  # pragma: no cover - answers are stored before commit
        raise Aborted("the first request with this id is still running; retry", reason="CONFLICT_RETRY")
    return bytes(response)


def reused(key: RequestKey) -> FailedPrecondition:
    """The request id names another request (also when a service finds that from its own records,
    kept longer than the request ids)."""
    return FailedPrecondition(
        "this request id (the Idempotency-Key header over HTTP) was already used for a different request",
        reason="REQUEST_ID_REUSED",
        metadata={"request_id": key.request_id},
    )


async def remember(conn: AsyncConnection[Any], key: RequestKey, response: bytes) -> None:
    async with conn.cursor() as cur:
        await cur.execute(REMEMBER, {**key.params(), "response": response})
