"""Accounts rules: registration, sign-in, sessions, and turning a bearer token into a principal."""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any
from zoneinfo import available_timezones

from smm.v1 import accounts_service_pb2 as accounts_pb
from smm.v1 import events_pb2

from server.accounts import security
from server.accounts.apikeys import KEY_PREFIX, ApiKeys
from server.accounts.errors import DOMAIN, account_suspended, invalid_credential, invalid_login
from server.accounts.passwords import hash_password, needs_rehash, verify_password
from server.accounts.reauth import require_password
from server.accounts.repo import AccountsRepo, Conn, ProfileRow, SessionRow, UserRow
from server.accounts.tokens import token_hash
from server.accounts.totp import TwoFactor
from server.common import audit, auth, preferences
from server.common.db import Pool
from server.common.errors import FailedPrecondition, FieldViolation, NotFound, Unauthenticated, collect
from server.common.outbox import add_event
from server.common.text import canonical_email

SESSION_PREFIX = "smm_s_"
EMAIL_PATTERN = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
ROLES = ("user", "support", "admin")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
MAX_EMAIL = 320
# Deleting an account anonymises its address to deleted-<id>@ANONYMISED_DOMAIN (admin.py). No one
# may hold such an address: whoever registered deleted-<id>@ first made account <id> undeletable.
ANONYMISED_DOMAIN = "deleted.invalid"


async def request_email(conn: object, user_id: int, kind: accounts_pb.AccountEmailKind.ValueType) -> None:
    """Asks the email worker for an account email; the event carries no address and no link."""
    await add_event(
        conn,  # type: ignore[arg-type]
        "smm.accounts.email.requested",
        events_pb2.AccountEmailRequested(user_id=user_id, kind=kind),
    )


@dataclass(frozen=True)
class SignedIn:
    token: str
    expire_time: datetime
    user: UserRow


def is_email_address(email: str) -> bool:
    """The one rule for an address, wherever it is set: it must also fit users_email_check, and
    the domain deleted accounts are given is not for the living."""
    domain = email.rpartition("@")[2]
    return (
        len(email) <= MAX_EMAIL
        and EMAIL_PATTERN.match(email) is not None
        # No empty label: "example.com." is the mailbox of "example.com" (a second account for
        # it), ".example.com" and "example..com" reach nobody.
        and "" not in domain.split(".")
        and domain.lower() != ANONYMISED_DOMAIN
    )


def validate_registration(email: str, password: str, name: str) -> None:
    violations: list[FieldViolation] = []
    if not is_email_address(email):
        violations.append(FieldViolation("email", "must be an email address"))
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        violations.append(FieldViolation("password", f"must be {MIN_PASSWORD} to {MAX_PASSWORD} characters"))
    if len(name) > 200:
        violations.append(FieldViolation("name", "must be at most 200 characters"))
    collect(violations, domain=DOMAIN)


