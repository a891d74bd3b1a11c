"""Accounts through the edge: register, log in, me, log out; sessions checked on every call."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import grpc
import httpx
import pytest
from argon2 import PasswordHasher, profiles
from google.rpc import error_details_pb2
from smm.v1 import accounts_service_pb2 as pb
from smm.v1 import accounts_service_pb2_grpc as pb_grpc

from server.accounts import passwords
from server.accounts.tokens import token_hash
from server.common.db import Pool
from server.common.errors import FieldViolation, InvalidArgument
from server.common.interceptors import to_status
from server.main import ServerHandle
from tests.fix_grpc import system_metadata
from tests.integration.test_edge_http import assert_error

pytestmark = pytest.mark.integration
PASSWORD = "correct horse battery"


async def register(http: httpx.AsyncClient, email: str = "ann@example.com") -> dict:
    response = await http.post(
        "/api/v1/auth/register", json={"email": email, "password": PASSWORD, "name": "Ann"}
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_register_then_me_then_logout(http: httpx.AsyncClient) -> None:
    body = await register(http)
    token = body["token"]
    assert token.startswith("smm_s_")
    assert body["expireTime"].endswith("Z")
    assert body["user"]["role"] == "user"
    assert "password" not in str(body).lower()
    me = await http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert me.json()["email"] == "ann@example.com"
    assert me.json()["id"] == body["user"]["id"]
    out = await http.post("/api/v1/auth/logout", headers={"Authorization": f"Bearer {token}"})
    assert out.status_code == 200
    again = await http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert_error(again, 401, "UNAUTHENTICATED", "INVALID_CREDENTIAL")


async def test_login_and_its_failures_say_nothing_about_who_exists(http: httpx.AsyncClient) -> None:
    await register(http)
    ok = await http.post("/api/v1/auth/login", json={"email": "ANN@example.com", "password": PASSWORD})
    assert ok.status_code == 200
    wrong = await http.post(
        "/api/v1/auth/login", json={"email": "ann@example.com", "password": "wrong password!"}
    )
    unknown = await http.post("/api/v1/auth/login", json={"email": "bob@example.com", "password": PASSWORD})
    first = assert_error(wrong, 401, "UNAUTHENTICATED", "INVALID_LOGIN")
    second = assert_error(unknown, 401, "UNAUTHENTICATED", "INVALID_LOGIN")
    assert first["message"] == second["message"]


async def test_registration_is_validated_field_by_field(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/v1/auth/register", json={"email": "not-an-email", "password": "short"})
    error = assert_error(response, 400, "INVALID_ARGUMENT")
    [bad_request] = [d for d in error["details"] if d["@type"].endswith("BadRequest")]
    assert [v["field"] for v in bad_request["fieldViolations"]] == ["email", "password"]


@pytest.mark.parametrize("email", ["ann@example.com.", "ann@.example.com", "ann@example..com"])
async def test_a_domain_with_an_empty_label_is_not_an_address(http: httpx.AsyncClient, email: str) -> None:
    """``ann@example.com.`` reaches the mailbox of ``ann@example.com`` (a trailing dot is the DNS
    root) but was a second account beside it; the other two cannot be delivered at all."""
    assert (await register(http, "ann@example.com"))["user"]["email"] == "ann@example.com"
    refused = await http.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD})
    error = assert_error(refused, 400, "INVALID_ARGUMENT")
    assert error["details"][0]["metadata"]["field"] == "email"


async def test_one_account_per_email_even_under_concurrency(http: httpx.AsyncClient) -> None:
    payload = {"email": "Race@Example.com", "password": PASSWORD}
    results = await asyncio.gather(*(http.post("/api/v1/auth/register", json=payload) for _ in range(5)))
    codes = sorted(r.status_code for r in results)
    assert codes == [200, 409, 409, 409, 409]
    upper = await http.post("/api/v1/auth/register", json={"email": "race@example.COM", "password": PASSWORD})
    assert_error(upper, 409, "ALREADY_EXISTS", "EMAIL_TAKEN")


async def test_suspension_stops_sessions_at_once(http: httpx.AsyncClient, pool: Pool) -> None:
    token = (await register(http))["token"]
    async with pool.connection() as conn:
        await conn.execute("UPDATE users SET status = 'suspended'")
    me = await http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert_error(me, 401, "UNAUTHENTICATED", "INVALID_CREDENTIAL")
    login = await http.post("/api/v1/auth/login", json={"email": "ann@example.com", "password": PASSWORD})
    assert_error(login, 401, "UNAUTHENTICATED", "ACCOUNT_SUSPENDED")


async def test_a_user_is_not_an_admin(http: httpx.AsyncClient) -> None:
    token = (await register(http))["token"]
    response = await http.post(
        "/api/v1/admin/categories", json={"name": "X"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert_error(response, 403, "PERMISSION_DENIED")
    anonymous_me = await http.get("/api/v1/auth/me")
    assert_error(anonymous_me, 401, "UNAUTHENTICATED", "SIGN_IN_REQUIRED")


async def test_passwords_are_stored_as_argon2id(http: httpx.AsyncClient, pool: Pool) -> None:
    await register(http)
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT password_hash FROM users")).fetchone()
        sessions = await (await conn.execute("SELECT token_hash FROM sessions")).fetchall()
    assert row is not None
    assert row[0].startswith("$argon2id$")
    assert PASSWORD not in row[0]
    assert all(len(bytes(s[0])) == 32 for s in sessions)  # SHA-256 of the token, never the token


async def test_a_hash_of_older_parameters_is_replaced_at_the_next_sign_in(
    http: httpx.AsyncClient, pool: Pool
) -> None:
    await register(http)
    older = PasswordHasher.from_parameters(replace(profiles.CHEAPEST, time_cost=2)).hash(PASSWORD)
    async with pool.connection() as conn:
        await conn.execute("UPDATE users SET password_hash = %s", (older,))
    wrong = await http.post("/api/v1/auth/login", json={"email": "ann@example.com", "password": "not it!!"})
    assert_error(wrong, 401, "UNAUTHENTICATED", "INVALID_LOGIN")
    assert await _stored_hash(pool) == older  # a failed sign-in rewrites nothing

    ok = await http.post("/api/v1/auth/login", json={"email": "ann@example.com", "password": PASSWORD})
    assert ok.status_code == 200, ok.text
    rehashed = await _stored_hash(pool)
    assert rehashed != older
    assert not passwords.needs_rehash(rehashed)
    again = await http.post("/api/v1/auth/login", json={"email": "ann@example.com", "password": PASSWORD})
    assert again.status_code == 200, again.text
    assert await _stored_hash(pool) == rehashed  # current parameters: left alone


async def _stored_hash(pool: Pool) -> str:
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT password_hash FROM users")).fetchone()
    assert row is not None
    return str(row[0])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_api_keys_create_list_use_rotate_revoke(
    http: httpx.AsyncClient, pool: Pool, grpc_server: ServerHandle
) -> None:
    session = (await register(http))["token"]
    created = await http.post("/api/v1/dashboard/api-keys", json={"name": "bot"}, headers=bearer(session))
    assert created.status_code == 200, created.text
    secret = created.json()["secret"]
    key = created.json()["apiKey"]
    assert secret.startswith("smm_k_")
    assert key["prefix"] == secret[:12]
    me = await http.get("/api/v1/auth/me", headers=bearer(secret))
    assert me.json()["email"] == "ann@example.com"
    listed = (await http.get("/api/v1/dashboard/api-keys", headers=bearer(session))).json()["apiKeys"]
    assert [k["name"] for k in listed] == ["bot"]
    assert secret not in str(listed)
    assert listed[0]["lastUsedTime"] is not None

    rotated = await http.post(
        f"/api/v1/dashboard/api-keys/{key['id']}/rotate", json={}, headers=bearer(session)
    )
    new_secret = rotated.json()["secret"]
    assert new_secret != secret
    # The old key keeps working during the grace period ...
    assert (await http.get("/api/v1/auth/me", headers=bearer(secret))).status_code == 200
    assert (await http.get("/api/v1/auth/me", headers=bearer(new_secret))).status_code == 200
    # ... and stops once it ends. Moving the end into the past behind the server's back stands in
    # for the hours going by, so the server's key cache must forget what it read before.
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE api_keys SET expire_time = now() - interval '1 second' WHERE id = %s", (int(key["id"]),)
        )
    assert grpc_server.key_cache is not None
    grpc_server.key_cache.clear()
    assert_error(
        await http.get("/api/v1/auth/me", headers=bearer(secret)),
        401,
        "UNAUTHENTICATED",
        "INVALID_CREDENTIAL",
    )

    new_id = rotated.json()["apiKey"]["id"]
    revoked = await http.delete(f"/api/v1/dashboard/api-keys/{new_id}", headers=bearer(session))
    assert revoked.json()["revokeTime"] is not None
    assert_error(await http.get("/api/v1/auth/me", headers=bearer(new_secret)), 401, "UNAUTHENTICATED")


async def test_another_users_key_is_not_found(http: httpx.AsyncClient) -> None:
    ann = (await register(http, "ann@example.com"))["token"]
    bob = (await register(http, "bob@example.com"))["token"]
    key = (await http.post("/api/v1/dashboard/api-keys", json={"name": "a"}, headers=bearer(ann))).json()[
        "apiKey"
    ]
    for response in (
        await http.delete(f"/api/v1/dashboard/api-keys/{key['id']}", headers=bearer(bob)),
        await http.post(f"/api/v1/dashboard/api-keys/{key['id']}/rotate", json={}, headers=bearer(bob)),
        await http.delete("/api/v1/dashboard/api-keys/999999", headers=bearer(bob)),
    ):
        assert_error(response, 404, "NOT_FOUND", "API_KEY_NOT_FOUND")
    assert (await http.get("/api/v1/dashboard/api-keys", headers=bearer(bob))).json()["apiKeys"] == []


async def test_api_key_ip_allow_list(http: httpx.AsyncClient) -> None:
    session = (await register(http))["token"]
    bad = await http.post(
        "/api/v1/dashboard/api-keys", json={"name": "x", "allowedIps": ["nope"]}, headers=bearer(session)
    )
    assert_error(bad, 400, "INVALID_ARGUMENT")
    elsewhere = await http.post(
        "/api/v1/dashboard/api-keys",
        json={"name": "x", "allowedIps": ["203.0.113.0/24"]},
        headers=bearer(session),
    )
    local = await http.post(
        "/api/v1/dashboard/api-keys", json={"name": "y", "allowedIps": ["127.0.0.1"]}, headers=bearer(session)
    )
    denied = await http.get("/api/v1/auth/me", headers=bearer(elsewhere.json()["secret"]))
    assert_error(denied, 403, "PERMISSION_DENIED", "IP_NOT_ALLOWED")
    assert (await http.get("/api/v1/auth/me", headers=bearer(local.json()["secret"]))).status_code == 200


async def test_profile_read_and_patch(http: httpx.AsyncClient) -> None:
    token = (await register(http))["token"]
    profile = (await http.get("/api/v1/dashboard/profile", headers=bearer(token))).json()
    assert profile == {
        "name": "Ann",
        "timezone": "UTC",
        "notificationPreferences": {},
        "email": "ann@example.com",
        "phone": "",
        "phoneVerified": False,
    }
    patched = await http.patch(
        "/api/v1/dashboard/profile",
        json={"timezone": "Europe/Berlin", "notificationPreferences": {"orderCompleted": {"email": False}}},
        headers=bearer(token),
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["timezone"] == "Europe/Berlin"
    assert patched.json()["name"] == "Ann"  # not in the patch: unchanged
    assert patched.json()["notificationPreferences"] == {"orderCompleted": {"email": False}}
    bad = await http.patch(
        "/api/v1/dashboard/profile", json={"timezone": "Mars/Olympus"}, headers=bearer(token)
    )
    assert_error(bad, 400, "INVALID_ARGUMENT")


async def test_password_change_ends_every_other_session(http: httpx.AsyncClient) -> None:
    first = (await register(http))["token"]
    second = (
        await http.post("/api/v1/auth/login", json={"email": "ann@example.com", "password": PASSWORD})
    ).json()["token"]
    sessions = (await http.get("/api/v1/dashboard/sessions", headers=bearer(first))).json()["sessions"]
    assert len(sessions) == 2
    assert [s["current"] for s in sessions] == [True, False]
    wrong = await http.post(
        "/api/v1/auth/password",
        json={"currentPassword": "not it at all", "newPassword": "a brand new password"},
        headers=bearer(first),
    )
    assert_error(wrong, 400, "FAILED_PRECONDITION", "WRONG_PASSWORD")
    changed = await http.post(
        "/api/v1/auth/password",
        json={"currentPassword": PASSWORD, "newPassword": "a brand new password"},
        headers=bearer(first),
    )
    assert changed.status_code == 200
    fresh = changed.json()["token"]
    for old in (first, second):
        assert_error(await http.get("/api/v1/auth/me", headers=bearer(old)), 401, "UNAUTHENTICATED")
    assert (await http.get("/api/v1/auth/me", headers=bearer(fresh))).status_code == 200
    login = await http.post(
        "/api/v1/auth/login", json={"email": "ann@example.com", "password": "a brand new password"}
    )
    assert login.status_code == 200


async def test_sessions_are_revocable_by_their_owner_only(http: httpx.AsyncClient) -> None:
    ann = (await register(http, "ann@example.com"))["token"]
    bob = (await register(http, "bob@example.com"))["token"]
    [ann_session] = (await http.get("/api/v1/dashboard/sessions", headers=bearer(ann))).json()["sessions"]
    other = await http.delete(f"/api/v1/dashboard/sessions/{ann_session['id']}", headers=bearer(bob))
    assert_error(other, 404, "NOT_FOUND", "SESSION_NOT_FOUND")
    own = await http.delete(f"/api/v1/dashboard/sessions/{ann_session['id']}", headers=bearer(ann))
    assert own.status_code == 200
    assert_error(await http.get("/api/v1/auth/me", headers=bearer(ann)), 401, "UNAUTHENTICATED")


# ---------------------------------------------------------------- reset links outlive nothing


async def account_link(
    grpc_server: ServerHandle, user_id: int | str, kind: int = pb.ACCOUNT_EMAIL_KIND_RESET_PASSWORD
) -> str:
    """The link's token, as the email worker gets it when it sends the mail."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_server.port}") as channel:
        prepared = await pb_grpc.AccountsServiceStub(channel).PrepareAccountEmail(
            pb.PrepareAccountEmailRequest(user_id=int(user_id), kind=kind),  # type: ignore[arg-type]
            metadata=system_metadata("email"),
        )
    assert prepared.send, prepared
    return parse_qs(urlsplit(prepared.link).query)["token"][0]


