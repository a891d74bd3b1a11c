"""Accounts persistence: users and sessions."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import date, datetime
from functools import cached_property
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from server.accounts.errors import email_taken
from server.common.db import map_db_errors
from server.common.search import contains_pattern, search_id
from server.common.sqlfile import load

QUERIES = load(__file__)
CONSTRAINTS = {"users_email_key": email_taken}
Conn = AsyncConnection[Any]


@dataclass(frozen=True)
class UserRow:
    id: int
    email: str
    name: str
    role: str
    status: str
    timezone: str
    email_verified_at: datetime | None
    create_time: datetime
    password_hash: str
    discount_bps: int
    pending_email: str
    totp_enabled_at: datetime | None


@dataclass(frozen=True)
class LiveSession:
    session_id: int
    user_id: int
    email: str
    role: str
    email_verified: bool
    totp_enabled: bool


@dataclass(frozen=True)
class ApiKeyRow:
    id: int
    user_id: int
    name: str
    prefix: str
    allowed_ips: list[str]
    create_time: datetime
    last_used_time: datetime | None
    expire_time: datetime | None
    revoke_time: datetime | None


@dataclass(frozen=True)
class LiveApiKey:
    key_id: int
    allowed_ips: list[str]
    expire_time: datetime | None
    user_id: int
    email: str
    role: str
    email_verified: bool
    totp_enabled: bool

    @cached_property
    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """The allow-list parsed once per key found live: a cached key is checked on every call."""
        return tuple(ipaddress.ip_network(net, strict=False) for net in self.allowed_ips)


@dataclass(frozen=True)
class ProfileRow:
    email: str
    name: str
    timezone: str
    notification_preferences: dict[str, Any]
    phone: str = ""
    phone_verified: bool = False


@dataclass(frozen=True)
class PhoneState:
    id: int
    name: str
    status: str
    phone: str
    phone_verified: bool


@dataclass(frozen=True)
class LiveCode:
    id: int
    code_hash: bytes
    attempts: int


@dataclass(frozen=True)
class UsedToken:
    user_id: int
    purpose: str
    email: str


@dataclass(frozen=True)
class TotpState:
    totp_secret: str
    totp_enabled_at: datetime | None
    totp_last_step: int


@dataclass(frozen=True)
class UsageDay:
    day: date
    calls: int


@dataclass(frozen=True)
class SessionRow:
    id: int
    create_time: datetime
    expire_time: datetime
    client_ip: str
    user_agent: str


class AccountsRepo:
    async def insert_user(
        self,
        conn: Conn,
        *,
        email: str,
        password_hash: str,
        name: str,
        role: str = "user",
        verified: bool = False,
    ) -> UserRow:
        with map_db_errors(CONSTRAINTS):
            row = await QUERIES.one(
                conn,
                "insert_user",
                UserRow,
                email=email,
                password_hash=password_hash,
                name=name,
                role=role,
                verified=verified,
            )
        assert row is not None
        return row

    async def user_by_email(self, conn: Conn, email: str) -> UserRow | None:
        return await QUERIES.one(conn, "get_user_by_email", UserRow, email=email)

    async def user(self, conn: Conn, user_id: int) -> UserRow | None:
        return await QUERIES.one(conn, "get_user", UserRow, id=user_id)

    async def update_password_hash(self, conn: Conn, user_id: int, password_hash: str) -> None:
        await QUERIES.execute(conn, "update_password_hash", id=user_id, password_hash=password_hash)

    async def insert_session(
        self,
        conn: Conn,
        *,
        user_id: int,
        token_hash: bytes,
        expire_time: datetime,
        client_ip: str,
        user_agent: str,
    ) -> int:
        return int(
            await QUERIES.scalar(
                conn,
                "insert_session",
                user_id=user_id,
                token_hash=token_hash,
                expire_time=expire_time,
                client_ip=client_ip,
                user_agent=user_agent,
            )
        )

    async def live_session(self, conn: Conn, token_hash: bytes) -> LiveSession | None:
        return await QUERIES.one(conn, "get_live_session", LiveSession, token_hash=token_hash)

    async def revoke_session(self, conn: Conn, session_id: int) -> None:
        await QUERIES.execute(conn, "revoke_session", id=session_id)

    async def insert_api_key(
        self, conn: Conn, *, user_id: int, name: str, prefix: str, token_hash: bytes, allowed_ips: list[str]
    ) -> ApiKeyRow:
        row = await QUERIES.one(
            conn,
            "insert_api_key",
            ApiKeyRow,
            user_id=user_id,
            name=name,
            prefix=prefix,
            token_hash=token_hash,
            allowed_ips=allowed_ips,
        )
        assert row is not None
        return row

    async def api_keys(self, conn: Conn, user_id: int) -> list[ApiKeyRow]:
        return await QUERIES.all(conn, "list_api_keys", ApiKeyRow, user_id=user_id)

    async def count_live_api_keys(self, conn: Conn, user_id: int) -> int:
        return int(await QUERIES.scalar(conn, "count_live_api_keys", user_id=user_id))

    async def lock_api_key(self, conn: Conn, key_id: int, user_id: int) -> ApiKeyRow | None:
        return await QUERIES.one(conn, "lock_api_key", ApiKeyRow, id=key_id, user_id=user_id)

    async def expire_api_key(self, conn: Conn, key_id: int, grace_s: float) -> ApiKeyRow | None:
        return await QUERIES.one(conn, "expire_api_key", ApiKeyRow, id=key_id, grace_s=grace_s)

    async def revoke_api_key(self, conn: Conn, key_id: int) -> ApiKeyRow | None:
        return await QUERIES.one(conn, "revoke_api_key", ApiKeyRow, id=key_id)

    async def live_api_key(self, conn: Conn, token_hash: bytes) -> LiveApiKey | None:
        return await QUERIES.one(conn, "get_live_api_key", LiveApiKey, token_hash=token_hash)

    async def profile(self, conn: Conn, user_id: int) -> ProfileRow | None:
        return await QUERIES.one(conn, "get_profile", ProfileRow, id=user_id)

    async def update_profile(self, conn: Conn, user_id: int, profile: ProfileRow) -> ProfileRow | None:
        return await QUERIES.one(
            conn,
            "update_profile",
            ProfileRow,
            id=user_id,
            name=profile.name,
            timezone=profile.timezone,
            notification_preferences=Jsonb(profile.notification_preferences),
        )

    async def live_sessions(self, conn: Conn, user_id: int) -> list[SessionRow]:
        return await QUERIES.all(conn, "list_live_sessions", SessionRow, user_id=user_id)

    async def revoke_user_session(self, conn: Conn, session_id: int, user_id: int) -> bool:
        return await QUERIES.scalar(conn, "revoke_user_session", id=session_id, user_id=user_id) is not None

    async def revoke_all_sessions(self, conn: Conn, user_id: int) -> None:
        await QUERIES.execute(conn, "revoke_all_sessions", user_id=user_id)

    async def users(
        self, conn: Conn, *, query: str, role: str, status: str, before_id: int, limit: int
    ) -> list[UserRow]:
        query_id = search_id(query)
        return await QUERIES.all(
            conn,
            "list_users",
            UserRow,
            query=query,
            query_id=query_id,
            pattern=contains_pattern(query),
            role=role,
            status=status,
            before_id=before_id,
            limit=limit,
        )

    async def lock_user(self, conn: Conn, user_id: int) -> UserRow | None:
        return await QUERIES.one(conn, "lock_user", UserRow, id=user_id)

    async def update_user(self, conn: Conn, row: UserRow) -> UserRow:
        with map_db_errors(CONSTRAINTS):
            updated = await QUERIES.one(
                conn,
                "update_user",
                UserRow,
                id=row.id,
                email=row.email,
                name=row.name,
                role=row.role,
                status=row.status,
                discount_bps=row.discount_bps,
                password_hash=row.password_hash,
            )
        assert updated is not None
        return updated

    async def revoke_all_api_keys(self, conn: Conn, user_id: int) -> None:
        await QUERIES.execute(conn, "revoke_all_api_keys", user_id=user_id)

    # ------------------------------------------------------------------ single-use email links

    async def issue_account_token(
        self,
        conn: Conn,
        *,
        user_id: int,
        purpose: str,
        token_hash: bytes,
        email: str,
        ttl_s: int,
        request_id: str = "",
    ) -> datetime:
        """A new link voids the earlier unused ones of its kind, but not those of ``request_id``."""
        await QUERIES.execute(
            conn, "invalidate_earlier_account_tokens", user_id=user_id, purpose=purpose, request_id=request_id
        )
        expire_time: datetime = await QUERIES.scalar(
            conn,
            "insert_account_token",
            user_id=user_id,
            purpose=purpose,
            token_hash=token_hash,
            email=email,
            ttl_s=ttl_s,
            request_id=request_id,
        )
        return expire_time

    async def void_mailed_links(self, conn: Conn, user_id: int) -> None:
        """Unused password-reset links, and the user's pending address change with its link, die
        with the password, address or status they were asked for: a change link confirmed after a
        new password, a suspension or an address staff set would undo it."""
        await QUERIES.execute(conn, "invalidate_account_tokens", user_id=user_id, purpose="reset_password")
        await QUERIES.execute(conn, "drop_pending_email", id=user_id)
        await QUERIES.execute(conn, "invalidate_account_tokens", user_id=user_id, purpose="change_email")

    async def use_account_token(self, conn: Conn, token_hash: bytes, purposes: list[str]) -> UsedToken | None:
        return await QUERIES.one(
            conn, "use_account_token", UsedToken, token_hash=token_hash, purposes=purposes
        )

    async def mark_email_verified(self, conn: Conn, user_id: int, email: str) -> str | None:
        found: str | None = await QUERIES.scalar(conn, "mark_email_verified", id=user_id, email=email)
        return found

    async def confirm_email_change(self, conn: Conn, user_id: int, email: str) -> str | None:
        with map_db_errors(CONSTRAINTS):
            found: str | None = await QUERIES.scalar(conn, "confirm_email_change", id=user_id, email=email)
        return found

    async def set_pending_email(self, conn: Conn, user_id: int, email: str) -> None:
        await QUERIES.execute(conn, "set_pending_email", id=user_id, email=email)

    async def email_in_use(self, conn: Conn, email: str) -> bool:
        return bool(await QUERIES.scalar(conn, "email_in_use", email=email))

    # ------------------------------------------------------------------ two-factor sign-in

    async def lock_totp(self, conn: Conn, user_id: int) -> TotpState | None:
        return await QUERIES.one(conn, "lock_totp", TotpState, id=user_id)

    async def set_totp_secret(self, conn: Conn, user_id: int, secret: str) -> None:
        await QUERIES.execute(conn, "set_totp_secret", id=user_id, secret=secret)

    async def enable_totp(self, conn: Conn, user_id: int, step: int) -> None:
        await QUERIES.execute(conn, "enable_totp", id=user_id, step=step)

    async def disable_totp(self, conn: Conn, user_id: int) -> None:
        await QUERIES.execute(conn, "disable_totp", id=user_id)
        await QUERIES.execute(conn, "delete_recovery_codes", user_id=user_id)

    async def advance_totp_step(self, conn: Conn, user_id: int, step: int) -> bool:
        return await QUERIES.scalar(conn, "advance_totp_step", id=user_id, step=step) is not None

    async def replace_recovery_codes(self, conn: Conn, user_id: int, code_hashes: list[bytes]) -> None:
        await QUERIES.execute(conn, "delete_recovery_codes", user_id=user_id)
        await QUERIES.execute(conn, "insert_recovery_codes", user_id=user_id, code_hashes=code_hashes)

    async def use_recovery_code(self, conn: Conn, user_id: int, code_hash: bytes) -> bool:
        return (
            await QUERIES.scalar(conn, "use_recovery_code", user_id=user_id, code_hash=code_hash) is not None
        )

    # ------------------------------------------------------------------ API key usage

    async def add_api_key_usage(self, conn: Conn, counts: dict[tuple[int, date], int]) -> None:
        keys = list(counts)
        await QUERIES.execute(
            conn,
            "add_api_key_usage",
            api_key_ids=[key_id for key_id, _ in keys],
            days=[day for _, day in keys],
            calls=[counts[k] for k in keys],
        )

    async def api_key_usage(self, conn: Conn, key_id: int, days: int) -> list[UsageDay]:
        return await QUERIES.all(conn, "list_api_key_usage", UsageDay, api_key_id=key_id, days=days)

    # ------------------------------------------------------------------ phone numbers and codes

    async def lock_phone_state(self, conn: Conn, user_id: int) -> PhoneState | None:
        return await QUERIES.one(conn, "lock_phone_state", PhoneState, id=user_id)

    async def set_phone(self, conn: Conn, user_id: int, phone: str) -> None:
        await QUERIES.execute(conn, "set_phone", id=user_id, phone=phone)
        await QUERIES.execute(conn, "void_phone_codes", user_id=user_id)
        if phone:
            await QUERIES.execute(conn, "unsuppress_number", number=phone)

    async def issue_phone_code(
        self, conn: Conn, *, user_id: int, phone: str, code_hash: bytes, ttl_s: int
    ) -> datetime:
        await QUERIES.execute(conn, "void_phone_codes", user_id=user_id)
        expire_time: datetime = await QUERIES.scalar(
            conn, "insert_phone_code", user_id=user_id, phone=phone, code_hash=code_hash, ttl_s=ttl_s
        )
        return expire_time

    async def lock_live_phone_code(self, conn: Conn, user_id: int, phone: str) -> LiveCode | None:
        return await QUERIES.one(conn, "lock_live_phone_code", LiveCode, user_id=user_id, phone=phone)

    async def use_phone_code(self, conn: Conn, code_id: int) -> None:
        await QUERIES.execute(conn, "use_phone_code", id=code_id)

    async def count_phone_code_attempt(self, conn: Conn, code_id: int, max_attempts: int) -> int:
        """One wrong attempt more; returns how many are left (0: the code is spent)."""
        left = await QUERIES.scalar(conn, "count_phone_code_attempt", id=code_id, max_attempts=max_attempts)
        return max(0, int(left or 0))

    async def mark_phone_verified(self, conn: Conn, user_id: int, phone: str) -> bool:
        return await QUERIES.scalar(conn, "mark_phone_verified", id=user_id, phone=phone) is not None
