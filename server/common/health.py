"""Dependency checks behind GET /api/v1/public/health and the grpc.health.v1 service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from server.common.db import Pool

Check = Callable[[], Awaitable[None]]
CHECK_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class ComponentState:
    name: str
    up: bool
    latency_ms: int
    detail: str = ""


class HealthChecks:
    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}

    def add(self, name: str, check: Check) -> None:
        self._checks[name] = check

    async def run(self) -> list[ComponentState]:
        return list(await asyncio.gather(*(self._run_one(n, c) for n, c in self._checks.items())))

    async def _run_one(self, name: str, check: Check) -> ComponentState:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                await check()
        except Exception as exc:  # any failure means down; the type tells operators why
            return ComponentState(name, False, _ms(started), type(exc).__name__)
        return ComponentState(name, True, _ms(started))


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def postgres_check(pool: Pool) -> Check:
    async def check() -> None:
        # A fresh connection proves the server accepts new sessions, not just that one lives.
        async with pool.connection(timeout=CHECK_TIMEOUT_S) as conn:
            await conn.execute("SELECT 1")

    return check