async def reset(http: httpx.AsyncClient, token: str, chosen: str = "attacker chose this") -> httpx.Response:
    return await http.post("/api/v1/auth/password/reset", json={"token": token, "newPassword": chosen})


async def test_a_password_change_voids_unused_reset_links(
    http: httpx.AsyncClient, grpc_server: ServerHandle
) -> None:
    ann = await register(http)
    link = await account_link(grpc_server, ann["user"]["id"])
    changed = await http.post(
        "/api/v1/auth/password",
        json={"currentPassword": PASSWORD, "newPassword": "my new strong secret"},
        headers=bearer(ann["token"]),
    )
    assert changed.status_code == 200, changed.text
    assert_error(await reset(http, link), 400, "FAILED_PRECONDITION", "INVALID_LINK")
    login = await http.post(
        "/api/v1/auth/login", json={"email": "ann@example.com", "password": "my new strong secret"}
    )
    assert login.status_code == 200, login.text


async def test_a_reset_voids_the_other_unused_reset_links(
    http: httpx.AsyncClient, grpc_server: ServerHandle, pool: Pool
) -> None:
    ann = await register(http)
    link = await account_link(grpc_server, ann["user"]["id"])
    # A second live link, as when two mails were prepared at the same moment.
    other = "smm_l_minted-by-a-concurrent-mail"
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO account_tokens (user_id, purpose, token_hash, email, expire_time)"
            " VALUES (%s, 'reset_password', %s, 'ann@example.com', now() + interval '1 hour')",
            (int(ann["user"]["id"]), token_hash(other)),
        )
    done = await reset(http, link, "the owner's new password")
    assert done.status_code == 200, done.text
    assert_error(await reset(http, other), 400, "FAILED_PRECONDITION", "INVALID_LINK")
    login = await http.post(
        "/api/v1/auth/login", json={"email": "ann@example.com", "password": "the owner's new password"}
    )
    assert login.status_code == 200, login.text


