"""Runs durable JetStream pull consumers: the one place that acks, naks, terms and dead-letters.

Each consumer's ``handle(event, progress) -> Outcome`` turns an event into an RPC and says how it
went: ``Ok`` acks, ``Retry(delay)`` naks with that delay, ``Permanent(reason)`` terms. A message
that failed ``max_deliver`` times, or permanently, is copied to ``smm.dlq.<durable>`` with the
reason and the delivery count in headers before it is termed (Dramatiq's ``throws``), so nothing
is dropped silently. ``smm dlq replay`` re-drives it later, for that durable only: the copy carries
``Smm-Replay-For``, and every other durable on the subject acks it without calling its handler.

A sequential consumer (concurrency 1) fetches one message at a time, so no message waits in hand
while its ack deadline runs out; and while a handler runs, a heartbeat tells JetStream the message
is in progress every third of ``ack_wait``, so a long handler is not redelivered to another copy
mid-flight. Settling never kills the worker: if NATS is away when a message is acked (or naked,
termed, dead-lettered), the failure is logged; the message is then either settled when the client
reconnects (nats-py flushes what it buffered meanwhile) or redelivered after ``ack_wait``, and the
handlers are idempotent by event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import NotFoundError
from opentelemetry import trace

from core.events import (
    DLQ_DELIVERIES,
    DLQ_DURABLE,
    DLQ_REASON,
    DLQ_SUBJECT,
    EVENT_ID,
    MSG_ID,
    REPLAY_FOR,
    Durable,
    Namespace,
    ensure_durable,
    ensure_streams,
)
from core.logs import request_id_var
from core.tracing import extract, tracer

log = logging.getLogger(__name__)
_tracer = tracer("smm.worker")
# What the server accepts as a request id (server/common/interceptors.py); anything else it replaces.
_NOT_IN_REQUEST_ID = re.compile(r"[^A-Za-z0-9._-]")


def request_id_for(event_id: str) -> str:
    """The request id of the work an event causes: the event id, spelt as the server accepts a
    request id (the scheduler's ``<job>:<period start>`` becomes ``<job>.<period start>``). The
    worker's log lines carry it, and ``workers/rpc.py`` sends it as ``x-request-id`` on every RPC,
    so the server's log lines and audit records of that work carry it too."""
    return _NOT_IN_REQUEST_ID.sub(".", event_id)[:64]


@dataclass(frozen=True)
class Event:
    id: str  # the outbox event id: the request_id of the RPC the worker makes
    subject: str  # without the namespace
    payload: bytes
    headers: dict[str, str]
    delivery: int  # 1 on the first delivery


@dataclass(frozen=True)
class Ok:
    pass


@dataclass(frozen=True)
class Retry:
    reason: str
    delay_s: float | None = None  # None: the durable's backoff for this delivery


@dataclass(frozen=True)
class Permanent:
    reason: str


Outcome = Ok | Retry | Permanent
Progress = Callable[[], Awaitable[None]]
Handler = Callable[[Event, Progress], Awaitable[Outcome]]

# Codes worth another try; everything else will fail the same way again.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
    }
)


def outcome_of_rpc_error(error: grpc.aio.AioRpcError) -> Outcome:
    reason = f"{error.code().name}: {error.details() or ''}"[:500]
    return Retry(reason) if error.code() in RETRYABLE else Permanent(reason)


@dataclass(frozen=True)
class Consumer:
    durable: Durable
    handle: Handler
    # Messages handled at the same time. 1 keeps the stream's order; more suits independent
    # events whose handling waits on the network (a provider call per new order).
    concurrency: int = 1


