"""The event topology: streams, subjects, durable consumers, and the headers events carry.

Declared once here and created idempotently at start-up by whoever connects first (server relay,
workers, scheduler). Names follow STYLE.md: subjects ``smm.<svc>.<entity>.<event>``, streams in
capitals without dots, durables ``<worker>-<purpose>``. A namespace (``SMM_NATS_NAMESPACE``)
prefixes all of them so that test runs and side-by-side deployments never share events.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext, api
from nats.js.errors import APIError, BadRequestError, NotFoundError

log = logging.getLogger(__name__)

# Headers on every event message.
MSG_ID = "Nats-Msg-Id"  # JetStream de-duplication
EVENT_ID = "Smm-Event-Id"  # the outbox event id; the worker's RPC uses it as request_id
# On a re-driven dead letter (``smm dlq replay``): the one durable that handles it; every other
# durable on the subject handled the event the first time and settles the copy untouched.
REPLAY_FOR = "Smm-Replay-For"
# Headers on dead letters.
DLQ_REASON = "Smm-Dlq-Reason"
DLQ_DELIVERIES = "Smm-Dlq-Deliveries"
DLQ_SUBJECT = "Smm-Original-Subject"
DLQ_DURABLE = "Smm-Dlq-Durable"

DAY_S = 86_400.0


@dataclass(frozen=True)
class Stream:
    name: str
    subjects: tuple[str, ...]
    max_age_s: float = 7 * DAY_S
    duplicate_window_s: float = 120.0


@dataclass(frozen=True)
class Durable:
    """A durable pull consumer of one worker."""

    name: str
    stream: str
    filter_subject: str
    max_deliver: int = 6
    ack_wait_s: float = 30.0
    backoff_s: tuple[float, ...] = (1.0, 5.0, 30.0, 120.0, 600.0)
    # Where the durable starts when it is created on a stream that already holds events (a worker
    # started for the first time long after the others, a release that adds a durable, a durable
    # renamed). None: every event the stream still holds (up to ``Stream.max_age_s``), for
    # consumers that must miss nothing (dispatch) or count each event once (analytics). A number:
    # only the events published within that many seconds before, for the ones that tell people
    # (``SMM_NOTIFY_START_WINDOW_S``): a week-old order email or reset link is wrong. It never
    # moves a durable that exists: that one goes on from where it is.
    start_window_s: float | None = None


STREAMS: tuple[Stream, ...] = (
    Stream("CATALOG", ("smm.catalog.>",)),
    Stream("ACCOUNTS", ("smm.accounts.>",)),
    Stream("PROVIDERS", ("smm.providers.>",)),
    Stream("ORDERS", ("smm.orders.>",)),
    Stream("WALLET", ("smm.wallet.>",)),
    Stream("NOTIFY", ("smm.notify.>",)),
    Stream("SYSTEM", ("smm.system.>",)),
    # The window covers the longest job period, so scheduler copies that start at different
    # times within one period still publish each tick once.
    Stream("SCHEDULE", ("smm.schedule.>",), max_age_s=2 * DAY_S, duplicate_window_s=DAY_S),
    Stream("DLQ", ("smm.dlq.>",), max_age_s=30 * DAY_S),
)


@dataclass(frozen=True)
class Namespace:
    prefix: str = ""

    def subject(self, subject: str) -> str:
        return f"{self.prefix}.{subject}" if self.prefix else subject

    def unprefix(self, subject: str) -> str:
        head = f"{self.prefix}."
        return subject[len(head) :] if self.prefix and subject.startswith(head) else subject

    def stream(self, name: str) -> str:
        return f"{name}_{self.prefix.upper()}" if self.prefix else name

    def durable(self, name: str) -> str:
        return f"{self.prefix}-{name}" if self.prefix else name


def stream_for(subject: str) -> Stream:
    """The stream that captures an un-namespaced subject."""
    for stream in STREAMS:
        for pattern in stream.subjects:
            if subject.startswith(pattern.removesuffix(">")):
                return stream
    raise ValueError(f"no stream captures {subject}")


def _outage_log(callbacks: dict[str, Any]) -> dict[str, Any]:
    """An ``error_cb`` that reports a NATS outage as one warning per kind of failure until it
    changes or NATS is back (nats-py's own logs each reconnect attempt, once a second, at ERROR with
    a traceback), chained with the caller's ``reconnected_cb``."""
    last: list[str] = []
    theirs = callbacks.get("reconnected_cb")

    async def error_cb(exc: Exception) -> None:
        said = f"{type(exc).__name__}: {exc}"
        if not last or last[0] != said:
            last[:] = [said]
            log.warning("NATS unreachable or failing, reconnecting every second: %s", said)

    async def reconnected_cb() -> None:
        if last:
            log.info("NATS is back")
        last.clear()
        if theirs is not None:
            await theirs()

    return {**callbacks, "error_cb": callbacks.get("error_cb", error_cb), "reconnected_cb": reconnected_cb}