async def test_a_reset_link_is_refused_for_another_address_than_the_accounts(
    http: httpx.AsyncClient, pool: Pool
) -> None:
    ann = await register(http)
    sent_elsewhere = "smm_l_sent-to-an-address-ann-no-longer-has"
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO account_tokens (user_id, purpose, token_hash, email, expire_time)"
            " VALUES (%s, 'reset_password', %s, 'ann.old@example.com', now() + interval '1 hour')",
            (int(ann["user"]["id"]), token_hash(sent_elsewhere)),
        )
    assert_error(await reset(http, sent_elsewhere), 400, "FAILED_PRECONDITION", "INVALID_LINK")
    # The same link for the account's own address (in other letter case) works.
    same_inbox = "smm_l_sent-to-anns-address"
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO account_tokens (user_id, purpose, token_hash, email, expire_time)"
            " VALUES (%s, 'reset_password', %s, 'Ann@Example.com', now() + interval '1 hour')",
            (int(ann["user"]["id"]), token_hash(same_inbox)),
        )
    assert (await reset(http, same_inbox)).status_code == 200


async def test_a_confirmed_email_change_voids_unused_reset_links(
    http: httpx.AsyncClient, grpc_server: ServerHandle
) -> None:
    ann = await register(http)
    user_id = ann["user"]["id"]
    link = await account_link(grpc_server, user_id)
    token = ann["token"]
    # Away to a new address and back again: the link's address is the account's once more, so
    # only voiding it at the change stops it.
    for new_email in ("ann.new@example.com", "ann@example.com"):
        asked = await http.post(
            "/api/v1/auth/email/change",
            json={"newEmail": new_email, "password": PASSWORD},
            headers=bearer(token),
        )
        assert asked.status_code == 200, asked.text
        change = await account_link(grpc_server, user_id, pb.ACCOUNT_EMAIL_KIND_CHANGE_EMAIL)
        confirmed = await http.post("/api/v1/auth/email/verify", json={"token": change})
        assert confirmed.json() == {"email": new_email}, confirmed.text
    assert_error(await reset(http, link), 400, "FAILED_PRECONDITION", "INVALID_LINK")