class Runner:
    def __init__(self, nc: NATS, ns: Namespace, consumers: list[Consumer], *, batch: int = 10) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._ns = ns
        self._consumers = consumers
        self._batch = batch
        self.handled = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; the messages in hand are finished first (drain)."""
        await ensure_streams(self._js, self._ns)
        for consumer in self._consumers:
            await ensure_durable(self._js, self._ns, consumer.durable)
        async with asyncio.TaskGroup() as group:
            for consumer in self._consumers:
                group.create_task(self._consume(consumer, stop), name=f"consume-{consumer.durable.name}")

    async def _consume(self, consumer: Consumer, stop: asyncio.Event) -> None:
        durable = consumer.durable
        subscription = await self._js.pull_subscribe_bind(
            durable=self._ns.durable(durable.name), stream=self._ns.stream(durable.stream)
        )
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                free = consumer.concurrency - len(in_flight)
                if free <= 0:
                    await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    # Never more than the free slots (one for a sequential consumer): a fetched
                    # message's ack deadline runs from delivery, so one waiting its turn in hand
                    # would expire and be redelivered to another copy.
                    wanted = min(self._batch, free)
                    messages = await subscription.fetch(wanted, timeout=1.0)
                except (NatsTimeout, TimeoutError):  # nothing to do within the wait: poll again
                    continue
                except Exception as exc:  # NATS reconnecting, or back without its store
                    log.warning("fetch failed for %s: %s", durable.name, type(exc).__name__)
                    await asyncio.sleep(1.0)
                    await self._declare_if_lost(durable)
                    continue
                for message in messages:
                    if consumer.concurrency == 1:
                        await self._process(consumer, message)
                        continue
                    task = asyncio.create_task(self._process(consumer, message))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
        finally:
            if in_flight:  # drain: every message in hand is finished (acked or naked) first
                await asyncio.gather(*in_flight, return_exceptions=True)
            await subscription.unsubscribe()

    async def _declare_if_lost(self, durable: Durable) -> None:
        """Declare the durable (and the streams) again when NATS no longer has it: a server back
        with a new, empty store, or a stream recreated. The relay declares the streams again after
        any failure, but nothing else brings a worker's durable back, and every fetch would fail."""
        try:
            await self._js.consumer_info(self._ns.stream(durable.stream), self._ns.durable(durable.name))
            return
        except NotFoundError:
            pass
        except Exception:  # NATS still away: the next fetch says so
            return
        try:
            await ensure_streams(self._js, self._ns)
            await ensure_durable(self._js, self._ns, durable)
        except Exception as exc:
            log.warning("could not declare %s again: %s", durable.name, type(exc).__name__)
            return
        log.warning("declared %s again: NATS had lost it", durable.name)

    async def _process(self, consumer: Consumer, message: Msg) -> None:
        headers = dict(message.headers or {})
        delivery = message.metadata.num_delivered or 1
        event = Event(
            id=headers.get(EVENT_ID) or headers.get(MSG_ID) or "",
            subject=self._ns.unprefix(message.subject),
            payload=message.data,
            headers=headers,
            delivery=delivery,
        )
        log_token = request_id_var.set(request_id_for(event.id))
        try:
            await self._process_event(consumer, message, event)
        finally:
            request_id_var.reset(log_token)
        self.handled += 1

    async def _process_event(self, consumer: Consumer, message: Msg, event: Event) -> None:
        durable, headers, delivery = consumer.durable, event.headers, event.delivery
        with _tracer.start_as_current_span(
            f"process {event.subject}", context=extract(headers), kind=trace.SpanKind.CONSUMER
        ) as span:
            span.set_attribute("messaging.consumer.group.name", durable.name)
            span.set_attribute("messaging.message.id", event.id)
            span.set_attribute("messaging.delivery", delivery)
            heartbeat = asyncio.create_task(_heartbeat(message, durable), name=f"heartbeat-{durable.name}")
            try:
                replay_for = headers.get(REPLAY_FOR)
                if replay_for and replay_for != durable.name:
                    # A dead letter re-driven for another durable: this one handled the event.
                    outcome: Outcome = Ok()
                else:
                    try:
                        outcome = await consumer.handle(event, message.in_progress)
                    except Exception as exc:  # a handler bug must not kill the loop; retry, then dead-letter
                        log.exception("handler for %s failed", durable.name)
                        outcome = Retry(f"{type(exc).__name__}: {exc}"[:500])
                span.set_attribute("smm.outcome", type(outcome).__name__)
                try:
                    await self._settle(durable, message, event, outcome)
                except Exception as exc:  # NATS away: JetStream redelivers after ack_wait
                    log.warning(
                        "could not settle %s for %s (%s): it will be redelivered",
                        event.subject,
                        durable.name,
                        type(exc).__name__,
                    )
            finally:
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat

    async def _settle(self, durable: Durable, message: Msg, event: Event, outcome: Outcome) -> None:
        if isinstance(outcome, Ok):
            await message.ack_sync()
            return
        if isinstance(outcome, Retry) and event.delivery < durable.max_deliver:
            delay = outcome.delay_s if outcome.delay_s is not None else backoff(durable, event.delivery)
            log.info("retrying %s in %.1fs: %s", event.subject, delay, outcome.reason)
            await message.nak(delay=delay)
            return
        reason = outcome.reason if isinstance(outcome, Permanent) else gave_up(event.delivery, outcome.reason)
        await self.dead_letter(durable, message, event, reason)
        await message.term()

    async def dead_letter(self, durable: Durable, message: Msg, event: Event, reason: str) -> None:
        # Not the event's Smm-Replay-For: a letter of a replayed event is a new message for every
        # dead-letter consumer (the alerts), which would take it for another durable's and skip it.
        headers = {
            **{k: v for k, v in event.headers.items() if k not in (MSG_ID, REPLAY_FOR)},
            MSG_ID: f"dlq:{durable.name}:{event.id}:{message.metadata.sequence.stream}",
            EVENT_ID: event.id,
            DLQ_REASON: reason[:1000],
            DLQ_DELIVERIES: str(event.delivery),
            DLQ_SUBJECT: event.subject,
            DLQ_DURABLE: durable.name,
        }
        await self._js.publish(self._ns.subject(f"smm.dlq.{durable.name}"), message.data, headers=headers)
        log.warning("dead-lettered %s from %s: %s", event.subject, durable.name, reason)


async def _heartbeat(message: Msg, durable: Durable) -> None:
    """Extend the ack deadline every third of ``ack_wait`` until cancelled (the message is settled)."""
    interval = durable.ack_wait_s / 3
    while True:
        await asyncio.sleep(interval)
        try:
            await message.in_progress()
        except Exception as exc:  # NATS away: keep trying; the worst case is a redelivery
            log.debug("in-progress for %s failed: %s", durable.name, type(exc).__name__)


# How a letter whose retries ran out is worded (a permanent failure's is its reason alone).
GAVE_UP = "gave up after "


def gave_up(deliveries: int, reason: str) -> str:
    return f"{GAVE_UP}{deliveries}: {reason}"


def backoff(durable: Durable, delivery: int) -> float:
    steps = durable.backoff_s
    return steps[min(delivery - 1, len(steps) - 1)] if steps else 1.0