async def connect(url: str, *, name: str, **callbacks: Any) -> NATS:
    # Reconnect forever: a NATS outage must not kill a process; health reports it meanwhile.
    return await nats.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        connect_timeout=2,
        allow_reconnect=True,
        **_outage_log(callbacks),
    )


async def ensure_streams(js: JetStreamContext, ns: Namespace) -> None:
    for stream in STREAMS:
        config = api.StreamConfig(
            name=ns.stream(stream.name),
            subjects=[ns.subject(s) for s in stream.subjects],
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            max_age=stream.max_age_s,
            duplicate_window=stream.duplicate_window_s,
        )
        try:
            await js.add_stream(config)
        except BadRequestError:
            await js.update_stream(config)  # exists with older settings


async def ensure_durable(js: JetStreamContext, ns: Namespace, durable: Durable) -> None:
    """Create the durable where its ``start_window_s`` says, or bring one that exists to today's
    settings where it stands.

    JetStream cannot change where an existing durable delivers from (it refuses the update), and
    one that started over would deliver the stream's week again (one that started at the window
    would skip what it had not handled yet), so an existing durable keeps its deliver policy.
    Settings JetStream cannot change in place (an older release's ack policy) make it delete the
    durable and create it again, resuming after the last event it had acknowledged (the few
    acknowledged past that floor are delivered again; handlers are idempotent by event id).
    """
    stream = ns.stream(durable.stream)
    name = ns.durable(durable.name)
    existing = await _consumer_info(js, stream, name)
    if existing is None:
        try:
            await js.add_consumer(stream, _starting(consumer_config(ns, durable), durable))
            return
        except APIError:  # another copy created it meanwhile: go on from where that one is
            existing = await _consumer_info(js, stream, name)
            if existing is None:
                raise
    wanted = consumer_config(ns, durable)
    if _same_settings(existing.config, wanted):
        return
    kept = wanted.evolve(
        deliver_policy=existing.config.deliver_policy,
        opt_start_seq=existing.config.opt_start_seq,
        opt_start_time=existing.config.opt_start_time,
    )
    try:
        await js.add_consumer(stream, kept)  # an update in place
        return
    except APIError as exc:
        if not _not_updatable(exc):
            raise
    floor = existing.ack_floor.stream_seq if existing.ack_floor else 0
    log.warning("recreating durable %s after stream sequence %d: a setting changed", name, floor)
    await js.delete_consumer(stream, name)
    resumed = (
        kept
        if floor == 0
        else wanted.evolve(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=floor + 1)
    )
    await js.add_consumer(stream, resumed)


def _not_updatable(exc: APIError) -> bool:
    """JetStream's refusal to change a setting of an existing consumer in place."""
    return isinstance(exc, BadRequestError) or (
        exc.err_code == 10012 and "can not be updated" in (exc.description or "")
    )


async def _consumer_info(js: JetStreamContext, stream: str, name: str) -> api.ConsumerInfo | None:
    try:
        info: api.ConsumerInfo = await js.consumer_info(stream, name)
    except NotFoundError:
        return None
    return info


def _starting(config: api.ConsumerConfig, durable: Durable) -> api.ConsumerConfig:
    if durable.start_window_s is None:
        return config
    since = datetime.now(UTC) - timedelta(seconds=durable.start_window_s)
    return config.evolve(deliver_policy=api.DeliverPolicy.BY_START_TIME, opt_start_time=since)


def _same_settings(have: api.ConsumerConfig, want: api.ConsumerConfig) -> bool:
    """Whether the durable already has the settings it is declared with (where it starts aside)."""
    return (
        have.ack_policy == want.ack_policy
        and have.filter_subject == want.filter_subject
        and have.ack_wait == want.ack_wait
        and have.max_deliver == want.max_deliver
        and have.max_ack_pending == want.max_ack_pending
    )


def consumer_config(ns: Namespace, durable: Durable) -> api.ConsumerConfig:
    """The durable's settings, starting at the first event the stream holds (``ensure_durable``
    starts a new one at its window)."""
    return api.ConsumerConfig(
        durable_name=ns.durable(durable.name),
        filter_subject=ns.subject(durable.filter_subject),
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=durable.ack_wait_s,
        # One more than the runner's own limit: the runner dead-letters on the last delivery
        # itself, so JetStream never silently drops a message.
        max_deliver=durable.max_deliver + 1,
        max_ack_pending=1000,
        deliver_policy=api.DeliverPolicy.ALL,
    )


async def stream_info(js: JetStreamContext, ns: Namespace, name: str) -> api.StreamInfo | None:
    try:
        return await js.stream_info(ns.stream(name))
    except NotFoundError:
        return None