async def test_wrong_current_passwords_are_audited(http: httpx.AsyncClient, pool: Pool) -> None:
    ann = await register(http)
    wrong = await http.post(
        "/api/v1/auth/password",
        json={"currentPassword": "a guess at it", "newPassword": "thief's own password"},
        headers=bearer(ann["token"]),
    )
    assert_error(wrong, 400, "FAILED_PRECONDITION", "WRONG_PASSWORD")
    moved = await http.post(
        "/api/v1/auth/email/change",
        json={"newEmail": "thief@example.com", "password": "another guess"},
        headers=bearer(ann["token"]),
    )
    assert_error(moved, 400, "FAILED_PRECONDITION", "WRONG_PASSWORD")
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT actor, target, after FROM audit_events WHERE action = 'auth.password_check_failed' ORDER BY id"
        )
        rows = await cursor.fetchall()
    who = f"user:{ann['user']['id']}"
    assert rows == [
        (who, who, {"reason": "wrong password", "field": "current_password"}),
        (who, who, {"reason": "wrong password", "field": "password"}),
    ]


# ---------------------------------------------------------------- API key limits


async def test_only_live_keys_count_towards_the_key_limit(http: httpx.AsyncClient, pool: Pool) -> None:
    session = bearer((await register(http))["token"])
    ids = []
    for n in range(50):
        created = await http.post("/api/v1/dashboard/api-keys", json={"name": f"k{n}"}, headers=session)
        assert created.status_code == 200, created.text
        ids.append(created.json()["apiKey"]["id"])
    full = await http.post("/api/v1/dashboard/api-keys", json={"name": "one too many"}, headers=session)
    error = assert_error(full, 400, "FAILED_PRECONDITION", "TOO_MANY_API_KEYS")
    assert "revoke one" in error["message"]
    # Rotating makes a key too (the old one lives on for the grace period): the same limit.
    rotated = await http.post(f"/api/v1/dashboard/api-keys/{ids[0]}/rotate", json={}, headers=session)
    assert_error(rotated, 400, "FAILED_PRECONDITION", "TOO_MANY_API_KEYS")
    # A revoked key is history: room for one more.
    assert (await http.delete(f"/api/v1/dashboard/api-keys/{ids[1]}", headers=session)).status_code == 200
    again = await http.post("/api/v1/dashboard/api-keys", json={"name": "after a revoke"}, headers=session)
    assert again.status_code == 200, again.text
    # So is an expired one (a rotated key past its grace period).
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE api_keys SET expire_time = now() - interval '1 second' WHERE id = %s", (int(ids[2]),)
        )
    after_expiry = await http.post(
        "/api/v1/dashboard/api-keys", json={"name": "after expiry"}, headers=session
    )
    assert after_expiry.status_code == 200, after_expiry.text
    assert_error(
        await http.post("/api/v1/dashboard/api-keys", json={"name": "full again"}, headers=session),
        400,
        "FAILED_PRECONDITION",
        "TOO_MANY_API_KEYS",
    )