class AccountsLogic:
    def __init__(
        self, pool: Pool, repo: AccountsRepo, *, session_ttl: timedelta, two_factor: TwoFactor | None = None
    ) -> None:
        self._pool = pool
        self._repo = repo
        self._session_ttl = session_ttl
        self.two_factor = two_factor

    async def register(
        self, *, email: str, password: str, name: str, client_ip: str, user_agent: str
    ) -> SignedIn:
        email = canonical_email(email)
        validate_registration(email, password, name.strip())
        password_hash = await hash_password(password)
        async with self._pool.connection() as conn, conn.transaction():
            user = await self._repo.insert_user(
                conn, email=email, password_hash=password_hash, name=name.strip()
            )
            await add_event(conn, "smm.accounts.user.registered", events_pb2.UserRegistered(user_id=user.id))
            await request_email(conn, user.id, accounts_pb.ACCOUNT_EMAIL_KIND_VERIFY_EMAIL)
            await audit.record(conn, "auth.register", actor=f"user:{user.id}", target=f"user:{user.id}")
            return await self.open_session(conn, user, client_ip, user_agent)

    async def create_user(self, *, email: str, password: str, name: str, role: str) -> UserRow:
        email = canonical_email(email)
        validate_registration(email, password, name.strip())
        if role not in ROLES:
            collect([FieldViolation("role", "must be user, support or admin")], domain=DOMAIN)
        password_hash = await hash_password(password)
        async with self._pool.connection() as conn, conn.transaction():
            # Staff vouch for the addresses they enter, so accounts they create start verified.
            user = await self._repo.insert_user(
                conn, email=email, password_hash=password_hash, name=name.strip(), role=role, verified=True
            )
            await add_event(conn, "smm.accounts.user.registered", events_pb2.UserRegistered(user_id=user.id))
            await audit.record(
                conn, "user.created", target=f"user:{user.id}", after={"email": email, "role": role}
            )
            return user

    async def login(
        self, *, email: str, password: str, totp: str = "", client_ip: str, user_agent: str
    ) -> SignedIn:
        async with self._pool.connection() as conn:
            user = await self._repo.user_by_email(conn, canonical_email(email))
        if not await verify_password(user.password_hash if user else None, password) or user is None:
            await self._audit_failure(email, "wrong email or password")
            raise invalid_login()
        if user.status != "active":
            await self._audit_failure(email, f"account {user.status}")
            raise account_suspended()
        try:
            async with self._pool.connection() as conn, conn.transaction():
                user = await self.recheck_locked(conn, user, password)
                if self.two_factor is not None:
                    await self.two_factor.check(conn, user.id, totp)
                await audit.record(conn, "auth.login", actor=f"user:{user.id}", target=f"user:{user.id}")
                if needs_rehash(user.password_hash):
                    await self._repo.update_password_hash(conn, user.id, await hash_password(password))
                return await self.open_session(conn, user, client_ip, user_agent)
        except Unauthenticated as exc:
            why = {
                "INVALID_TOTP": "wrong two-factor code",
                "INVALID_LOGIN": "wrong email or password",
                "ACCOUNT_SUSPENDED": "account suspended",
            }.get(exc.reason)
            if why is not None:
                await self._audit_failure(email, why)
            raise

    async def recheck_locked(self, conn: Conn, user: UserRow, password: str) -> UserRow:
        """The user row locked, as it is now. The password was checked before, without a lock: a
        suspension, deletion or new password committed since ended every session, and the one
        about to be opened must not outlive it (a reactivation would bring it back)."""
        current = await self._repo.lock_user(conn, user.id)
        if current is None or current.status != "active":
            raise account_suspended()
        # A changed hash: a new password (or a rehash at another login); only the new one opens.
        if current.password_hash != user.password_hash and not await verify_password(
            current.password_hash, password
        ):
            raise invalid_login()
        return current

    async def _audit_failure(self, email: str, why: str) -> None:
        async with self._pool.connection() as conn:
            target = f"email:{canonical_email(email).lower()[:320]}"
            await audit.record(
                conn, "auth.login_failed", actor="anonymous", target=target, after={"reason": why}
            )

    async def open_session(self, conn: object, user: UserRow, client_ip: str, user_agent: str) -> SignedIn:
        token = SESSION_PREFIX + secrets.token_urlsafe(32)
        expire_time = datetime.now(UTC) + self._session_ttl
        await self._repo.insert_session(
            conn,  # type: ignore[arg-type]
            user_id=user.id,
            token_hash=token_hash(token),
            expire_time=expire_time,
            client_ip=client_ip[:64],
            user_agent=user_agent[:512],
        )
        return SignedIn(token, expire_time, user)

    async def logout(self, who: auth.Principal) -> None:
        if who.session_id is None:
            raise FailedPrecondition(
                "only a session can be logged out", reason="NOT_A_SESSION", domain=DOMAIN
            )
        async with self._pool.connection() as conn, conn.transaction():
            await self._repo.revoke_session(conn, who.session_id)
            await audit.record(conn, "auth.logout", target=f"session:{who.session_id}")

    async def me(self, who: auth.Principal) -> UserRow:
        if who.user_id is None:
            raise NotFound("no user is signed in", reason="USER_NOT_FOUND", domain=DOMAIN)
        async with self._pool.connection() as conn:
            user = await self._repo.user(conn, who.user_id)
        if user is None:
            raise NotFound("no user is signed in", reason="USER_NOT_FOUND", domain=DOMAIN)
        return user


