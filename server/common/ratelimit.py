"""Rate limits that hold across every edge and server copy.

Fixed one-minute windows counted in an UNLOGGED PostgreSQL table (one upsert per check, no
WAL). Buckets: every call by client IP; login and registration by IP and by account, tighter;
signed-in calls by user or API key. An IP whose credentials failed repeatedly in the window gets a
tenth of its limits. All limits come from configuration (``SMM_RATE_*``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import psycopg
from google.protobuf import duration_pb2
from psycopg_pool import PoolTimeout

from core.config import Settings
from server.common import auth
from server.common.db import Pool
from server.common.errors import ResourceExhausted, Unauthenticated
from server.common.interceptors import CallInfo, _UnaryInterceptor, current_request

log = logging.getLogger(__name__)
WINDOW_S = 60
HIT = """
INSERT INTO rate_limit_windows (key, window_start, hits) VALUES (%(key)s, to_timestamp(%(window)s), %(n)s)
ON CONFLICT ON CONSTRAINT rate_limit_windows_pkey DO UPDATE SET hits = rate_limit_windows.hits + %(n)s
RETURNING hits
"""
PEEK = "SELECT hits FROM rate_limit_windows WHERE key = %(key)s AND window_start = to_timestamp(%(window)s)"
PURGE = "DELETE FROM rate_limit_windows WHERE window_start < now() - interval '10 minutes'"
LOGIN_RPCS = ("/smm.v1.AccountsService/Login", "/smm.v1.AccountsService/Register")
# Calls that send mail or texts, or spend a link or a code: tighter still, per IP and per address
# (texts are also limited per account and per number, by server/accounts/phones.py).
RESET_RPCS = tuple(
    f"/smm.v1.AccountsService/{name}"
    for name in (
        "RequestPasswordReset",
        "ResetPassword",
        "VerifyEmail",
        "SendVerificationEmail",
        "ChangeEmail",
        "SetPhone",
        "VerifyPhone",
    )
)
# Health must answer, and say what is down, even when the limiter's own store is down.
EXEMPT_RPCS = ("/smm.v1.SystemService/GetHealth",)
STORE_TIMEOUT_S = 0.5
FAILURE_REASONS = ("INVALID_LOGIN", "INVALID_CREDENTIAL", "INVALID_TOTP")
PENALTY_DIVISOR = 10


@dataclass(frozen=True)
class Limits:
    per_ip: int
    login_per_ip: int
    login_per_account: int
    per_user: int
    per_api_key: int
    auth_failures_before_penalty: int
    reset_per_ip: int = 10
    reset_per_account: int = 3

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            per_ip=settings.rate_per_ip_per_min,
            login_per_ip=settings.rate_login_per_ip_per_min,
            login_per_account=settings.rate_login_per_account_per_min,
            per_user=settings.rate_per_user_per_min,
            per_api_key=settings.rate_per_api_key_per_min,
            auth_failures_before_penalty=settings.rate_auth_failures_before_penalty,
            reset_per_ip=settings.rate_reset_per_ip_per_min,
            reset_per_account=settings.rate_reset_per_account_per_min,
        )


class RateLimiter:
    def __init__(self, pool: Pool, limits: Limits, clock: Callable[[], float] = time.time) -> None:
        self._pool = pool
        self.limits = limits
        self._clock = clock

    def _window(self) -> int:
        return int(self._clock() // WINDOW_S) * WINDOW_S

    async def _upsert(self, query: str, params: dict[str, Any]) -> int | None:
        """The counter's value, or None when the store is unreachable: limits fail open, because
        a request that needs the database fails on its own, and one that does not should pass."""
        try:
            async with self._pool.connection(timeout=STORE_TIMEOUT_S) as conn:
                row = await (await conn.execute(query, params)).fetchone()
        except (PoolTimeout, psycopg.OperationalError):
            log.warning("rate-limit store unavailable; not limiting")
            return None
        return None if row is None else int(row[0])

    async def hit(self, key: str, limit: int) -> None:
        window = self._window()
        hits = await self._upsert(HIT, {"key": key, "window": window, "n": 1})
        if hits is not None and hits > limit:
            retry_after = max(1, window + WINDOW_S - int(self._clock()))
            raise too_many(retry_after, key.split(":", 1)[0])

    async def penalised(self, ip: str) -> bool:
        failures = await self._upsert(PEEK, {"key": f"authfail:{ip}", "window": self._window()})
        return failures is not None and failures >= self.limits.auth_failures_before_penalty

    async def count_failure(self, ip: str) -> None:
        await self._upsert(HIT, {"key": f"authfail:{ip}", "window": self._window(), "n": 1})


def too_many(retry_after_s: int, bucket: str) -> ResourceExhausted:
    error = ResourceExhausted(
        f"too many requests; retry in {retry_after_s} s",
        reason="RATE_LIMITED",
        metadata={"retry_after_s": str(retry_after_s), "bucket": bucket},
    )
    error.retry_delay = duration_pb2.Duration(seconds=retry_after_s)  # type: ignore[attr-defined]
    return error


class IpRateLimitInterceptor(_UnaryInterceptor):
    """Before authentication: limits by client IP (tighter for login), and counts credential
    failures per IP so that guessing tightens the limits."""

    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter = limiter

    async def around(
        self, call: CallInfo, request: Any, context: grpc.aio.ServicerContext, inner: Any
    ) -> Any:
        ip = current_request.get().client_ip
        if ip and call.metadata.get("x-smm-actor", "") == "" and call.method not in EXEMPT_RPCS:
            divisor = PENALTY_DIVISOR if await self._limiter.penalised(ip) else 1
            limits = self._limiter.limits
            await self._limiter.hit(f"ip:{ip}", max(1, limits.per_ip // divisor))
            if call.method in LOGIN_RPCS:
                await self._limiter.hit(f"login-ip:{ip}", max(1, limits.login_per_ip // divisor))
                email = str(getattr(request, "email", "")).strip().lower()
                if email:
                    await self._limiter.hit(f"login-account:{email}", limits.login_per_account)
            if call.method in RESET_RPCS:
                await self._limiter.hit(f"reset-ip:{ip}", max(1, limits.reset_per_ip // divisor))
                email = str(getattr(request, "email", "")).strip().lower()
                if email:
                    await self._limiter.hit(f"reset-account:{email}", limits.reset_per_account)
        try:
            return await inner(request, context)
        except Unauthenticated as exc:
            if ip and exc.reason in FAILURE_REASONS:
                await self._limiter.count_failure(ip)
            raise


async def limit_principal(limiter: RateLimiter, who: auth.Principal) -> None:
    """After authentication: the signed-in user's or API key's own budget."""
    if who.api_key_id is not None:
        await limiter.hit(f"key:{who.api_key_id}", limiter.limits.per_api_key)
    elif who.user_id is not None:
        await limiter.hit(f"user:{who.user_id}", limiter.limits.per_user)


PrincipalLimit = Callable[[auth.Principal], Awaitable[None]]


async def purge(pool: Pool) -> int:
    async with pool.connection() as conn:
        cursor = await conn.execute(PURGE)
        return cursor.rowcount