async def test_an_allow_list_is_bounded_and_deduplicated(http: httpx.AsyncClient) -> None:
    session = bearer((await register(http))["token"])
    too_long = await http.post(
        "/api/v1/dashboard/api-keys",
        json={"name": "huge", "allowedIps": [f"10.0.{i // 256}.{i % 256}" for i in range(101)]},
        headers=session,
    )
    error = assert_error(too_long, 400, "INVALID_ARGUMENT")
    [bad_request] = [d for d in error["details"] if "fieldViolations" in d]
    assert [v["field"] for v in bad_request["fieldViolations"]] == ["allowed_ips"]
    listed = ["127.0.0.1", "127.0.0.1/32", " 127.0.0.1 ", "10.0.0.0/8", "10.1.2.3/8"]
    listed += [f"192.0.2.{i}" for i in range(95)]  # 100 entries: the most allowed
    created = await http.post(
        "/api/v1/dashboard/api-keys", json={"name": "office", "allowedIps": listed}, headers=session
    )
    assert created.status_code == 200, created.text
    assert created.json()["apiKey"]["allowedIps"] == ["127.0.0.1/32", "10.0.0.0/8"] + [
        f"192.0.2.{i}/32" for i in range(95)
    ]
    secret = created.json()["secret"]
    for _ in range(2):  # uncached, then from the key cache with its parsed networks
        assert (await http.get("/api/v1/auth/me", headers=bearer(secret))).status_code == 200