class Profiles:
    """The signed-in user's own profile, sessions and password."""

    def __init__(self, pool: Pool, repo: AccountsRepo, accounts: AccountsLogic) -> None:
        self._pool = pool
        self._repo = repo
        self._accounts = accounts

    async def profile(self, who: auth.Principal) -> ProfileRow:
        async with self._pool.connection() as conn:
            row = await self._repo.profile(conn, _user_id(who))
        if row is None:
            raise NotFound("no user is signed in", reason="USER_NOT_FOUND", domain=DOMAIN)
        return row

    async def update_profile(self, who: auth.Principal, changes: dict[str, Any]) -> ProfileRow:
        violations: list[FieldViolation] = []
        if "name" in changes and len(changes["name"]) > 200:
            violations.append(FieldViolation("profile.name", "must be at most 200 characters"))
        if "timezone" in changes and changes["timezone"] not in _timezones():
            violations.append(
                FieldViolation("profile.timezone", "must be an IANA time zone like Europe/Berlin")
            )
        if "notification_preferences" in changes:
            chosen = changes["notification_preferences"]
            if len(json.dumps(chosen)) > 16_384:
                violations.append(FieldViolation("profile.notification_preferences", "is too large"))
            else:
                violations += preferences.violations(chosen, field="profile.notification_preferences")
        collect(violations, domain=DOMAIN)
        user_id = _user_id(who)
        async with self._pool.connection() as conn, conn.transaction():
            current = await self._repo.profile(conn, user_id)
            if current is None:
                raise NotFound("no user is signed in", reason="USER_NOT_FOUND", domain=DOMAIN)
            updated = await self._repo.update_profile(conn, user_id, replace(current, **changes))
        assert updated is not None
        return updated

    async def sessions(self, who: auth.Principal) -> list[SessionRow]:
        async with self._pool.connection() as conn:
            return await self._repo.live_sessions(conn, _user_id(who))

    async def revoke_session(self, who: auth.Principal, session_id: int) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            if await self._repo.revoke_user_session(conn, session_id, _user_id(who)):
                await audit.record(conn, "auth.session_revoked", target=f"session:{session_id}")
            else:
                raise NotFound(
                    "session not found",
                    reason="SESSION_NOT_FOUND",
                    domain=DOMAIN,
                    metadata={"id": str(session_id)},
                )

    async def change_password(
        self, who: auth.Principal, current: str, new: str, *, client_ip: str, user_agent: str
    ) -> SignedIn:
        user_id = _user_id(who)
        if not MIN_PASSWORD <= len(new) <= MAX_PASSWORD:
            collect([FieldViolation("new_password", f"must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")])
        async with self._pool.connection() as conn:
            user = await self._repo.user(conn, user_id)
        await require_password(self._pool, user, current, field="current_password")
        assert user is not None
        new_hash = await hash_password(new)
        async with self._pool.connection() as conn, conn.transaction():
            # Under the lock, as login does: a suspension, or a new password set by a reset or
            # another change, that committed since the check ended this caller's session.
            try:
                user = await self._accounts.recheck_locked(conn, user, current)
            except Unauthenticated:
                raise invalid_credential() from None
            await self._repo.update_password_hash(conn, user_id, new_hash)
            # Whoever else held a session (or a stolen one) is out; this device gets a new one.
            await self._repo.revoke_all_sessions(conn, user_id)
            # So is whoever holds a reset link mailed before, or a pending address change (asked for
            # with the old password, perhaps by whoever is being locked out): either would undo this.
            await self._repo.void_mailed_links(conn, user_id)
            await audit.record(conn, "auth.password_changed", target=f"user:{user_id}")
            await security.security_changed(conn, user_id, security.PASSWORD_CHANGED)
            return await self._accounts.open_session(conn, user, client_ip, user_agent)


@cache
def _timezones() -> frozenset[str]:
    return frozenset(available_timezones())


def _user_id(who: auth.Principal) -> int:
    if who.user_id is None:
        raise NotFound("no user is signed in", reason="USER_NOT_FOUND", domain=DOMAIN)
    return who.user_id


class CredentialStore:
    """The server's ``CredentialResolver``: session tokens and API keys, checked on every call, so
    a logout, a revocation or a suspension takes effect at once."""

    def __init__(self, pool: Pool, repo: AccountsRepo, api_keys: ApiKeys) -> None:
        self._pool = pool
        self._repo = repo
        self._api_keys = api_keys

    async def resolve(
        self, credential: str, *, client_ip: str, api_keys_only: bool = False
    ) -> auth.Principal:
        if credential.startswith(KEY_PREFIX):
            return await self._api_keys.resolve(token_hash(credential), client_ip)
        # Where only keys are taken (the reseller endpoint), a session's token is refused as an
        # unknown credential is, before it is looked up.
        if api_keys_only or not credential.startswith(SESSION_PREFIX):
            raise invalid_credential()
        async with self._pool.connection() as conn:
            session = await self._repo.live_session(conn, token_hash(credential))
        if session is None:
            raise invalid_credential()
        return auth.Principal(
            auth.Role(session.role),
            user_id=session.user_id,
            name=session.email,
            session_id=session.session_id,
            email_verified=session.email_verified,
            totp_enabled=session.totp_enabled,
        )
