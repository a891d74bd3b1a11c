"""The current password, asked again before a signed-in change (password, address, two-factor).

A wrong one is a password guess like a wrong login: it is audited as one, counts as a credential
failure of the caller's IP, and these calls share the account's login budget
(server/common/ratelimit.py), so a stolen session or API key cannot guess faster than a login form.
"""

from __future__ import annotations

from server.accounts.errors import DOMAIN
from server.accounts.passwords import verify_password
from server.accounts.repo import UserRow
from server.common import audit
from server.common.db import Pool
from server.common.errors import FailedPrecondition


def wrong_password(field: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"the {field.replace('_', ' ')} is wrong",
        reason="WRONG_PASSWORD",
        domain=DOMAIN,
        metadata={"field": field},
    )


async def require_password(pool: Pool, user: UserRow | None, password: str, *, field: str) -> None:
    """Return if ``password`` is the user's; otherwise audit the failure and refuse."""
    if await verify_password(user.password_hash if user else None, password) and user is not None:
        return
    async with pool.connection() as conn:
        await audit.record(
            conn,
            "auth.password_check_failed",
            target=f"user:{user.id}" if user else "",
            after={"reason": "wrong password", "field": field},
        )
    raise wrong_password(field)
