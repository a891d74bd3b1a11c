"""Two-factor sign-in: TOTP (RFC 6238, via pyotp) with single-use recovery codes.

The seed is stored encrypted (``SecretBox``, bound to the user id); recovery codes only as
SHA-256 hashes. A code is accepted within one 30-second step either side, and each step only
once (``totp_last_step`` advances atomically), so an overheard code cannot be replayed.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable

import pyotp

from server.accounts import security
from server.accounts.errors import DOMAIN
from server.accounts.keycache import ApiKeyCache
from server.accounts.reauth import require_password
from server.accounts.repo import AccountsRepo, Conn, TotpState
from server.accounts.tokens import token_hash
from server.common import audit, auth
from server.common.db import Pool
from server.common.errors import FailedPrecondition, InvalidArgument, NotFound, Unauthenticated
from server.common.secretbox import SecretBox

STEP_S = 30
RECOVERY_CODES = 10
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i to misread


def new_recovery_code() -> str:
    raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(10))
    return f"{raw[:5]}-{raw[5:]}"


def normalise_recovery_code(code: str) -> str:
    return code.strip().lower().replace("-", "").replace(" ", "")


def is_totp_code(code: str) -> bool:
    return len(code.strip()) == 6 and code.strip().isascii() and code.strip().isdigit()


def matching_step(secret: str, code: str, now: float) -> int | None:
    """The time step (current, previous or next) whose code equals ``code``, compared in constant time."""
    if not is_totp_code(code):
        return None  # compare_digest refuses non-ASCII text: such a code matches nothing
    otp = pyotp.TOTP(secret)
    current = int(now // STEP_S)
    for step in (current, current - 1, current + 1):
        if hmac.compare_digest(otp.at(step * STEP_S), code.strip()):
            return step
    return None


def invalid_code() -> Unauthenticated:
    return Unauthenticated("the two-factor code is wrong", reason="INVALID_TOTP", domain=DOMAIN)


def wrong_code_field(*, guess: bool = False) -> InvalidArgument:
    # A signed-in user mistyping a code is not a failed sign-in: 400, not 401. A wrong code where the
    # account's second factor guards a change (turning it off, new recovery codes) is still a guess
    # at it: reason INVALID_TOTP counts it as a credential failure of the IP, as a wrong current
    # password does (server/common/ratelimit.py).
    return InvalidArgument.for_field(
        "code",
        "is not a current two-factor code or an unused recovery code",
        reason="INVALID_TOTP" if guess else None,
    )


class TwoFactor:
    def __init__(
        self,
        pool: Pool,
        repo: AccountsRepo,
        box: SecretBox,
        *,
        issuer: str,
        clock: Callable[[], float] = time.time,
        keys: ApiKeyCache | None = None,
    ) -> None:
        self._pool = pool
        self._repo = repo
        self._box = box
        self._issuer = issuer
        self._clock = clock
        self._keys = keys or ApiKeyCache(0)

    async def check(self, conn: Conn, user_id: int, code: str) -> None:
        """Inside the caller's transaction: accept a current code or an unused recovery code, once."""
        state = await self._repo.lock_totp(conn, user_id)
        if state is None or state.totp_enabled_at is None:
            return
        if not code:
            raise Unauthenticated(
                "this account uses two-factor sign-in: send the app's code as totp",
                reason="TOTP_REQUIRED",
                domain=DOMAIN,
            )
        if is_totp_code(code):
            step = matching_step(self._secret(user_id, state), code, self._clock())
            if step is None or not await self._repo.advance_totp_step(conn, user_id, step):
                raise invalid_code()
            return
        if not await self._repo.use_recovery_code(conn, user_id, token_hash(normalise_recovery_code(code))):
            raise invalid_code()
        await audit.record(conn, "auth.recovery_code_used", actor=f"user:{user_id}", target=f"user:{user_id}")

    async def setup(self, who: auth.Principal, email: str) -> tuple[str, str]:
        user_id = _user_id(who)
        secret = pyotp.random_base32()
        async with self._pool.connection() as conn, conn.transaction():
            state = await self._repo.lock_totp(conn, user_id)
            if state is not None and state.totp_enabled_at is not None:
                raise FailedPrecondition(
                    "two-factor sign-in is already on", reason="TOTP_ALREADY_ENABLED", domain=DOMAIN
                )
            await self._repo.set_totp_secret(
                conn, user_id, self._box.encrypt(secret, context=_context(user_id))
            )
        uri = pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=self._issuer)
        return secret, uri

    async def enable(self, who: auth.Principal, password: str, code: str) -> list[str]:
        user_id = _user_id(who)
        # As to turn it off: with a session alone (a stolen one), someone could put their own
        # second factor on the account, and its owner could no longer sign in.
        async with self._pool.connection() as conn:
            user = await self._repo.user(conn, user_id)
        await require_password(self._pool, user, password, field="password")
        async with self._pool.connection() as conn, conn.transaction():
            state = await self._repo.lock_totp(conn, user_id)
            if state is None or not state.totp_secret:
                raise FailedPrecondition("start the setup first", reason="TOTP_NOT_SET_UP", domain=DOMAIN)
            if state.totp_enabled_at is not None:
                raise FailedPrecondition(
                    "two-factor sign-in is already on", reason="TOTP_ALREADY_ENABLED", domain=DOMAIN
                )
            if not is_totp_code(code):  # recovery codes do not exist yet: only the app's code
                raise wrong_code_field()
            step = matching_step(self._secret(user_id, state), code, self._clock())
            if step is None:
                raise wrong_code_field()
            await self._repo.enable_totp(conn, user_id, step)
            codes = await self._new_recovery_codes(conn, user_id)
            await audit.record(conn, "auth.totp_enabled", target=f"user:{user_id}")
            await security.security_changed(conn, user_id, security.TWO_FACTOR_ENABLED)
        self._keys.forget_user(user_id)  # the user's API keys carry the two-factor state
        return codes

    async def disable(self, who: auth.Principal, password: str, code: str) -> None:
        user_id = _user_id(who)
        async with self._pool.connection() as conn:
            user = await self._repo.user(conn, user_id)
        await require_password(self._pool, user, password, field="password")
        async with self._pool.connection() as conn, conn.transaction():
            await self._require_enabled(conn, user_id)
            await self._check_code(conn, user_id, code)
            await self._repo.disable_totp(conn, user_id)
            await audit.record(conn, "auth.totp_disabled", target=f"user:{user_id}")
            await security.security_changed(conn, user_id, security.TWO_FACTOR_DISABLED)
        self._keys.forget_user(user_id)

    async def regenerate(self, who: auth.Principal, code: str) -> list[str]:
        user_id = _user_id(who)
        async with self._pool.connection() as conn, conn.transaction():
            await self._require_enabled(conn, user_id)
            await self._check_code(conn, user_id, code)
            codes = await self._new_recovery_codes(conn, user_id)
            await audit.record(conn, "auth.recovery_codes_replaced", target=f"user:{user_id}")
            return codes

    async def _check_code(self, conn: Conn, user_id: int, code: str) -> None:
        if not code.strip():
            raise wrong_code_field()
        try:
            await self.check(conn, user_id, code)
        except Unauthenticated as exc:
            raise wrong_code_field(guess=True) from exc

    async def _require_enabled(self, conn: Conn, user_id: int) -> None:
        state = await self._repo.lock_totp(conn, user_id)
        if state is None or state.totp_enabled_at is None:
            raise FailedPrecondition("two-factor sign-in is off", reason="TOTP_NOT_ENABLED", domain=DOMAIN)

    async def _new_recovery_codes(self, conn: Conn, user_id: int) -> list[str]:
        codes = [new_recovery_code() for _ in range(RECOVERY_CODES)]
        hashes = [token_hash(normalise_recovery_code(c)) for c in codes]
        await self._repo.replace_recovery_codes(conn, user_id, hashes)
        return codes

    def _secret(self, user_id: int, state: TotpState) -> str:
        return self._box.decrypt(state.totp_secret, context=_context(user_id))


def _context(user_id: int) -> str:
    return f"totp:{user_id}"


def _user_id(who: auth.Principal) -> int:
    if who.user_id is None:
        raise NotFound("no user is signed in", reason="USER_NOT_FOUND", domain=DOMAIN)
    return who.user_id