@pytest.mark.parametrize("how", ["change", "reset"])
async def test_a_new_password_ends_a_pending_email_change(
    http: httpx.AsyncClient, grpc_server: ServerHandle, how: str
) -> None:
    """Someone holding the password (and a session) asked to move the address to their inbox; the
    owner changes or resets the password to lock them out, but their change link still moved the
    address, and with it every later reset link."""
    email = f"ann-{how}@example.com"
    ann = await register(http, email)
    user_id = ann["user"]["id"]
    asked = await http.post(
        "/api/v1/auth/email/change",
        json={"newEmail": f"thief-{how}@example.com", "password": PASSWORD},
        headers=bearer(ann["token"]),
    )
    assert asked.status_code == 200, asked.text
    change = await account_link(grpc_server, user_id, pb.ACCOUNT_EMAIL_KIND_CHANGE_EMAIL)
    if how == "change":
        done = await http.post(
            "/api/v1/auth/password",
            json={"currentPassword": PASSWORD, "newPassword": "the owner's new password"},
            headers=bearer(ann["token"]),
        )
        token = done.json()["token"]
    else:
        done = await reset(http, await account_link(grpc_server, user_id), "the owner's new password")
        login = {"email": email, "password": "the owner's new password"}
        token = (await http.post("/api/v1/auth/login", json=login)).json()["token"]
    assert done.status_code == 200, done.text
    assert_error(
        await http.post("/api/v1/auth/email/verify", json={"token": change}),
        400,
        "FAILED_PRECONDITION",
        "INVALID_LINK",
    )
    me = (await http.get("/api/v1/auth/me", headers=bearer(token))).json()
    assert (me["email"], me.get("pendingEmail", "")) == (email, "")


