"""Provider health and the circuit breaker, kept in PostgreSQL so every server copy shares them.

``SharedBreaker`` stores the breaker's state in ``provider_health`` and moves it with the pure
``admit``/``observe`` functions of the adapters package, with the wall clock (the same on every
copy, unlike a monotonic one). A call that leaves the state as it is (the closed circuit's usual
success) only reads the row; a change is decided again and written under ``SELECT ... FOR UPDATE``.
A circuit read as healthy (closed, no failures) is trusted for ``healthy_for_s`` without reading it
again, so the usual call reads nothing at all; any other state is read every time. The cost of
that: another copy's opening of the circuit reaches this copy up to ``healthy_for_s`` late.
``HealthRecorder`` turns each exchange with the provider into the health figures staff see.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Callable, Iterator

from server.common.db import Pool
from server.providers.adapters.base import Exchange
from server.providers.adapters.breaker import BreakerPhase, BreakerPolicy, BreakerState, admit, observe
from server.providers.repo import CircuitRow, Conn, ProvidersRepo


class SharedBreaker:
    def __init__(
        self,
        pool: Pool,
        repo: ProvidersRepo,
        provider_id: int,
        policy: BreakerPolicy,
        clock: Callable[[], float] = time.time,
        *,
        healthy_for_s: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._repo = repo
        self._provider_id = provider_id
        self.policy = policy
        self._clock = clock
        self._healthy_for_s = healthy_for_s
        self._monotonic = monotonic
        self._healthy: BreakerState | None = None  # the healthy state last read, while trusted
        self._healthy_until = 0.0
        self._changes = 0  # moves by this copy: a read that overlapped one is not remembered

    async def state(self) -> BreakerState:
        """The stored state, read now."""
        changes = self._changes
        async with self._pool.connection() as conn:
            state = _state(await self._repo.read_circuit(conn, self._provider_id))
        if changes == self._changes:
            self._remember(state)
        return state

    async def _current(self) -> BreakerState:
        if self._healthy is not None and self._monotonic() < self._healthy_until:
            return self._healthy
        return await self.state()

    def _remember(self, state: BreakerState) -> None:
        healthy = state.phase is BreakerPhase.CLOSED and state.failures == 0
        if healthy and self._healthy_for_s > 0:
            self._healthy, self._healthy_until = state, self._monotonic() + self._healthy_for_s
        else:
            self._healthy = None

    def _changed(self, state: BreakerState) -> None:
        self._changes += 1
        self._remember(state)

    async def allow(self) -> bool:
        # Most calls find the circuit closed and leave it so: an unlocked read (or the healthy
        # state read moments ago) answers them, and only a call that would move the state takes
        # the row lock (and decides again under it). Locking for the common case made every call
        # to a provider wait on one row.
        current = await self._current()
        allowed, after = admit(current, self.policy, self._clock())
        if after == current:
            return allowed
        async with self._pool.connection() as conn, conn.transaction():
            row = await self._repo.lock_circuit(conn, self._provider_id)
            if row is None:
                return True
            current = _state(row)
            allowed, after = admit(current, self.policy, self._clock())
            if after != current:
                await self._store(conn, after)
        self._changed(after)
        return allowed

    async def record(self, ok: bool, latency_s: float) -> None:
        current = await self._current()
        if observe(current, self.policy, self._clock(), ok) == current:
            return  # a success on a healthy circuit: nothing to write, no lock
        async with self._pool.connection() as conn, conn.transaction():
            row = await self._repo.lock_circuit(conn, self._provider_id)
            if row is None:
                return
            current = _state(row)
            after = observe(current, self.policy, self._clock(), ok)
            if after != current:
                await self._store(conn, after)
        self._changed(after)

    async def _store(self, conn: Conn, state: BreakerState) -> None:
        await self._repo.store_circuit(
            conn,
            self._provider_id,
            state.phase.value,
            state.failures,
            state.opened_at,
            state.probe_at,
        )


def _state(row: CircuitRow | None) -> BreakerState:
    if row is None:
        return BreakerState()
    return BreakerState(
        BreakerPhase(row.circuit_phase),
        failures=row.circuit_failures,
        opened_at=row.opened_at,
        probe_at=row.probe_at,
    )


# The orders a provider call is about, set by whoever makes the call (orders dispatch and
# tracking); their exchanges are kept for the admin's per-order provider log.
exchange_orders: contextvars.ContextVar[tuple[int, ...]] = contextvars.ContextVar(
    "exchange_orders", default=()
)


@contextlib.contextmanager
def about_orders(order_ids: list[int]) -> Iterator[None]:
    token = exchange_orders.set(tuple(order_ids))
    try:
        yield
    finally:
        exchange_orders.reset(token)


class HealthRecorder:
    """The adapter's exchange hook: one health update per request that went out, and the
    exchange itself in the per-order log when the call is about orders."""

    def __init__(self, pool: Pool, repo: ProvidersRepo, provider_id: int) -> None:
        self._pool = pool
        self._repo = repo
        self._provider_id = provider_id

    async def __call__(self, exchange: Exchange) -> None:
        orders = list(exchange_orders.get())
        if not exchange.sent:
            if orders:
                async with self._pool.connection() as conn:
                    await self._repo.record_exchange(conn, self._provider_id, orders, exchange)
            return
        failed = exchange.outcome == "unknown"
        error = f"{exchange.action}: {exchange.reason}" if failed else ""
        latency_us = int(exchange.latency_s * 1_000_000)
        async with self._pool.connection() as conn:
            await self._repo.record_call(
                conn,
                self._provider_id,
                failed=failed,
                latency_us=latency_us,
                error=error,
                logged=(orders, exchange) if orders else None,
            )
