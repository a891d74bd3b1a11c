"""API keys: create, list, rotate with a grace period, revoke, and resolve on each call."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import ipaddress
import logging
import secrets
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg_pool import PoolTimeout
from smm.v1 import events_pb2

from server.accounts.errors import DOMAIN, invalid_credential
from server.accounts.keycache import ApiKeyCache
from server.accounts.repo import AccountsRepo, ApiKeyRow, Conn, LiveApiKey, UsageDay
from server.accounts.tokens import token_hash
from server.common import audit, auth
from server.common.db import Pool
from server.common.errors import FailedPrecondition, FieldViolation, NotFound, PermissionDenied, collect
from server.common.outbox import add_event

log = logging.getLogger(__name__)
KEY_PREFIX = "smm_k_"
SHOWN_PREFIX = 12  # "smm_k_" and six characters: enough to tell keys apart, useless to an attacker
MAX_KEYS = 50
MAX_ALLOWED_IPS = 100
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


@dataclass(frozen=True)
class IssuedKey:
    key: ApiKeyRow
    secret: str


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


class UsageCounter:
    """Per-day call counts per key, kept in memory and added to PostgreSQL every few seconds in one
    statement, so counting costs no write per request. A crash loses at most one interval's counts
    of that copy: acceptable for usage statistics, never used for money."""

    def __init__(self, pool: Pool, repo: AccountsRepo, *, flush_every_s: float) -> None:
        self._pool = pool
        self._repo = repo
        self._every = flush_every_s
        self._counts: Counter[tuple[int, date]] = Counter()
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()

    def count(self, key_id: int) -> None:
        self._counts[(key_id, datetime.now(UTC).date())] += 1

    async def flush(self) -> None:
        async with self._lock:
            counts, self._counts = self._counts, Counter()
            if not counts:
                return
            try:
                async with self._pool.connection() as conn:
                    await self._repo.add_api_key_usage(conn, dict(counts))
            except (PoolTimeout, psycopg.OperationalError):
                self._counts.update(counts)  # keep them for the next try
                log.warning("API key usage not saved yet; the database is unreachable")

    async def run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._every):
                    await self._stop.wait()
            await self.flush()

    def stop(self) -> None:
        self._stop.set()


def validate_key(name: str, allowed_ips: list[str]) -> list[str]:
    """The key's allow-list, normalised (``10.0.0.7/8`` is ``10.0.0.0/8``) and without repeats."""
    violations: list[FieldViolation] = []
    if not 1 <= len(name.strip()) <= 100:
        violations.append(FieldViolation("name", "must be 1 to 100 characters"))
    networks: list[str] = []
    if len(allowed_ips) > MAX_ALLOWED_IPS:
        # Refused before parsing: the list is checked on every call made with the key.
        violations.append(FieldViolation("allowed_ips", f"must have at most {MAX_ALLOWED_IPS} entries"))
        allowed_ips = []
    for index, value in enumerate(allowed_ips):
        try:
            networks.append(str(unmapped(ipaddress.ip_network(value.strip(), strict=False))))
        except ValueError:
            violations.append(FieldViolation(f"allowed_ips[{index}]", "must be an IP address or CIDR range"))
    collect(violations, domain=DOMAIN)
    return list(dict.fromkeys(networks))