async def test_notification_preferences_with_a_number_json_cannot_carry_are_a_field_error(
    http: httpx.AsyncClient,
) -> None:
    """1e999 is valid JSON that no double holds: it became Infinity, which protobuf cannot render
    back into a map, and the call answered 500."""
    token = (await register(http))["token"]
    for body in (
        b'{"notificationPreferences": {"theme": 1e999}}',
        b'{"notificationPreferences": {"x": [-1e400]}}',
    ):
        response = await http.patch(
            "/api/v1/dashboard/profile",
            content=body,
            headers={**bearer(token), "Content-Type": "application/json"},
        )
        error = assert_error(response, 400, "INVALID_ARGUMENT")
        [bad_request] = [d for d in error["details"] if d["@type"].endswith("BadRequest")]
        assert [v["field"] for v in bad_request["fieldViolations"]] == ["profile.notification_preferences"]
    profile = (await http.get("/api/v1/dashboard/profile", headers=bearer(token))).json()
    assert profile["notificationPreferences"] == {}


async def test_an_error_naming_very_long_input_is_still_a_400(http: httpx.AsyncClient) -> None:
    """A field violation repeats what was wrong: a 5,000-character preference key, named in the
    field path, made the error's trailing metadata pass gRPC's 16 KiB limit, and the caller got a
    429 RESOURCE_EXHAUSTED instead of its 400. Fields, descriptions and messages are clipped."""
    token = (await register(http))["token"]
    key = "k" * 5000
    response = await http.patch(
        "/api/v1/dashboard/profile",
        json={"notificationPreferences": {"email": {key: True}}},
        headers=bearer(token),
    )
    error = assert_error(response, 400, "INVALID_ARGUMENT")
    [bad_request] = [d for d in error["details"] if d["@type"].endswith("BadRequest")]
    [violation] = bad_request["fieldViolations"]
    assert violation["field"].startswith("profile.notification_preferences.email.kkk")
    assert violation["field"].endswith("\u2026")
    assert len(violation["field"]) <= 200
    assert len(error["message"]) <= 1000


def test_an_error_with_many_long_violations_stays_within_grpc_metadata() -> None:
    """Hundreds of violations, each long, fit under gRPC's 16 KiB of trailing metadata: the first
    ones are kept whole (clipped), the message still counts them all."""
    violations = [FieldViolation(f"service_ids[{n}]", "d" * 900) for n in range(300)]
    status = to_status(InvalidArgument("300 fields are invalid: " + "x" * 5000, violations=violations))
    assert len(status.SerializeToString()) < 12_000
    [_, packed] = status.details
    bad_request = error_details_pb2.BadRequest()
    packed.Unpack(bad_request)
    assert bad_request.field_violations[0].field == "service_ids[0]"
    assert len(bad_request.field_violations[0].description) == 500
    assert 1 < len(bad_request.field_violations) < 300
    assert status.message.startswith("300 fields are invalid: ")


async def test_an_account_email_of_no_kind_is_refused_whatever_the_account(
    http: httpx.AsyncClient, grpc_server: ServerHandle
) -> None:
    """An email kind no value has was answered "no email change is pending" (send false, OK) for an
    account without a pending change: the caller's mistake passed as a decision about the account."""
    ann = await register(http)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_server.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await pb_grpc.AccountsServiceStub(channel).PrepareAccountEmail(
                pb.PrepareAccountEmailRequest(user_id=int(ann["user"]["id"]), kind=999),  # type: ignore[arg-type]
                metadata=system_metadata("email"),
            )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "kind" in (refused.value.details() or "")


async def test_an_address_with_a_combining_accent_is_the_same_account(http: httpx.AsyncClient) -> None:
    """ "é" typed as one character or as "e" and a combining accent is one mailbox: it was two
    accounts, and the second spelling signed in to neither."""
    composed, decomposed = "ren\u00e9@example.com", "rene\u0301@example.com"
    assert composed != decomposed
    registered = await register(http, decomposed)
    assert registered["user"]["email"] == composed  # stored in NFC
    taken = await http.post("/api/v1/auth/register", json={"email": composed, "password": PASSWORD})
    assert_error(taken, 409, "ALREADY_EXISTS", "EMAIL_TAKEN")
    for spelling in (composed, f"  {decomposed} "):
        login = await http.post("/api/v1/auth/login", json={"email": spelling, "password": PASSWORD})
        assert login.status_code == 200, login.text
        assert login.json()["user"]["id"] == registered["user"]["id"]
