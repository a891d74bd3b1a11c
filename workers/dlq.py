"""Dead letters: list them and re-drive them (``smm dlq list`` / ``smm dlq replay``).

A replayed message goes back to its original subject with its original event id (so the RPC
stays idempotent), a fresh ``Nats-Msg-Id`` (so JetStream does not drop it as a duplicate) and
``Smm-Replay-For`` = the durable that dead-lettered it: only that durable handles it again, the
others on the subject (which handled the event the first time) ack it untouched. A letter whose
durable no longer exists is refused (``DurableGone``), since its replay would reach no one; the
dead letter is deleted once its replay is published.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from core.events import (
    DLQ_DELIVERIES,
    DLQ_DURABLE,
    DLQ_REASON,
    DLQ_SUBJECT,
    EVENT_ID,
    MSG_ID,
    REPLAY_FOR,
    Namespace,
    stream_for,
)


class DurableGone(LookupError):
    """The durable a dead letter names does not exist (renamed, removed): nothing would handle it."""


@dataclass(frozen=True)
class DeadLetter:
    sequence: int
    durable: str
    subject: str
    event_id: str
    reason: str
    deliveries: int
    payload: bytes
    headers: dict[str, str]


async def dead_letters(nc: NATS, ns: Namespace, *, durable: str = "") -> AsyncIterator[DeadLetter]:
    """Every dead letter there when the walk starts, oldest first, without a cap. Letters added
    meanwhile (a replay that fails again comes back as a new one) wait for the next walk, so
    replaying while walking ends."""
    js = nc.jetstream()
    stream = ns.stream("DLQ")
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        return
    last = info.state.last_seq
    sequence = info.state.first_seq
    while sequence and sequence <= last:
        letter = await dead_letter_at(nc, ns, sequence)
        if letter is not None and (not durable or letter.durable == durable):
            yield letter
        sequence += 1


async def list_dead_letters(nc: NATS, ns: Namespace, *, durable: str = "") -> list[DeadLetter]:
    return [letter async for letter in dead_letters(nc, ns, durable=durable)]


async def dead_letter_at(nc: NATS, ns: Namespace, sequence: int) -> DeadLetter | None:
    """The dead letter at ``sequence`` of the DLQ stream; None if there is none (replayed, or never)."""
    try:
        raw = await nc.jetstream().get_msg(ns.stream("DLQ"), seq=sequence)
    except NotFoundError:
        return None
    headers = dict(raw.headers or {})
    return DeadLetter(
        sequence=sequence,
        durable=headers.get(DLQ_DURABLE, ""),
        subject=headers.get(DLQ_SUBJECT, ""),
        event_id=headers.get(EVENT_ID, ""),
        reason=headers.get(DLQ_REASON, ""),
        deliveries=int(headers.get(DLQ_DELIVERIES, "0") or 0),
        payload=raw.data or b"",
        headers=headers,
    )


async def replay(nc: NATS, ns: Namespace, letter: DeadLetter) -> None:
    js = nc.jetstream()
    dropped = {DLQ_REASON, DLQ_DELIVERIES, DLQ_SUBJECT, DLQ_DURABLE, MSG_ID, REPLAY_FOR}
    headers = {k: v for k, v in letter.headers.items() if k not in dropped}
    headers[MSG_ID] = f"{letter.event_id}:replay:{letter.sequence}"
    headers[EVENT_ID] = letter.event_id
    if letter.durable:  # a letter built by hand without one goes to every durable on the subject
        stream = ns.stream(stream_for(letter.subject).name)
        try:
            await js.consumer_info(stream, ns.durable(letter.durable))
        except NotFoundError:
            raise DurableGone(letter.durable) from None
        headers[REPLAY_FOR] = letter.durable
    await js.publish(ns.subject(letter.subject), letter.payload, headers=headers)
    await js.delete_msg(ns.stream("DLQ"), letter.sequence)