def unmapped(
    network: ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An IPv4-mapped IPv6 range (``::ffff:203.0.113.7``, how a server listening on ``[::]`` logs
    IPv4 peers) as the IPv4 range it is: the edge reports such a client by its IPv4 address, so
    the mapped spelling would match no one."""
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED):
        return ipaddress.IPv4Network((int(network.network_address) & 0xFFFFFFFF, network.prefixlen - 96))
    return network


def ip_allowed(client_ip: str, live: LiveApiKey) -> bool:
    if not live.allowed_ips:
        return True
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    return any(address in network for network in live.networks)


def too_many_keys() -> FailedPrecondition:
    # The account's state, not the caller's pace, stands in the way: revoking a key lifts it, and
    # waiting does not (RESOURCE_EXHAUSTED is the rate limiter's 429 with Retry-After).
    return FailedPrecondition(
        f"at most {MAX_KEYS} live API keys (a rotated key counts until its grace period ends); "
        "revoke one first",
        reason="TOO_MANY_API_KEYS",
        domain=DOMAIN,
        metadata={"limit": str(MAX_KEYS)},
    )


def key_not_found(key_id: int) -> NotFound:
    # The same answer for another user's key as for a missing one.
    return NotFound(
        "API key not found", reason="API_KEY_NOT_FOUND", domain=DOMAIN, metadata={"id": str(key_id)}
    )


class ApiKeys:
    def __init__(
        self,
        pool: Pool,
        repo: AccountsRepo,
        *,
        rotation_grace: timedelta,
        usage: UsageCounter,
        cache: ApiKeyCache | None = None,
    ) -> None:
        self._pool = pool
        self._repo = repo
        self._grace = rotation_grace
        self.usage = usage
        self.cache = cache if cache is not None else ApiKeyCache(0)

    async def create(self, who: auth.Principal, name: str, allowed_ips: list[str]) -> IssuedKey:
        user_id = _user_id(who)
        networks = validate_key(name, allowed_ips)
        async with self._pool.connection() as conn, conn.transaction():
            await self._lock_active_user(conn, user_id)
            await self._require_room(conn, user_id)
            issued = await self._issue(conn, user_id, name.strip(), networks)
            await audit.record(
                conn, "api_key.created", target=f"api_key:{issued.key.id}", after=_shown(issued.key)
            )
            created = events_pb2.ApiKeyCreated(
                user_id=user_id, name=issued.key.name, prefix=issued.key.prefix
            )
            await add_event(conn, "smm.accounts.api_key.created", created)
            return issued

    async def _lock_active_user(self, conn: Conn, user_id: int) -> None:
        # The caller's credential was live when the call began, but a suspension (or deletion) may
        # have committed since: it revokes every key under this lock (admin.py), and a key
        # issued after it would come alive on a reactivation. See _require_room for the order.
        user = await self._repo.lock_user(conn, user_id)
        if user is None or user.status != "active":
            raise invalid_credential()

    async def _require_room(self, conn: Conn, user_id: int) -> None:
        # Callers hold the user's row lock, so concurrent creations and rotations count one after
        # another; it is taken before any key's, in the order a suspension (admin.py) takes them.
        if await self._repo.count_live_api_keys(conn, user_id) >= MAX_KEYS:
            raise too_many_keys()

    async def _issue(self, conn: object, user_id: int, name: str, networks: list[str]) -> IssuedKey:
        secret = new_secret()
        key = await self._repo.insert_api_key(
            conn,  # type: ignore[arg-type]
            user_id=user_id,
            name=name,
            prefix=secret[:SHOWN_PREFIX],
            token_hash=token_hash(secret),
            allowed_ips=networks,
        )
        return IssuedKey(key, secret)

    async def list(self, who: auth.Principal) -> list[ApiKeyRow]:
        await self.usage.flush()  # this copy's latest calls stamp the keys' last-used times
        async with self._pool.connection() as conn:
            return await self._repo.api_keys(conn, _user_id(who))

    async def rotate(self, who: auth.Principal, key_id: int) -> IssuedKey:
        user_id = _user_id(who)
        async with self._pool.connection() as conn, conn.transaction():
            await self._lock_active_user(conn, user_id)
            old = await self._repo.lock_api_key(conn, key_id, user_id)
            if old is None or old.revoke_time is not None:
                raise key_not_found(key_id)
            await self._require_room(conn, user_id)  # the old key stays live for the grace period
            await self._repo.expire_api_key(conn, key_id, self._grace.total_seconds())
            issued = await self._issue(conn, user_id, old.name, old.allowed_ips)
            await audit.record(
                conn,
                "api_key.rotated",
                target=f"api_key:{key_id}",
                before=_shown(old),
                after=_shown(issued.key),
            )
        self.cache.forget_user(user_id)
        return issued

    async def revoke(self, who: auth.Principal, key_id: int) -> ApiKeyRow:
        user_id = _user_id(who)
        async with self._pool.connection() as conn, conn.transaction():
            if await self._repo.lock_api_key(conn, key_id, user_id) is None:
                raise key_not_found(key_id)
            revoked = await self._repo.revoke_api_key(conn, key_id)
            await audit.record(conn, "api_key.revoked", target=f"api_key:{key_id}")
        self.cache.forget_user(user_id)  # committed: this copy refuses the key from now on
        assert revoked is not None
        return revoked

    async def resolve(self, token_hash: bytes, client_ip: str) -> auth.Principal:
        """The key's principal: from the cache (server/accounts/keycache.py) or one query."""
        live = self.cache.get(token_hash)
        if live is None:
            generation = self.cache.generation
            async with self._pool.connection() as conn:
                live = await self._repo.live_api_key(conn, token_hash)
            if live is None:
                raise invalid_credential()
            self.cache.put(token_hash, live, generation)
        if self.cache.expired(live):
            raise invalid_credential()
        if not ip_allowed(client_ip, live):
            raise PermissionDenied(
                "this API key may not be used from this address", reason="IP_NOT_ALLOWED", domain=DOMAIN
            )
        self.usage.count(live.key_id)
        # A key acts as a customer whatever its owner's role: keys skip the second factor that
        # staff sign-in may require, and they end up in scripts and other panels' servers.
        return auth.Principal(
            auth.Role.USER,
            user_id=live.user_id,
            name=live.email,
            api_key_id=live.key_id,
            key_owner_role=auth.Role(live.role),
            email_verified=live.email_verified,
            totp_enabled=live.totp_enabled,
        )

    async def usage_days(self, who: auth.Principal, key_id: int, days: int) -> builtins.list[UsageDay]:
        user_id = _user_id(who)
        await self.usage.flush()  # this copy's latest calls, so the owner sees them at once
        async with self._pool.connection() as conn:
            if await self._repo.lock_api_key(conn, key_id, user_id) is None:
                raise key_not_found(key_id)
            return await self._repo.api_key_usage(conn, key_id, days)


def _shown(key: ApiKeyRow) -> dict[str, object]:
    # What an auditor may see of a key: never its secret or hash.
    return {"id": key.id, "name": key.name, "prefix": key.prefix, "allowed_ips": key.allowed_ips}


def _user_id(who: auth.Principal) -> int:
    if who.user_id is None:
        raise PermissionDenied("API keys belong to users", reason="NOT_A_USER", domain=DOMAIN)
    return who.user_id
