"""Rate limits that hold across every edge and server copy.

One-minute windows counted in an UNLOGGED PostgreSQL table (no WAL). Buckets: every call by
client IP; login and registration by IP and by account, tighter (signed-in calls that check the
current password spend the same per-account budget); mail-sending calls by IP and by address;
signed-in calls by user or API key. A call made with an API key counts against the key, not its
IP (a reseller runs several scripts from one server: the IP's budget must not cap its keys'); one
whose key does not get it through authorization (unknown, revoked, another address, a route keys
may not call) counts against the IP after the fact, and once the IP has spent its budget its key
calls are refused before the key is looked up. An IP whose credentials (or current passwords)
failed repeatedly in the window gets a tenth of its limits. All limits come from configuration
(``SMM_RATE_*``).

Two ways of counting, by how hot and how sensitive a bucket is:

- **Exact** (``hit``): one statement per check, for the login, mail (and texts) and
  credential-failure buckets: rare calls whose budgets are a handful per minute and guard
  passwords and inboxes. These slide: the statement counts the call in the current window and
  reads the previous window's count, and a call passes while
  ``previous x (1 - elapsed fraction of the current window) + current <= limit`` (the estimate
  Cloudflare uses). Fixed windows let a whole budget through at 12:00:59 and another at 12:01:00;
  now a budget spent at a minute's end fades over the next minute instead of renewing at once.
  Every attempt counts, refused ones too (as before): a client that keeps trying while refused
  keeps the estimate up. The refusal's Retry-After is when one more call would pass if nothing
  more were counted in the bucket meanwhile, under the limit that refused it
  (``seconds_until_allowed``, rounded up to a second): exact for a client alone on its bucket,
  too early when others spend it too (or the client retries sooner), later than needed when the
  IP's tightening lifts first. Within any t seconds about ``limit x (1 + t/60)`` calls pass at
  most (fixed windows: twice the limit within two seconds). An IP is tightened while its estimated
  credential failures reach the threshold, so the tightening fades the same way.
- **Counted here, shared in batches** (``take``): the per-IP, per-user and per-key buckets that
  every call touches. Each copy counts in memory and checks ``shared + own unsent <= limit``; a
  background task (``run``) adds every bucket's unsent hits to the table in one statement every
  ``sync_s`` seconds and reads back the totals of all copies (and the IPs' credential failures).
  One copy alone is exact; several may together let through up to about
  ``sync_s x their combined rate`` more than the limit within a window before each sees the
  others' counts (docs/DECISIONS.md). Before, every call paid three upserts, and every call from
  one address queued on the same row lock (issue #6). These stay fixed windows: sliding them
  would keep every bucket of the previous minute in each copy's memory and read the other copies'
  final counts of it, for budgets that meter throughput rather than guard a secret (a guessed API
  key still spends its address's credential failures, which slide).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ipaddress
import logging
import math
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
from server.common.errors import DomainError, ResourceExhausted
from server.common.interceptors import CallInfo, _UnaryInterceptor, current_request
from server.common.text import canonical_email

log = logging.getLogger(__name__)
WINDOW_S = 60
# One statement per exact check: the call counted in the current window, and the previous
# window's count read back with it (server/system/queries.sql keeps 10 minutes of windows).
HIT = """
WITH counted AS (
    INSERT INTO rate_limit_windows (key, window_start, hits) VALUES (%(key)s, to_timestamp(%(window)s), 1)
    ON CONFLICT ON CONSTRAINT rate_limit_windows_pkey DO UPDATE SET hits = rate_limit_windows.hits + 1
    RETURNING hits
)
SELECT counted.hits, coalesce(previous.hits, 0)
FROM counted
LEFT JOIN rate_limit_windows previous
  ON previous.key = %(key)s AND previous.window_start = to_timestamp(%(previous)s)
"""
# One statement per sync: every bucket's unsent hits added, and the totals of all copies read back
# for those buckets and for the IPs' credential failures (the penalty).
SYNC = """
WITH added AS (
    INSERT INTO rate_limit_windows (key, window_start, hits)
    SELECT key, to_timestamp(win), n
    FROM unnest(%(keys)s::text[], %(windows)s::bigint[], %(hits)s::int[]) AS t(key, win, n)
    ORDER BY key, win  -- one lock order for every copy: concurrent syncs never deadlock
    ON CONFLICT ON CONSTRAINT rate_limit_windows_pkey
    DO UPDATE SET hits = rate_limit_windows.hits + excluded.hits
    RETURNING key, extract(epoch FROM window_start)::bigint AS win, hits
)
SELECT key, win, hits FROM added
UNION ALL
SELECT r.key, extract(epoch FROM r.window_start)::bigint, r.hits
FROM rate_limit_windows r
JOIN unnest(%(peek_keys)s::text[], %(peek_windows)s::bigint[]) AS p(key, win)
  ON r.key = p.key AND r.window_start = to_timestamp(p.win)
