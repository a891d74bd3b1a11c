"""A circuit breaker per provider: pure state transitions plus an in-memory holder.

States::

    closed ──(failure_threshold consecutive failures)──▶ open
    open ──(reset_after_s elapsed; the next call is the probe)──▶ half_open
    half_open ──(probe ok)──▶ closed
    half_open ──(probe failed)──▶ open (the wait starts again)

Half-open lets exactly one probe out; other calls are refused until it reports. A probe that never
reports (its process died) is replaced by a new one after ``reset_after_s``.

``admit`` and ``observe`` are pure: given the stored ``BreakerState``, the policy and a clock value
they return the next state. ``InMemoryBreaker`` keeps the state in the process; a shared holder
(one row per provider in PostgreSQL, changed under ``SELECT … FOR UPDATE``) stores the same
four fields and calls the same two functions with a wall-clock ``now``.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

__all__ = ["BreakerPhase", "BreakerPolicy", "BreakerState", "InMemoryBreaker", "admit", "observe"]


class BreakerPhase(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerPolicy:
    failure_threshold: int = 5
    reset_after_s: float = 30.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.reset_after_s < 0:
            raise ValueError("failure_threshold must be >= 1 and reset_after_s >= 0")


@dataclass(frozen=True)
class BreakerState:
    phase: BreakerPhase = BreakerPhase.CLOSED
    failures: int = 0  # consecutive failures while closed
    opened_at: float | None = None  # clock value when it last opened
    probe_at: float | None = None  # clock value when the half-open probe went out


def admit(state: BreakerState, policy: BreakerPolicy, now: float) -> tuple[bool, BreakerState]:
    """May a call go out at ``now``? Returns the answer and the state to store."""
    if state.phase is BreakerPhase.CLOSED:
        return True, state
    if state.phase is BreakerPhase.OPEN:
        opened_at = now if state.opened_at is None else state.opened_at
        if now - opened_at >= policy.reset_after_s:
            return True, replace(state, phase=BreakerPhase.HALF_OPEN, probe_at=now)
        return False, state
    # half-open: one probe at a time, replaced if it never reported
    if state.probe_at is not None and now - state.probe_at < policy.reset_after_s:
        return False, state
    return True, replace(state, probe_at=now)


def observe(state: BreakerState, policy: BreakerPolicy, now: float, ok: bool) -> BreakerState:
    """The state after a call that went out finished with ``ok`` (False = no answer: an Unknown
    outcome other than an odd status word)."""
    if state.phase is BreakerPhase.CLOSED:
        if ok:
            return state if state.failures == 0 else replace(state, failures=0)
        failures = state.failures + 1
        if failures >= policy.failure_threshold:
            return BreakerState(BreakerPhase.OPEN, failures=failures, opened_at=now)
        return replace(state, failures=failures)
    if state.phase is BreakerPhase.HALF_OPEN:
        if ok:
            return BreakerState()
        return BreakerState(BreakerPhase.OPEN, failures=state.failures, opened_at=now)
    # open: a late report from a call admitted before the breaker opened changes nothing
    return state


class InMemoryBreaker:
    """The breaker for one process (tests, a single server copy)."""

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_after_s: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = BreakerPolicy(failure_threshold, reset_after_s)
        self.state = BreakerState()
        self._clock = clock

    async def allow(self) -> bool:
        allowed, self.state = admit(self.state, self.policy, self._clock())
        return allowed

    async def record(self, ok: bool, latency_s: float) -> None:
        self.state = observe(self.state, self.policy, self._clock(), ok)

    def __repr__(self) -> str:
        return f"InMemoryBreaker(phase={self.state.phase.value}, failures={self.state.failures})"
