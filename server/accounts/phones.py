"""A phone number per account, confirmed by a code sent in a text message.

``set_phone`` stores the number (E.164, checked strictly), un-verifies it, voids earlier codes,
lifts a suppression of that number, and writes only an ``AccountSmsRequested`` event (user id and
kind). The SMS worker later calls ``prepare``, which mints a fresh 6-digit code at that moment and
hands it straight to the worker over gRPC: no code ever sits in the outbox, in NATS or in a log.

A code is stored as a keyed hash (HMAC-SHA256 under a key derived from the page-token secret, over
the user, the number and the code: a 6-digit code hashed without a key would fall to a
million guesses by anyone who read the table). It expires (``SMM_PHONE_CODE_TTL_MINUTES``), works
once, is spent after ``SMM_PHONE_CODE_MAX_ATTEMPTS`` wrong tries, and a newer code voids it.
Sending is rate-limited per account and per number (the shared rate-limit windows), on top of the
per-IP limit of the calls that send messages.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from smm.v1 import accounts_service_pb2 as accounts_pb
from smm.v1 import events_pb2

from server.accounts.errors import DOMAIN
from server.accounts.repo import AccountsRepo, PhoneState, ProfileRow
from server.common import audit, auth
from server.common.db import Pool
from server.common.errors import FailedPrecondition, FieldViolation, NotFound, collect
from server.common.outbox import add_event
from server.common.ratelimit import RateLimiter

# E.164: a plus, then 8 to 15 digits, the first of which (the country code's) is not 0.
E164 = re.compile(r"^\+[1-9][0-9]{7,14}$")
CODE_DIGITS = 6
PHONE_VERIFICATION = accounts_pb.ACCOUNT_SMS_KIND_PHONE_VERIFICATION


@dataclass(frozen=True)
class PhoneSettings:
    code_ttl_s: int
    max_attempts: int
    # Codes sent per minute, per account and per number.
    sends_per_min: int
    # The key codes are hashed under (derived from a deployment secret).
    hash_key: bytes


@dataclass(frozen=True)
class PreparedSms:
    send: bool
    skip_reason: str = ""
    to: str = ""
    name: str = ""
    code: str = ""
    code_expire_time: datetime | None = None


def is_e164(phone: str) -> bool:
    return E164.fullmatch(phone) is not None


def derive_code_key(secret: bytes) -> bytes:
    """A key of its own for phone codes, so the secret it comes from is used for one thing each."""
    return hmac.new(secret, b"smm phone codes v1", hashlib.sha256).digest()


def code_hash(key: bytes, user_id: int, phone: str, code: str) -> bytes:
    return hmac.new(key, f"{user_id}:{phone}:{code}".encode(), hashlib.sha256).digest()


def new_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def code_expired() -> FailedPrecondition:
    # One answer for none sent, expired, used, replaced and spent: ask for a new one.
    return FailedPrecondition(
        "there is no valid code for this number; ask for a new one", reason="CODE_EXPIRED", domain=DOMAIN
    )


class Phones:
    def __init__(self, pool: Pool, repo: AccountsRepo, limiter: RateLimiter, settings: PhoneSettings) -> None:
        self._pool = pool
        self._repo = repo
        self._limiter = limiter
        self._settings = settings

    async def set_phone(self, who: auth.Principal, phone: str) -> ProfileRow:
        phone = phone.strip()
        if not is_e164(phone):
            collect(
                [
                    FieldViolation(
                        "phone", "must be an E.164 number: + then 8 to 15 digits, like +15551234567"
                    )
                ],
                domain=DOMAIN,
            )
        user_id = _user_id(who)
        current = await self._profile(user_id)
        if current.phone == phone and current.phone_verified:
            raise FailedPrecondition(
                "this number is already verified", reason="PHONE_ALREADY_VERIFIED", domain=DOMAIN
            )
        # Counted only for a text that will be sent, once the input is known to be good.
        await self._limiter.hit(f"sms-account:{user_id}", self._settings.sends_per_min)
        await self._limiter.hit(f"sms-number:{phone}", self._settings.sends_per_min)
        async with self._pool.connection() as conn, conn.transaction():
            state = await self._state(conn, user_id)
            await self._repo.set_phone(conn, user_id, phone)
            await add_event(
                conn,
                "smm.accounts.sms.requested",
                events_pb2.AccountSmsRequested(user_id=user_id, kind=PHONE_VERIFICATION),
            )
            await audit.record(
                conn,
                "auth.phone_set",
                target=f"user:{user_id}",
                before={"phone": state.phone} if state.phone else None,
                after={"phone": phone},
            )
        return await self._profile(user_id)

    async def verify_phone(self, who: auth.Principal, code: str) -> ProfileRow:
        code = code.strip()
        if len(code) != CODE_DIGITS or not code.isascii() or not code.isdigit():
            collect([FieldViolation("code", f"must be the {CODE_DIGITS}-digit code")], domain=DOMAIN)
        user_id = _user_id(who)
        refusal: FailedPrecondition | None = None
        # The attempt is counted in a transaction that commits even when the code is wrong.
        async with self._pool.connection() as conn, conn.transaction():
            state = await self._state(conn, user_id)
            if not state.phone:
                raise FailedPrecondition(
                    "there is no phone number to verify", reason="NO_PHONE", domain=DOMAIN
                )
            if state.phone_verified:
                raise FailedPrecondition(
                    "this number is already verified", reason="PHONE_ALREADY_VERIFIED", domain=DOMAIN
                )
            live = await self._repo.lock_live_phone_code(conn, user_id, state.phone)
            if live is None:
                raise code_expired()
            expected = code_hash(self._settings.hash_key, user_id, state.phone, code)
            if hmac.compare_digest(expected, live.code_hash):
                await self._repo.use_phone_code(conn, live.id)
                await self._repo.mark_phone_verified(conn, user_id, state.phone)
                await audit.record(
                    conn, "auth.phone_verified", target=f"user:{user_id}", after={"phone": state.phone}
                )
            else:
                left = await self._repo.count_phone_code_attempt(conn, live.id, self._settings.max_attempts)
                refusal = FailedPrecondition(
                    "the code is wrong" + ("" if left else "; it no longer works, ask for a new one"),
                    reason="INVALID_CODE" if left else "CODE_EXPIRED",
                    domain=DOMAIN,
                    metadata={"attempts_left": str(left)},
                )
        if refusal is not None:
            raise refusal
        return await self._profile(user_id)

    async def remove_phone(self, who: auth.Principal) -> ProfileRow:
        user_id = _user_id(who)
        async with self._pool.connection() as conn, conn.transaction():
            state = await self._state(conn, user_id)
            if state.phone:
                await self._repo.set_phone(conn, user_id, "")
                await audit.record(
                    conn, "auth.phone_removed", target=f"user:{user_id}", before={"phone": state.phone}
                )
        return await self._profile(user_id)

    async def prepare(self, user_id: int, kind: int, to: str) -> PreparedSms:
        """What to send now for one requested text, with a code minted for it."""
        if kind != PHONE_VERIFICATION:
            collect([FieldViolation("kind", "must be an account SMS kind")], domain=DOMAIN)
        async with self._pool.connection() as conn, conn.transaction():
            state = await self._repo.lock_phone_state(conn, user_id)
            if state is None or state.status != "active":
                return PreparedSms(False, "the account is not active")
            if not state.phone:
                return PreparedSms(False, "the account has no phone number any more")
            if to and to != state.phone:
                return PreparedSms(False, "the account's number changed since")
            if state.phone_verified:
                return PreparedSms(False, "the number is already verified")
            code = new_code()
            expire_time = await self._repo.issue_phone_code(
                conn,
                user_id=user_id,
                phone=state.phone,
                code_hash=code_hash(self._settings.hash_key, user_id, state.phone, code),
                ttl_s=self._settings.code_ttl_s,
            )
        return PreparedSms(True, to=state.phone, name=state.name, code=code, code_expire_time=expire_time)

    async def _state(self, conn: object, user_id: int) -> PhoneState:
        state = await self._repo.lock_phone_state(conn, user_id)  # type: ignore[arg-type]
        if state is None:
            raise NotFound("no user is signed in", reason="USER_NOT_FOUND", domain=DOMAIN)
        return state

    async def _profile(self, user_id: int) -> ProfileRow:
        async with self._pool.connection() as conn:
            row = await self._repo.profile(conn, user_id)
        if row is None:
            raise NotFound("no user is signed in", reason="USER_NOT_FOUND", domain=DOMAIN)
        return row


def _user_id(who: auth.Principal) -> int:
    if who.user_id is None:
        raise NotFound("no user is signed in", reason="USER_NOT_FOUND", domain=DOMAIN)
    return who.user_id