"""
LOGIN_RPCS = ("/smm.v1.AccountsService/Login", "/smm.v1.AccountsService/Register")
# Signed-in calls that check the account's current password (or a two-factor code, for new
# recovery codes): each is a guess, so they
# spend the account's login budget (once the caller is known, in limit_principal), and a wrong
# password counts as a credential failure of the IP.
PASSWORD_CHECK_RPCS = tuple(
    f"/smm.v1.AccountsService/{name}"
    for name in ("ChangePassword", "ChangeEmail", "EnableTotp", "DisableTotp", "RegenerateRecoveryCodes")
)
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
# Mail-sending calls whose address is the signed-in account's own (limited in limit_principal).
OWN_ADDRESS_MAIL_RPCS = ("/smm.v1.AccountsService/SendVerificationEmail",)
# Health must answer, and say what is down, even when the limiter's own store is down.
EXEMPT_RPCS = ("/smm.v1.SystemService/GetHealth",)
STORE_TIMEOUT_S = 0.5
FAILURE_REASONS = ("INVALID_LOGIN", "INVALID_CREDENTIAL", "INVALID_TOTP", "WRONG_PASSWORD")
PENALTY_DIVISOR = 10
# An API key's credential, as ``server/accounts/apikeys.py`` (KEY_PREFIX) issues them.
API_KEY_PREFIX = "smm_k_"
# An IPv6 client is counted by its /64: one subscriber or one server is routinely given a whole
# /64 (RFC 6177), so a bucket per address let one client rotate through 2^64 fresh budgets.
IPV6_CLIENT_PREFIX = 64


def client_bucket(ip: str) -> str:
    """The part of a client's address its IP buckets and failed credentials are counted by: an
    IPv4 address whole, an IPv6 address's /64 network (``2001:db8:1:2::/64``)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip  # the edge sends addresses only; anything else is counted as it is
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/{IPV6_CLIENT_PREFIX}", strict=False))
    return ip


def estimate(previous: int, current: int, elapsed_s: float) -> float:
    """The sliding-window count: the previous window's hits weighted by the part of it still
    within the last ``WINDOW_S`` seconds, plus the current window's."""
    return previous * (WINDOW_S - elapsed_s) / WINDOW_S + current


def seconds_until_allowed(previous: int, current: int, limit: int, elapsed_s: float) -> float:
    """How long until one more call passes, if nothing more is counted in the bucket meanwhile."""
    spare = limit - current - 1  # room for the next call beside this window's own hits
    if spare > 0 or (spare == 0 and previous == 0):
        # previous x (W - t) / W <= spare  <=>  t >= W - W x spare / previous
        at = WINDOW_S - WINDOW_S * spare / previous if previous else 0.0
        return max(0.0, at - elapsed_s)
    # Not in this window: in the next, where this window's hits fade in turn (previous x (W - t) /
    # W + 1 <= limit); with a limit of 1, only once they are gone, a window later.
    at = WINDOW_S - WINDOW_S * (limit - 1) / current if current else 0.0
    return WINDOW_S - elapsed_s + max(0.0, at)


@dataclass
class _KeyCall:
    counted: bool = False  # against its key, by limit_principal


# Set by the IP stage on a call made with an API key, for ``limit_principal`` to mark.
_key_call: contextvars.ContextVar[_KeyCall | None] = contextvars.ContextVar("key_call", default=None)


def _presents_api_key(call: CallInfo) -> bool:
    scheme, _, credential = call.metadata.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and credential.strip().startswith(API_KEY_PREFIX)


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


@dataclass
class _Bucket:
    shared: int = 0  # every copy's hits in the table, as of the last sync (ours included)
    unsent: int = 0  # our hits since then
    sending: int = 0  # our hits in the sync under way


