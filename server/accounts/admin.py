"""Staff management of accounts: list, detail, update, suspend, reactivate, delete (anonymise)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from server.accounts.errors import DOMAIN
from server.accounts.keycache import ApiKeyCache
from server.accounts.logic import ANONYMISED_DOMAIN, MAX_EMAIL, ROLES, is_email_address
from server.accounts.repo import AccountsRepo, UserRow
from server.common import audit
from server.common.db import Pool
from server.common.errors import FailedPrecondition, FieldViolation, NotFound, collect
from server.common.text import canonical_email

STATUSES = ("active", "suspended", "deleted")


def user_not_found(user_id: int) -> NotFound:
    return NotFound("user not found", reason="USER_NOT_FOUND", domain=DOMAIN, metadata={"id": str(user_id)})


def _visible(row: UserRow) -> dict[str, Any]:
    # What the audit trail keeps of an account: never its password hash.
    return {"email": row.email, "name": row.name, "role": row.role, "status": row.status,
            "discount_bps": row.discount_bps}  # fmt: skip


class UserAdmin:
    def __init__(self, pool: Pool, repo: AccountsRepo, *, keys: ApiKeyCache | None = None) -> None:
        self._pool = pool
        self._repo = repo
        self._keys = keys or ApiKeyCache(0)

    async def list(self, *, query: str, role: str, status: str, before_id: int, limit: int) -> list[UserRow]:
        violations = []
        if role and role not in ROLES:
            violations.append(FieldViolation("role", "must be user, support or admin"))
        if status and status not in STATUSES:
            violations.append(FieldViolation("status", "must be active, suspended or deleted"))
        collect(violations, domain=DOMAIN)
        query = query.strip()
        # Matched whole, never cut: no address (MAX_EMAIL) or name (200) is longer, so a longer
        # search finds nothing (ILIKE folds case character by character), and it is no id either.
        if len(query) > MAX_EMAIL:
            return []
        async with self._pool.connection() as conn:
            return await self._repo.users(
                conn, query=query, role=role, status=status, before_id=before_id, limit=limit
            )

    async def get(self, user_id: int) -> UserRow:
        async with self._pool.connection() as conn:
            row = await self._repo.user(conn, user_id)
        if row is None:
            raise user_not_found(user_id)
        return row

    async def update(self, user_id: int, changes: dict[str, Any]) -> UserRow:
        violations = []
        if "email" in changes:
            # Stored as validated: an address with spaces around it would match no login.
            changes = {**changes, "email": canonical_email(changes["email"])}
            if not is_email_address(changes["email"]):
                violations.append(FieldViolation("user.email", "must be an email address"))
        if "role" in changes and changes["role"] not in ROLES:
            violations.append(FieldViolation("user.role", "must be user, support or admin"))
        if "name" in changes and len(changes["name"]) > 200:
            violations.append(FieldViolation("user.name", "must be at most 200 characters"))
        collect(violations, domain=DOMAIN)
        return await self._change(user_id, "user.updated", changes)

    async def set_status(self, user_id: int, status: str, action: str) -> UserRow:
        return await self._change(user_id, action, {"status": status})

    async def delete(self, user_id: int) -> UserRow:
        anonymous = {
            "email": f"deleted-{user_id}@{ANONYMISED_DOMAIN}",
            "name": "",
            "status": "deleted",
            "password_hash": "!",  # matches no password
        }
        return await self._change(user_id, "user.deleted", anonymous)

    async def _change(self, user_id: int, action: str, changes: dict[str, Any]) -> UserRow:
        async with self._pool.connection() as conn, conn.transaction():
            current = await self._repo.lock_user(conn, user_id)
            if current is None:
                raise user_not_found(user_id)
            if current.status == "deleted":
                raise FailedPrecondition("the account is deleted", reason="USER_DELETED", domain=DOMAIN)
            updated = await self._repo.update_user(conn, replace(current, **changes))
            if updated.status != "active":
                # A suspended or deleted account's credentials stop (sessions at once, API keys as
                # server/accounts/keycache.py says); revoking them also keeps a reactivation from
                # reviving old secrets.
                await self._repo.revoke_all_sessions(conn, user_id)
                await self._repo.revoke_all_api_keys(conn, user_id)
            if updated.status != "active" or updated.email.lower() != current.email.lower():
                # A reset link or an address change asked for earlier must not outlive a suspension
                # (to work after a reactivation) nor the address it was mailed to; confirming the
                # change would also overwrite an address staff set.
                await self._repo.void_mailed_links(conn, user_id)
            await audit.record(
                conn, action, target=f"user:{user_id}", before=_visible(current), after=_visible(updated)
            )
        # Committed: this copy stops using the user's cached keys at once (role, status, email).
        self._keys.forget_user(user_id)
        return updated
