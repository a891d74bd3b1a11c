"""Flows that reach a person by email: verification, password reset, email change.

A flow writes only an ``AccountEmailRequested`` event (user id and kind) in its transaction. The
email worker later calls ``prepare``, which mints a fresh single-use link at that moment and hands
it straight to the worker over gRPC: no link ever sits in the outbox, in NATS or in a log line.
Links are stored as SHA-256 hashes, expire, and are used up by the first successful use; minting
a new one voids the earlier unused ones of the same kind.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias
from urllib.parse import urlencode

from smm.v1 import accounts_service_pb2 as accounts_pb

from server.accounts import security
from server.accounts.errors import DOMAIN, email_taken
from server.accounts.keycache import ApiKeyCache
from server.accounts.logic import MAX_PASSWORD, MIN_PASSWORD, is_email_address, request_email
from server.accounts.passwords import hash_password
from server.accounts.reauth import require_password
from server.accounts.repo import AccountsRepo, Conn, UserRow
from server.accounts.tokens import token_hash
from server.common import audit, auth
from server.common.db import Pool
from server.common.errors import FailedPrecondition, FieldViolation, NotFound, collect
from server.common.text import canonical_email

Kind: TypeAlias = accounts_pb.AccountEmailKind.ValueType
VERIFY = accounts_pb.ACCOUNT_EMAIL_KIND_VERIFY_EMAIL
RESET = accounts_pb.ACCOUNT_EMAIL_KIND_RESET_PASSWORD
CHANGE = accounts_pb.ACCOUNT_EMAIL_KIND_CHANGE_EMAIL
CHANGE_NOTICE = accounts_pb.ACCOUNT_EMAIL_KIND_CHANGE_EMAIL_NOTICE
KINDS = (VERIFY, RESET, CHANGE, CHANGE_NOTICE)
LINK_PREFIX = "smm_l_"


@dataclass(frozen=True)
class LinkSettings:
    web_url: str
    verify_ttl_s: int
    reset_ttl_s: int
    change_ttl_s: int


@dataclass(frozen=True)
class PreparedEmail:
    send: bool
    skip_reason: str = ""
    to: str = ""
    name: str = ""
    link: str = ""
    link_expire_time: datetime | None = None
    new_email: str = ""


def invalid_link() -> FailedPrecondition:
    # One answer for unknown, used and expired links: nothing to learn by probing.
    return FailedPrecondition(
        "this link is not valid any more; ask for a new one", reason="INVALID_LINK", domain=DOMAIN
    )


class AccountEmails:
    def __init__(
        self, pool: Pool, repo: AccountsRepo, links: LinkSettings, *, keys: ApiKeyCache | None = None
    ) -> None:
        self._pool = pool
        self._repo = repo
        self._links = links
        self._keys = keys or ApiKeyCache(0)

    async def request_password_reset(self, email: str) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            user = await self._repo.user_by_email(conn, canonical_email(email)[:320])
            if user is None or user.status != "active":
                return  # the same empty reply: no oracle for who has an account
            await request_email(conn, user.id, RESET)
            await audit.record(conn, "auth.password_reset_requested", target=f"user:{user.id}")

    async def reset_password(self, token: str, new_password: str) -> None:
        # Check the password before using the link up, so a typo does not cost the user the link.
        if not MIN_PASSWORD <= len(new_password) <= MAX_PASSWORD:
            collect(
                [FieldViolation("new_password", f"must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")],
                domain=DOMAIN,
            )
        new_hash = await hash_password(new_password)
        async with self._pool.connection() as conn, conn.transaction():
            used = await self._repo.use_account_token(conn, token_hash(token), ["reset_password"])
            if used is None:
                raise invalid_link()
            user = await self._repo.lock_user(conn, used.user_id)
            if user is None or user.status != "active":
                raise invalid_link()
            # Like a verification link, a reset link only speaks for the inbox it was sent to: once
            # the account's address is another, whoever reads the old inbox has no say.
            if used.email.lower() != user.email.lower():
                raise invalid_link()
            await self._repo.update_password_hash(conn, user.id, new_hash)
            await self._repo.revoke_all_sessions(conn, user.id)
            # The other reset links mailed before this one, and a pending address change.
            await self._repo.void_mailed_links(conn, user.id)
            # The link reached this inbox, which proves the address as a verification link would.
            await self._repo.mark_email_verified(conn, user.id, used.email)
            await audit.record(conn, "auth.password_reset", actor=f"user:{user.id}", target=f"user:{user.id}")
            await security.security_changed(conn, user.id, security.PASSWORD_RESET)
        self._keys.forget_user(user.id)  # the user's API keys carry the verification

    async def verify_email(self, token: str) -> str:
        async with self._pool.connection() as conn, conn.transaction():
            used = await self._repo.use_account_token(
                conn, token_hash(token), ["verify_email", "change_email"]
            )
            if used is None:
                raise invalid_link()
            if used.purpose == "change_email":
                confirmed = await self._repo.confirm_email_change(conn, used.user_id, used.email)
                action = "auth.email_changed"
            else:
                confirmed = await self._repo.mark_email_verified(conn, used.user_id, used.email)
                action = "auth.email_verified"
            if confirmed is None:  # the address changed since, or the account is no longer active
                raise invalid_link()
            if used.purpose == "change_email":
                await self._repo.void_mailed_links(conn, used.user_id)  # they went to the old inbox
            await audit.record(
                conn,
                action,
                actor=f"user:{used.user_id}",
                target=f"user:{used.user_id}",
                after={"email": confirmed},
            )
            if used.purpose == "change_email":
                await security.security_changed(conn, used.user_id, security.EMAIL_CHANGED)
        self._keys.forget_user(used.user_id)  # the user's API keys carry the address
        return confirmed

    async def send_verification(self, who: auth.Principal) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            user = await self._user(conn, who)
            if user.email_verified_at is not None:
                raise FailedPrecondition(
                    "the address is already confirmed", reason="EMAIL_ALREADY_VERIFIED", domain=DOMAIN
                )
            await request_email(conn, user.id, VERIFY)

    async def change_email(self, who: auth.Principal, new_email: str, password: str) -> str:
        new_email = canonical_email(new_email)
        if not is_email_address(new_email):
            collect([FieldViolation("new_email", "must be an email address")], domain=DOMAIN)
        async with self._pool.connection() as conn:
            user = await self._user(conn, who)
        await require_password(self._pool, user, password, field="password")
        if new_email.lower() == user.email.lower():
            collect([FieldViolation("new_email", "is already the account's address")], domain=DOMAIN)
        async with self._pool.connection() as conn, conn.transaction():
            if await self._repo.email_in_use(conn, new_email):
                raise email_taken()
            await self._repo.set_pending_email(conn, user.id, new_email)
            await request_email(conn, user.id, CHANGE)
            await request_email(conn, user.id, CHANGE_NOTICE)
            await audit.record(
                conn,
                "auth.email_change_requested",
                target=f"user:{user.id}",
                after={"pending_email": new_email},
            )
        return new_email

    async def _user(self, conn: Conn, who: auth.Principal) -> UserRow:
        user = None if who.user_id is None else await self._repo.user(conn, who.user_id)
        if user is None:
            raise NotFound("no user is signed in", reason="USER_NOT_FOUND", domain=DOMAIN)
        return user

    async def prepare(self, user_id: int, kind: Kind, request_id: str = "", to: str = "") -> PreparedEmail:
        """What to send now for one requested email, with a link minted for it.

        ``request_id`` is the email event's id. A redelivered event gets a new link, but the link
        minted for an earlier delivery of the same event stays valid: that attempt may have been
        delivered (the worker died before its ack), and Resend then refuses the new message as a
        duplicate of it, so the first link is the one in the user's inbox. ``to`` is the address
        the message was planned for (its ``email_messages`` row): when the account's address for
        this kind is another one by now, nothing is minted (the row would name the wrong inbox).
        """
        if kind not in KINDS:  # the caller's mistake, whatever the account's state
            collect([FieldViolation("kind", "must be an account email kind")], domain=DOMAIN)
        async with self._pool.connection() as conn, conn.transaction():
            user = await self._repo.user(conn, user_id)
            if user is None or user.status != "active":
                return PreparedEmail(False, "the account is not active")
            address = user.pending_email if kind == CHANGE else user.email
            if to and address and address != to:
                return PreparedEmail(False, "the address changed since the message was planned")
            if kind == VERIFY:
                if user.email_verified_at is not None:
                    return PreparedEmail(False, "the address is already confirmed")
                return await self._with_link(
                    conn, user, "verify_email", user.email, "verify-email", request_id
                )
            if kind == RESET:
                return await self._with_link(
                    conn, user, "reset_password", user.email, "reset-password", request_id
                )
            if not user.pending_email:
                return PreparedEmail(False, "no email change is pending")
            if kind == CHANGE:
                return await self._with_link(
                    conn, user, "change_email", user.pending_email, "verify-email", request_id
                )
            assert kind == CHANGE_NOTICE
            return PreparedEmail(True, to=user.email, name=user.name, new_email=user.pending_email)

    async def _with_link(
        self, conn: Conn, user: UserRow, purpose: str, to: str, page: str, request_id: str
    ) -> PreparedEmail:
        token = LINK_PREFIX + secrets.token_urlsafe(32)
        ttl = {
            "verify_email": self._links.verify_ttl_s,
            "reset_password": self._links.reset_ttl_s,
            "change_email": self._links.change_ttl_s,
        }[purpose]
        expire_time = await self._repo.issue_account_token(
            conn,
            user_id=user.id,
            purpose=purpose,
            token_hash=token_hash(token),
            email=to,
            ttl_s=ttl,
            request_id=request_id,
        )
        link = f"{self._links.web_url.rstrip('/')}/{page}?{urlencode({'token': token})}"
        return PreparedEmail(True, to=to, name=user.name, link=link, link_expire_time=expire_time)