class RateLimiter:
    def __init__(
        self,
        pool: Pool,
        limits: Limits,
        clock: Callable[[], float] = time.time,
        *,
        sync_s: float = 0.5,
    ) -> None:
        self._pool = pool
        self.limits = limits
        self._clock = clock
        self._sync_s = sync_s
        self._buckets: dict[tuple[str, int], _Bucket] = {}
        self._failures: dict[tuple[str, int], int] = {}  # credential failures per IP, all copies
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()

    def _window(self) -> int:
        return int(self._clock() // WINDOW_S) * WINDOW_S

    async def _count(self, key: str, window: int) -> tuple[int, int] | None:
        """Count one hit in ``window``: the counts of that window and of the one before, or None
        when the store is unreachable: limits fail open, because a request that needs the
        database fails on its own, and one that does not should pass."""
        params = {"key": key, "window": window, "previous": window - WINDOW_S}
        try:
            async with self._pool.connection(timeout=STORE_TIMEOUT_S) as conn:
                row = await (await conn.execute(HIT, params)).fetchone()
        except (PoolTimeout, psycopg.OperationalError):
            log.warning("rate-limit store unavailable; not limiting")
            return None
        return None if row is None else (int(row[0]), int(row[1]))

    async def hit(self, key: str, limit: int) -> None:
        """Exact: count the call in the shared table now, and refuse it while the sliding estimate
        of the last minute's hits (this one included) is above ``limit``."""
        window = self._window()
        counts = await self._count(key, window)
        if counts is None:
            return
        current, previous = counts
        elapsed = self._clock() - window
        if estimate(previous, current, elapsed) > limit:
            wait = seconds_until_allowed(previous, current, limit, elapsed)
            raise too_many(max(1, math.ceil(wait)), key.split(":", 1)[0])

    def take(self, key: str, limit: int) -> None:
        """Count the call here (shared with the other copies at the next sync), and refuse it when
        every copy's hits known so far pass ``limit``."""
        window = self._window()
        bucket = self._bucket(key, window)
        bucket.unsent += 1
        if bucket.shared + bucket.unsent + bucket.sending > limit:
            raise self._too_many(window, key)

    def add(self, key: str) -> None:
        """Count a call that has already been answered (``take`` without the refusal)."""
        self._bucket(key, self._window()).unsent += 1

    def check_spent(self, key: str, limit: int) -> None:
        """Refuse, without counting, when every copy's hits known so far reach ``limit``."""
        window = self._window()
        bucket = self._buckets.get((key, window))
        if bucket is not None and bucket.shared + bucket.unsent + bucket.sending >= limit:
            raise self._too_many(window, key)

    def _bucket(self, key: str, window: int) -> _Bucket:
        bucket = self._buckets.get((key, window))
        if bucket is None:
            bucket = self._buckets[(key, window)] = _Bucket()
        return bucket

    def _too_many(self, window: int, key: str) -> ResourceExhausted:
        retry_after = max(1, window + WINDOW_S - int(self._clock()))
        return too_many(retry_after, key.split(":", 1)[0])

    def penalised(self, ip: str) -> bool:
        """While the IP's estimated credential failures (sliding, as ``hit``'s) reach the threshold."""
        key, window = f"authfail:{ip}", self._window()
        previous = self._failures.get((key, window - WINDOW_S), 0)
        current = self._failures.get((key, window), 0)
        failures = estimate(previous, current, self._clock() - window)
        return failures >= self.limits.auth_failures_before_penalty

    async def count_failure(self, ip: str) -> None:
        key, window = f"authfail:{ip}", self._window()
        counts = await self._count(key, window)
        if counts is not None:
            for win, failures in zip((window, window - WINDOW_S), counts, strict=True):
                self._failures[(key, win)] = max(failures, self._failures.get((key, win), 0))

    async def sync(self) -> None:
        """Send every bucket's unsent hits and read back every copy's totals, in one statement."""
        async with self._lock:
            current = self._window()
            sending = [(k, b) for k, b in self._buckets.items() if b.unsent]
            peek = [k for k, b in self._buckets.items() if not b.unsent and k[1] == current]
            ips = {key[3:] for key, win in self._buckets if key.startswith("ip:") and win == current}
            # Both windows the penalty's sliding estimate reads.
            peek += [(f"authfail:{ip}", win) for ip in sorted(ips) for win in (current - WINDOW_S, current)]
            if not sending and not peek:
                self._buckets = {k: b for k, b in self._buckets.items() if k[1] >= current}
                self._failures = {k: n for k, n in self._failures.items() if k[1] >= current - WINDOW_S}
                return
            for _, bucket in sending:
                bucket.sending, bucket.unsent = bucket.unsent, 0
            params = {
                "keys": [k for (k, _), _ in sending],
                "windows": [w for (_, w), _ in sending],
                "hits": [b.sending for _, b in sending],
                "peek_keys": [k for k, _ in peek],
                "peek_windows": [w for _, w in peek],
            }
            try:
                async with self._pool.connection(timeout=STORE_TIMEOUT_S) as conn:
                    rows = await (await conn.execute(SYNC, params)).fetchall()
            except BaseException as exc:
                for _, bucket in sending:  # not counted there: keep them for the next sync
                    bucket.unsent, bucket.sending = bucket.unsent + bucket.sending, 0
                if isinstance(exc, PoolTimeout | psycopg.OperationalError):
                    log.warning("rate-limit store unavailable; counting in this copy only")
                    # A past window limits nothing: its counts must not pile up while the store is down.
                    self._buckets = {k: b for k, b in self._buckets.items() if k[1] >= current}
                    return
                raise
            for _, bucket in sending:
                bucket.sending = 0
            for key, window, hits in rows:
                if key.startswith("authfail:"):
                    self._failures[(key, int(window))] = int(hits)
                elif (found := self._buckets.get((key, int(window)))) is not None:
                    found.shared = int(hits)
            # Past windows are done with once their hits are sent (failures: once they stop weighing).
            self._buckets = {k: b for k, b in self._buckets.items() if k[1] >= current or b.unsent}
            self._failures = {k: n for k, n in self._failures.items() if k[1] >= current - WINDOW_S}

    async def run(self) -> None:
        """Sync every ``sync_s`` seconds until ``stop``, and once more then."""
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._sync_s):
                    await self._stop.wait()
            try:
                await self.sync()
            except Exception:  # never let the limiter's bookkeeping end the task
                log.exception("rate-limit sync failed")

    def stop(self) -> None:
        self._stop.set()


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
    failures per IP so that guessing tightens the limits. A call made with an API key is left to
    its key's budget (``limit_principal``), unless the IP has spent its own; if the key does not
    get it through authorization, the call counts against the IP once it is answered."""

    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter = limiter

    async def around(
        self, call: CallInfo, request: Any, context: grpc.aio.ServicerContext, inner: Any
    ) -> Any:
        ip = client_bucket(current_request.get().client_ip)
        key_call: _KeyCall | None = None
        if ip and call.metadata.get("x-smm-actor", "") == "" and call.method not in EXEMPT_RPCS:
            divisor = PENALTY_DIVISOR if self._limiter.penalised(ip) else 1
            limits = self._limiter.limits
            if _presents_api_key(call):
                self._limiter.check_spent(f"ip:{ip}", max(1, limits.per_ip // divisor))
                key_call = _KeyCall()
            else:
                self._limiter.take(f"ip:{ip}", max(1, limits.per_ip // divisor))
            if call.method in LOGIN_RPCS:
                await self._limiter.hit(f"login-ip:{ip}", max(1, limits.login_per_ip // divisor))
                email = canonical_email(str(getattr(request, "email", ""))).lower()
                if email:
                    await self._limiter.hit(f"login-account:{email}", limits.login_per_account)
            if call.method in RESET_RPCS:
                await self._limiter.hit(f"reset-ip:{ip}", max(1, limits.reset_per_ip // divisor))
                # The address the mail goes to: an email change's link goes to the new one.
                address = getattr(request, "email", "") or getattr(request, "new_email", "")
                email = canonical_email(str(address)).lower()
                if email:
                    await self._limiter.hit(f"reset-account:{email}", limits.reset_per_account)
        token = _key_call.set(key_call)
        try:
            return await inner(request, context)
        except DomainError as exc:  # by reason, whatever the status (WRONG_PASSWORD is a 400)
            if ip and exc.reason in FAILURE_REASONS:
                await self._limiter.count_failure(ip)
            raise
        finally:
            _key_call.reset(token)
            if key_call is not None and not key_call.counted:  # the key did not carry it
                self._limiter.add(f"ip:{ip}")


async def limit_principal(limiter: RateLimiter, who: auth.Principal, method: str) -> None:
    """After authentication: the signed-in user's or API key's own budget, and for a call that
    checks the password, the account's login budget (the same bucket as Login's, keyed by the
    address the principal carries)."""
    if method in PASSWORD_CHECK_RPCS and who.user_id is not None and who.name:
        await limiter.hit(f"login-account:{who.name.strip().lower()}", limiter.limits.login_per_account)
    if method in OWN_ADDRESS_MAIL_RPCS and who.user_id is not None and who.name:
        # The mail goes to the account's own address, known only now: the same bucket as a reset's.
        await limiter.hit(f"reset-account:{who.name.strip().lower()}", limiter.limits.reset_per_account)
    if who.api_key_id is not None:
        key_call = _key_call.get()
        if key_call is not None:  # counted against the key from here on, not the IP
            key_call.counted = True
        limiter.take(f"key:{who.api_key_id}", limiter.limits.per_api_key)
    elif who.user_id is not None:
        limiter.take(f"user:{who.user_id}", limiter.limits.per_user)


PrincipalLimit = Callable[[auth.Principal], Awaitable[None]]
