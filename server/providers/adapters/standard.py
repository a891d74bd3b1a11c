"""The standard SMM panel protocol (PROTOCOL.md), as the canonical PHP client speaks it.

One POST per call to ``ProviderConnection.api_url``, form-encoded ``key``, ``action`` and the
action's parameters, over an injected ``httpx.AsyncClient``. Per adapter instance: at most
``max_concurrency`` calls in flight and ``max_requests_per_s`` started per second (aiolimiter), and a
``timeout_s`` per attempt; waiting for a slot longer than ``timeout_s`` gives up with
``Unknown(sent=False)``.

Reads (services, status, statuses, refill_status, balance) are tried up to three times on an
Unknown outcome; writes (add, refill, refills, cancel) are sent once, whatever happens: a retried
``add`` could place the order twice. An answer of the action's shape whose status word smm does not
know (``parse.UnrecognisedWord``) is Unknown too, but an answer: it is not retried (it will not change
within seconds) and counts for the circuit breaker as a success, so one order or refill with an odd
word, polled again and again, cannot open the circuit for every call to its provider.

``services`` and ``balance`` are cached per instance for a short TTL (``fresh=True`` bypasses; a
write clears the balance).

Lists of ids go out in batches of 100. In a per-id result an absent id has an unknown outcome; a
top-level ``Rejected`` applies to every id of the call. The API key is sent only in the form body and
never appears in an ``Exchange``, a log line, a reason or a repr.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Generic, TypeVar, cast

import httpx
from aiolimiter import AsyncLimiter

from server.common.text import storable
from server.providers.adapters.base import (
    Accepted,
    AddOrder,
    Balance,
    Breaker,
    Exchange,
    ExchangeHook,
    OutcomeKind,
    ProviderConnection,
    RefillState,
    Rejected,
    Reply,
    Unknown,
    UpstreamService,
    UpstreamStatus,
)
from server.providers.adapters.parse import (
    MAX_BODY_CHARS,
    Body,
    ParseError,
    UnrecognisedWord,
    classify,
    parse_add,
    parse_balance,
    parse_cancel,
    parse_refill,
    parse_refill_status,
    parse_refill_statuses,
    parse_refills,
    parse_services,
    parse_status,
    parse_statuses,
    redact,
    to_id,
)

__all__ = ["BATCH_SIZE", "USER_AGENT", "StandardAdapter"]

log = logging.getLogger(__name__)
T = TypeVar("T")
V = TypeVar("V")
BATCH_SIZE = 100
# What the canonical PHP client sends; some providers' firewalls turn away library user agents.
USER_AGENT = "Mozilla/4.0 (compatible; MSIE 5.01; Windows NT 5.0)"
_REASON_CHARS = 300


class _Cached(Generic[T]):
    """One cached Accepted reply with a time to live; concurrent callers share one fetch."""

    def __init__(self, ttl_s: float, clock: Callable[[], float]) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self._entry: tuple[float, Accepted[T]] | None = None

    async def get(self, fetch: Callable[[], Awaitable[Reply[T]]], *, fresh: bool) -> Reply[T]:
        async with self._lock:
            if not fresh and self._entry is not None and self._clock() < self._entry[0]:
                return self._entry[1]
            reply = await fetch()
            if isinstance(reply, Accepted) and self.ttl_s > 0:
                self._entry = (self._clock() + self.ttl_s, reply)
            return reply

    def clear(self) -> None:
        self._entry = None


class StandardAdapter:
    """A provider that speaks the standard protocol. Satisfies ``ProviderAdapter``."""

    protocol = "standard"

    def __init__(
        self,
        config: ProviderConnection,
        *,
        http: httpx.AsyncClient,
        breaker: Breaker | None = None,
        on_exchange: ExchangeHook | None = None,
        services_ttl_s: float = 60.0,
        balance_ttl_s: float = 30.0,
        read_attempts: int = 3,
        retry_backoff_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._http = http
        self._breaker = breaker
        self._on_exchange = on_exchange
        self._read_attempts = max(1, read_attempts)
        self._retry_backoff_s = retry_backoff_s
        self._slots = asyncio.Semaphore(config.max_concurrency)
        rate = config.max_requests_per_s
        # aiolimiter takes whole acquisitions per period: below one per second, stretch the period.
        self._limiter = AsyncLimiter(rate, 1.0) if rate >= 1 else AsyncLimiter(1, 1.0 / rate)
        self._services: _Cached[list[UpstreamService]] = _Cached(services_ttl_s, clock)
        self._balance: _Cached[Balance] = _Cached(balance_ttl_s, clock)

    def __repr__(self) -> str:
        return f"StandardAdapter(api_url={self._config.api_url!r})"

    # --- actions -----------------------------------------------------------------------------------

    async def services(self, *, fresh: bool = False) -> Reply[list[UpstreamService]]:
        return await self._services.get(self._fetch_services, fresh=fresh)

    async def _fetch_services(self) -> Reply[list[UpstreamService]]:
        def parse(data: object) -> list[UpstreamService]:
            services, problems = parse_services(data)
            if problems:
                log.warning(
                    "provider services: %d entries skipped",
                    len(problems),
                    extra={"api_url": self._config.api_url, "problems": problems[:10]},
                )
            return services

        return await self._call("services", {}, parse, read=True)

    async def add(self, order: AddOrder) -> Reply[str]:
        reply = await self._call("add", order.params(), parse_add, read=False)
        self._after_write(reply)
        return reply

    async def status(self, order_id: str) -> Reply[UpstreamStatus]:
        return await self._call("status", {"order": _canonical(order_id)}, parse_status, read=True)

    async def statuses(self, order_ids: list[str]) -> Reply[dict[str, UpstreamStatus | Rejected]]:
        async def one(batch: list[str]) -> Reply[dict[str, UpstreamStatus | Rejected]]:
            return await self._call(
                "status", {"orders": ",".join(batch)}, lambda data: parse_statuses(data, batch), read=True
            )

        return await self._batched(order_ids, one)

    async def refill(self, order_id: str) -> Reply[str]:
        reply = await self._call("refill", {"order": _canonical(order_id)}, parse_refill, read=False)
        self._after_write(reply)
        return reply

    async def refills(self, order_ids: list[str]) -> Reply[dict[str, str | Rejected]]:
        async def one(batch: list[str]) -> Reply[dict[str, str | Rejected]]:
            return await self._call(
                "refill", {"orders": ",".join(batch)}, lambda data: parse_refills(data, batch), read=False
            )

        reply = await self._batched(order_ids, one)
        self._after_write(reply)
        return reply

    async def refill_status(self, refill_ids: list[str]) -> Reply[dict[str, RefillState | Rejected]]:
        """One id goes in the single form ``refill=`` (the most widely served), more in ``refills=``."""

        async def one(batch: list[str]) -> Reply[dict[str, RefillState | Rejected]]:
            if len(batch) == 1:
                only = batch[0]
                reply = await self._call(
                    "refill_status",
                    {"refill": only},
                    lambda data: {only: parse_refill_status(data)},
                    read=True,
                )
                # The single form answers a refill it does not know at the top level,
                # {"error": "Refill not found"} (PROTOCOL.md 3.5): that refill's own answer, as an
                # entry's error is in the list form, never a refusal of the call.
                return Accepted({only: reply}) if isinstance(reply, Rejected) else reply
            return await self._call(
                "refill_status",
                {"refills": ",".join(batch)},
                lambda data: parse_refill_statuses(data, batch),
                read=True,
            )

        return await self._batched(refill_ids, one)

    async def cancel(self, order_ids: list[str]) -> Reply[dict[str, bool | Rejected]]:
        async def one(batch: list[str]) -> Reply[dict[str, bool | Rejected]]:
            return await self._call(
                "cancel", {"orders": ",".join(batch)}, lambda data: parse_cancel(data, batch), read=False
            )

        reply = await self._batched(order_ids, one)
        self._after_write(reply)
        return reply

    async def balance(self, *, fresh: bool = False) -> Reply[Balance]:
        return await self._balance.get(
            lambda: self._call("balance", {}, parse_balance, read=True), fresh=fresh
        )

    # --- plumbing ----------------------------------------------------------------------------------

    def _after_write(self, reply: Reply[object]) -> None:
        if not (isinstance(reply, Unknown) and not reply.sent):
            self._balance.clear()  # the provider may have charged us

    async def _batched(
        self, ids: list[str], call: Callable[[list[str]], Coroutine[Any, Any, Reply[dict[str, V]]]]
    ) -> Reply[dict[str, V]]:
        """``call`` per batch of 100, concurrently; V includes Rejected (a rejected batch's ids get it)."""
        unique = list(dict.fromkeys(_canonical(i) for i in ids))
        if not unique:
            return Accepted({})
        batches = [unique[i : i + BATCH_SIZE] for i in range(0, len(unique), BATCH_SIZE)]
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(call(batch)) for batch in batches]
        replies = [task.result() for task in tasks]
        if len(replies) == 1:
            return replies[0]
        unknowns = [r for r in replies if isinstance(r, Unknown)]
        if len(unknowns) == len(replies):
            return Unknown(unknowns[0].reason, sent=any(u.sent for u in unknowns))
        rejections = [r for r in replies if isinstance(r, Rejected)]
        if len(rejections) == len(replies):
            return rejections[0]
        merged: dict[str, object] = {}
        for batch, reply in zip(batches, replies, strict=True):
            if isinstance(reply, Accepted):
                merged.update(reply.value)
            elif isinstance(reply, Rejected):
                merged.update(dict.fromkeys(batch, reply))
            # an Unknown batch leaves its ids out: their outcome is unknown
        return Accepted(cast(dict[str, V], merged))

    async def _call(
        self, action: str, params: Mapping[str, str], parse: Callable[[object], T | Rejected], *, read: bool
    ) -> Reply[T]:
        attempts = self._read_attempts if read else 1
        for attempt in range(1, attempts + 1):
            reply, retryable = await self._attempt(action, params, parse, attempt)
            if not isinstance(reply, Unknown) or not retryable or attempt == attempts:
                return reply
            await asyncio.sleep(self._retry_backoff_s * attempt)
        raise AssertionError("unreachable")

    async def _attempt(
        self, action: str, params: Mapping[str, str], parse: Callable[[object], T | Rejected], attempt: int
    ) -> tuple[Reply[T], bool]:
        """One try. Returns the reply and whether another try might answer otherwise: a request was
        attempted on the network, and its reply was no answer of the action's shape."""
        key = self._config.api_key
        safe_params = {name: redact(value, key) for name, value in params.items()}
        if not await self._breaker_allows():
            refused = Unknown("circuit open", sent=False)
            await self._emit(_not_sent(action, safe_params, refused, attempt))
            return refused, False
        try:
            async with asyncio.timeout(self._config.timeout_s):
                await self._slots.acquire()
                try:
                    await self._limiter.acquire()
                except BaseException:
                    self._slots.release()
                    raise
        except TimeoutError:
            queued = Unknown("local rate or concurrency limit: no slot within the timeout", sent=False)
            await self._emit(_not_sent(action, safe_params, queued, attempt))
            return queued, False
        try:
            http_status, text, reply, answered, latency_s = await self._send(action, params, parse)
        finally:
            self._slots.release()
        await self._breaker_record(answered, latency_s)
        kind: OutcomeKind
        if isinstance(reply, Accepted):
            kind, reason = "accepted", ""
        elif isinstance(reply, Rejected):
            kind, reason = "rejected", reply.message
        else:
            kind, reason = "unknown", reply.reason
            log.warning(
                "provider %s: outcome unknown: %s",
                action,
                reason,
                extra={"api_url": self._config.api_url, "http_status": http_status, "attempt": attempt},
            )
        # Stored as PostgreSQL text, which refuses NUL: a binary body or a provider's "\u0000" would
        # fail the statement that also records the call's health.
        body, reason = storable(text[:MAX_BODY_CHARS]), storable(reason)
        sent = not (isinstance(reply, Unknown) and not reply.sent)
        await self._emit(
            Exchange(
                action=action,
                params=safe_params,
                http_status=http_status,
                body=body,
                latency_s=latency_s,
                outcome=kind,
                reason=reason,
                sent=sent,
                attempt=attempt,
            )
        )
        return reply, not answered

    async def _send(
        self, action: str, params: Mapping[str, str], parse: Callable[[object], T | Rejected]
    ) -> tuple[int | None, str, Reply[T], bool, float]:
        """The HTTP exchange and its classification; every transport failure is mapped here, once.
        The flag says whether the provider answered (for the breaker, and no retry): Accepted,
        Rejected, or Unknown for an odd status word in a reply of the action's shape."""
        key = self._config.api_key
        form = {"key": key, "action": action, **params}
        headers = {}
        if self._http.headers.get("user-agent", "").startswith("python-httpx"):
            headers["User-Agent"] = USER_AGENT
        http_status: int | None = None
        text = ""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._config.timeout_s):
                response = await self._http.post(
                    self._config.api_url, data=form, headers=headers, timeout=self._config.timeout_s
                )
            # Redacted before parsing, so no message, reason or log built from the reply can carry the key.
            http_status, text = response.status_code, redact(response.text, key)
            outcome = classify(http_status, text)
        except (
            httpx.ConnectError,
            httpx.ConnectTimeout,
            httpx.PoolTimeout,
            httpx.UnsupportedProtocol,
        ) as exc:
            outcome = Unknown(f"not connected: {_describe(exc, key)}", sent=False)
        except httpx.InvalidURL as exc:
            outcome = Unknown(f"invalid api_url: {_describe(exc, key)}", sent=False)
        except (httpx.TimeoutException, TimeoutError):
            outcome = Unknown(f"timed out after {self._config.timeout_s:g} s")
        except httpx.HTTPError as exc:
            outcome = Unknown(f"transport error: {_describe(exc, key)}")
        latency_s = time.perf_counter() - started
        if not isinstance(outcome, Body):
            return http_status, text, outcome, not isinstance(outcome, Unknown), latency_s
        try:
            value = parse(outcome.data)
        except ParseError as exc:
            odd = isinstance(exc, UnrecognisedWord)
            return http_status, text, Unknown(f"unexpected reply: {exc.reason}"), odd, latency_s
        if isinstance(value, Rejected):
            return http_status, text, value, True, latency_s
        return http_status, text, Accepted(value), True, latency_s

    async def _breaker_allows(self) -> bool:
        if self._breaker is None:
            return True
        try:
            return await self._breaker.allow()
        except Exception:  # a breaker whose store is down must not stop the calls it guards
            log.exception("provider breaker: allow failed; letting the call through")
            return True

    async def _breaker_record(self, ok: bool, latency_s: float) -> None:
        if self._breaker is None:
            return
        try:
            await self._breaker.record(ok, latency_s)
        except Exception:
            log.exception("provider breaker: record failed")

    async def _emit(self, exchange: Exchange) -> None:
        if self._on_exchange is None:
            return
        try:
            await self._on_exchange(exchange)
        except Exception:
            log.exception("provider exchange hook failed", extra={"action": exchange.action})


def _not_sent(action: str, params: Mapping[str, str], reply: Unknown, attempt: int) -> Exchange:
    return Exchange(
        action=action,
        params=params,
        http_status=None,
        body="",
        latency_s=0.0,
        outcome="unknown",
        reason=reply.reason,
        sent=False,
        attempt=attempt,
    )


def _canonical(order_id: str) -> str:
    return to_id(order_id) or str(order_id).strip()


def _describe(exc: Exception, key: str) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return redact(text, key)[:_REASON_CHARS]
