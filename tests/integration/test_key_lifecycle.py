"""API keys and two-factor sign-in at their edges: credentials minted while a suspension commits,
allow-list spellings, and single use of codes under concurrency."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx
import pytest

from server.accounts.passwords import hash_password
from server.common.db import Pool
from server.main import ServerHandle
from tests.fix_db import lock_waiters
from tests.integration.test_accounts import PASSWORD, bearer, register
from tests.integration.test_admin_users import admin_token
from tests.integration.test_edge_http import assert_error
from tests.integration.test_two_factor import enable_two_factor, login

pytestmark = pytest.mark.integration


async def suspended_while(
    pool: Pool, user_id: int, request: Callable[[], Awaitable[httpx.Response]]
) -> httpx.Response:
    """Runs a suspension as server/accounts/admin.py does (the user row locked first, sessions and
    keys revoked in the same transaction) while ``request`` waits on that lock; returns its answer."""
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("SELECT id FROM users WHERE id = %s FOR UPDATE", (user_id,))
        call = asyncio.create_task(request())
        await lock_waiters(pool, 1)
        await conn.execute("UPDATE users SET status = 'suspended' WHERE id = %s", (user_id,))
        await conn.execute(
            "UPDATE sessions SET revoke_time = now() WHERE user_id = %s AND revoke_time IS NULL", (user_id,)
        )
        await conn.execute(
            "UPDATE api_keys SET revoke_time = now() WHERE user_id = %s AND revoke_time IS NULL", (user_id,)
        )
    return await asyncio.wait_for(call, 10)


async def live_credentials(pool: Pool, user_id: int) -> tuple[int, int]:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT (SELECT count(*) FROM sessions WHERE user_id = %(u)s AND revoke_time IS NULL),"
            " (SELECT count(*) FROM api_keys WHERE user_id = %(u)s AND revoke_time IS NULL)",
            {"u": user_id},
        )
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


@pytest.mark.parametrize("how", ["create key", "login", "change password"])
async def test_no_credential_minted_while_a_suspension_commits_survives_it(
    http: httpx.AsyncClient, grpc_server: ServerHandle, settings: object, pool: Pool, how: str
) -> None:
    admin = await admin_token(http, grpc_server, settings)
    ann = await register(http)
    user_id = int(ann["user"]["id"])
    session = bearer(ann["token"])
    first = await http.post("/api/v1/dashboard/api-keys", json={"name": "first"}, headers=session)
    assert first.status_code == 200, first.text
    requests = {
        "create key": lambda: http.post("/api/v1/dashboard/api-keys", json={"name": "late"}, headers=session),
        "login": lambda: http.post(
            "/api/v1/auth/login", json={"email": "ann@example.com", "password": PASSWORD}
        ),
        "change password": lambda: http.post(
            "/api/v1/auth/password",
            json={"currentPassword": PASSWORD, "newPassword": "another long password"},
            headers=session,
        ),
    }
    answer = await suspended_while(pool, user_id, requests[how])
    if how == "login":
        assert_error(answer, 401, "UNAUTHENTICATED", "ACCOUNT_SUSPENDED")
    else:
        assert_error(answer, 401, "UNAUTHENTICATED", "INVALID_CREDENTIAL")
    # A reactivation brings back none of the account's credentials, the late one included.
    reactivated = await http.post(f"/api/v1/admin/users/{user_id}/reactivate", json={}, headers=bearer(admin))
    assert reactivated.status_code == 200, reactivated.text
    assert await live_credentials(pool, user_id) == (0, 0)


@pytest.mark.parametrize("how", ["login", "change password"])
async def test_the_old_password_opens_no_session_once_a_new_one_is_set(
    http: httpx.AsyncClient, pool: Pool, how: str
) -> None:
    # Someone holding the old password races the owner's reset (or change), which ends every
    # session: checked before the new password committed, it used to get a session after it.
    ann = await register(http)
    user_id = int(ann["user"]["id"])
    owners = "the owner's new password"
    requests = {
        "login": lambda: http.post(
            "/api/v1/auth/login", json={"email": "ann@example.com", "password": PASSWORD}
        ),
        "change password": lambda: http.post(
            "/api/v1/auth/password",
            json={"currentPassword": PASSWORD, "newPassword": "the thief's new password"},
            headers=bearer(ann["token"]),
        ),
    }
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("SELECT id FROM users WHERE id = %s FOR UPDATE", (user_id,))
        call = asyncio.create_task(requests[how]())
        await lock_waiters(pool, 1)
        await conn.execute(
            "UPDATE users SET password_hash = %s WHERE id = %s", (await hash_password(owners), user_id)
        )
        await conn.execute("UPDATE sessions SET revoke_time = now() WHERE user_id = %s", (user_id,))
    answer = await asyncio.wait_for(call, 10)
    if how == "login":
        assert_error(answer, 401, "UNAUTHENTICATED", "INVALID_LOGIN")
    else:
        assert_error(answer, 401, "UNAUTHENTICATED", "INVALID_CREDENTIAL")
    assert await live_credentials(pool, user_id) == (0, 0)
    signed_in = await http.post("/api/v1/auth/login", json={"email": "ann@example.com", "password": owners})
    assert signed_in.status_code == 200, signed_in.text


async def test_an_allow_list_entry_in_ipv4_mapped_ipv6_form_is_its_ipv4_address(
    http: httpx.AsyncClient,
) -> None:
    # How a server listening on [::] logs its IPv4 peers; the edge reports such a client by its IPv4
    # address (edge/headers.py), so the mapped spelling stored as it was matched no one.
    session = bearer((await register(http))["token"])
    created = await http.post(
        "/api/v1/dashboard/api-keys",
        json={"name": "office", "allowedIps": ["::ffff:127.0.0.1", "::ffff:198.51.100.0/120", "::1"]},
        headers=session,
    )
    assert created.status_code == 200, created.text
    assert created.json()["apiKey"]["allowedIps"] == ["127.0.0.1/32", "198.51.100.0/24", "::1/128"]
    me = await http.get("/api/v1/auth/me", headers=bearer(created.json()["secret"]))
    assert me.status_code == 200, me.text


async def test_two_logins_racing_with_one_recovery_code_let_one_in(http: httpx.AsyncClient) -> None:
    token = (await register(http))["token"]
    _otp, codes = await enable_two_factor(http, token)
    answers = await asyncio.gather(*(login(http, codes[0]) for _ in range(4)))
    assert sorted(a.status_code for a in answers) == [200, 401, 401, 401], [a.text for a in answers]
    for answer in answers:
        if answer.status_code == 401:
            assert_error(answer, 401, "UNAUTHENTICATED", "INVALID_TOTP")


async def test_two_logins_racing_with_one_app_code_let_one_in(http: httpx.AsyncClient) -> None:
    token = (await register(http))["token"]
    otp, _codes = await enable_two_factor(http, token)
    code = otp.at(time.time() + 30)  # the next step: newer than the one enabling used
    answers = await asyncio.gather(*(login(http, code) for _ in range(4)))
    assert sorted(a.status_code for a in answers) == [200, 401, 401, 401], [a.text for a in answers]
