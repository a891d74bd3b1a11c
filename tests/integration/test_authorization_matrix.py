"""Every route, called as anonymous, user, support and admin: the status follows RPC_ROLES.

Generated from the compiled route table, so a new route cannot be forgotten. Signed-in callers
use API keys, and sessions for the routes keys may not call (API_KEY_REFUSED, and every staff-only
route: a key acts as a customer whatever its owner's role); the logout route ends its session, so
the caller signs in again after it."""

from __future__ import annotations

import re

import grpc
import httpx
import pytest

from edge.routes import compile_routes
from ops.admin import create_user
from server.common.auth import API_KEY_REFUSED, Role, allowed_roles
from server.main import ServerHandle
from tests.fix_grpc import INTERNAL_TOKEN
from tests.integration.test_edge_http import assert_error

pytestmark = pytest.mark.integration
ROLES = (Role.ANONYMOUS, Role.USER, Role.SUPPORT, Role.ADMIN)


async def session_for(http: httpx.AsyncClient, email: str) -> str:
    login = await http.post("/api/v1/auth/login", json={"email": email, "password": "a long password"})
    assert login.status_code == 200, login.text
    return str(login.json()["token"])


async def key_for(http: httpx.AsyncClient, email: str) -> str:
    token = await session_for(http, email)
    created = await http.post(
        "/api/v1/dashboard/api-keys", json={"name": "matrix"}, headers={"Authorization": f"Bearer {token}"}
    )
    return str(created.json()["secret"])


def assert_let_through(response: httpx.Response, rpc: str, caller: object) -> None:
    # The role check lets it through; the RPC itself may still refuse the dummy input.
    assert response.status_code < 500, (rpc, caller, response.text)
    reasons = {d.get("reason") for d in response.json().get("error", {}).get("details", [])}
    assert not reasons & {"SIGN_IN_REQUIRED", "PERMISSION_DENIED", "API_KEY_NOT_ALLOWED"}, (
        rpc,
        caller,
        response.text,
    )


async def test_every_route_answers_each_role_as_the_role_table_says(
    http: httpx.AsyncClient, grpc_server: ServerHandle, settings: object
) -> None:
    target = f"127.0.0.1:{grpc_server.port}"
    keys: dict[Role, str] = {}
    sessions: dict[Role, str] = {}
    for role in (Role.USER, Role.SUPPORT, Role.ADMIN):
        email = f"{role.value}@example.com"
        await create_user(target, settings, email=email, password="a long password", role=role.value)  # type: ignore[arg-type]
        keys[role] = await key_for(http, email)
        sessions[role] = await session_for(http, email)
    checked = 0
    for route in compile_routes():
        path = re.sub(r"\{[^}]+\}", "999999", route.template)  # ids no caller owns
        allowed = allowed_roles(route.rpc)
        body = {} if route.body else None
        for role in ROLES:
            headers = {"Authorization": f"Bearer {keys[role]}"} if role in keys else {}
            response = await http.request(route.http_method, path, json=body, headers=headers)
            # A key acts as a customer: staff-only routes take the staff member's session.
            key_refused = route.rpc in API_KEY_REFUSED or Role.USER not in allowed
            if role in allowed and key_refused:
                assert_error(response, 403, "PERMISSION_DENIED", "API_KEY_NOT_ALLOWED")
                by_session = await http.request(
                    route.http_method, path, json=body, headers={"Authorization": f"Bearer {sessions[role]}"}
                )
                assert_let_through(by_session, route.rpc, (role, "session"))
                if route.rpc.endswith("/Logout"):
                    sessions[role] = await session_for(http, f"{role.value}@example.com")
            elif role in allowed:
                assert_let_through(response, route.rpc, role)
            elif role == Role.ANONYMOUS:
                assert_error(response, 401, "UNAUTHENTICATED", "SIGN_IN_REQUIRED")
            else:
                assert_error(response, 403, "PERMISSION_DENIED")
            checked += 1
    assert checked == len(ROLES) * len(compile_routes())


async def test_an_api_key_cannot_manage_its_account_but_keeps_the_api(http: httpx.AsyncClient) -> None:
    """A reseller key handed to another panel: it orders and reads, but cannot mint keys (without
    an allow-list), end its owner's sessions, lock the owner out with two-factor sign-in, or take
    the password, address or phone over."""
    ann = await http.post(
        "/api/v1/auth/register",
        json={"email": "ann@example.com", "password": "a long password", "name": "Ann"},
    )
    session = {"Authorization": f"Bearer {ann.json()['token']}"}
    created = await http.post("/api/v1/dashboard/api-keys", json={"name": "partner panel"}, headers=session)
    key_id = created.json()["apiKey"]["id"]
    key = {"Authorization": f"Bearer {created.json()['secret']}"}
    refused = [
        ("POST", "/api/v1/dashboard/api-keys", {"name": "mine now"}),
        ("GET", "/api/v1/dashboard/api-keys", None),
        ("POST", f"/api/v1/dashboard/api-keys/{key_id}/rotate", {}),
        ("DELETE", f"/api/v1/dashboard/api-keys/{key_id}", None),
        ("GET", f"/api/v1/dashboard/api-keys/{key_id}/usage", None),
        ("GET", "/api/v1/dashboard/sessions", None),
        ("DELETE", "/api/v1/dashboard/sessions/1", None),
        ("POST", "/api/v1/auth/logout", {}),
        (
            "POST",
            "/api/v1/auth/password",
            {"currentPassword": "a long password", "newPassword": "taken over now"},
        ),
        (
            "POST",
            "/api/v1/auth/email/change",
            {"newEmail": "thief@example.com", "password": "a long password"},
        ),
        ("POST", "/api/v1/auth/email/verification", {}),
        ("POST", "/api/v1/auth/totp/setup", {}),
        ("POST", "/api/v1/auth/totp/enable", {"code": "123456"}),
        ("POST", "/api/v1/auth/totp/disable", {"password": "a long password", "code": "123456"}),
        ("POST", "/api/v1/auth/totp/recovery-codes", {"code": "123456"}),
        ("PATCH", "/api/v1/dashboard/profile", {"name": "Mallory"}),
        ("POST", "/api/v1/dashboard/profile/phone", {"phone": "+15551234567"}),
        ("POST", "/api/v1/dashboard/profile/phone/verify", {"code": "123456"}),
        ("DELETE", "/api/v1/dashboard/profile/phone", None),
    ]
    for method, path, body in refused:
        response = await http.request(method, path, json=body, headers=key)
        error = assert_error(response, 403, "PERMISSION_DENIED", "API_KEY_NOT_ALLOWED")
        assert "session" in error["message"], error
    # Nothing happened: one key, the owner's session alive, no two-factor, same profile.
    listed = (await http.get("/api/v1/dashboard/api-keys", headers=session)).json()
    assert [k["id"] for k in listed["apiKeys"]] == [key_id]
    assert (await http.get("/api/v1/dashboard/sessions", headers=session)).status_code == 200
    profile = await http.get("/api/v1/dashboard/profile", headers=key)
    assert profile.status_code == 200, profile.text
    assert profile.json()["name"] == "Ann"
    # What an API client needs still works with the key.
    for path in (
        "/api/v1/auth/me",
        "/api/v1/dashboard/wallet",
        "/api/v1/dashboard/wallet/transactions",
        "/api/v1/dashboard/orders",
        "/api/v1/dashboard/orders/stats",
        "/api/v1/public/services",
    ):
        response = await http.get(path, headers=key)
        assert response.status_code == 200, (path, response.text)
    reseller = await http.post(
        "/api/v1/reseller", data={"key": created.json()["secret"], "action": "balance"}
    )
    assert "balance" in reseller.json(), reseller.text
    # The owner, signed in, still manages the account.
    assert (
        await http.post("/api/v1/dashboard/api-keys", json={"name": "second"}, headers=session)
    ).status_code == 200


async def test_a_staff_members_api_key_acts_as_a_customer(
    http: httpx.AsyncClient, grpc_server: ServerHandle, settings: object
) -> None:
    """A staff key reached every staff tool (balance adjustments included) without the second
    factor staff sign-in may require; keys now act as customers, and staff tools take a session."""
    target = f"127.0.0.1:{grpc_server.port}"
    await create_user(target, settings, email="boss@example.com", password="a long password", role="admin")  # type: ignore[arg-type]
    customer = await create_user(
        target, settings, email="cat@example.com", password="a long password", role="user"
    )  # type: ignore[arg-type]
    admin_key = {"Authorization": f"Bearer {await key_for(http, 'boss@example.com')}"}
    admin_session = {"Authorization": f"Bearer {await session_for(http, 'boss@example.com')}"}
    user_key = {"Authorization": f"Bearer {await key_for(http, 'cat@example.com')}"}
    adjustment = {"amount": "5.00", "reason": "goodwill"}
    route = f"/api/v1/admin/users/{customer}/balance-adjustments"

    by_key = await http.post(route, json=adjustment, headers=admin_key)
    error = assert_error(by_key, 403, "PERMISSION_DENIED", "API_KEY_NOT_ALLOWED")
    assert "session" in error["message"]
    assert_error(
        await http.get("/api/v1/admin/users", headers=admin_key),
        403,
        "PERMISSION_DENIED",
        "API_KEY_NOT_ALLOWED",
    )
    # A customer's key on a staff route: plainly not their role (no hint at a session).
    refused = assert_error(
        await http.post(route, json=adjustment, headers=user_key), 403, "PERMISSION_DENIED"
    )
    assert "API_KEY_NOT_ALLOWED" not in str(refused)
    wallet = await http.get("/api/v1/dashboard/wallet", headers=user_key)
    assert wallet.json()["available"] in ("0", "0.00"), wallet.text  # nothing was adjusted
    # The admin's key still serves the admin's own customer side; the session the staff tools.
    assert (await http.get("/api/v1/dashboard/wallet", headers=admin_key)).status_code == 200
    by_session = await http.post(route, json=adjustment, headers=admin_session)
    assert by_session.status_code == 200, by_session.text
    assert (await http.get("/api/v1/dashboard/wallet", headers=user_key)).json()["available"] == "5.00"


async def test_internal_tools_create_users_through_grpc(grpc_server: ServerHandle, settings: object) -> None:
    target = f"127.0.0.1:{grpc_server.port}"
    user_id = await create_user(
        target, settings, email="ops@example.com", password="a long password", role="support"
    )  # type: ignore[arg-type]
    assert user_id > 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create_user(target, settings, email="x@example.com", password="a long password", role="root")  # type: ignore[arg-type]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Without the internal token nobody gets in, whatever they claim to be.
    async with grpc.aio.insecure_channel(target) as channel:
        from smm.v1 import accounts_service_pb2 as pb
        from smm.v1 import accounts_service_pb2_grpc as pb_grpc

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pb_grpc.AccountsServiceStub(channel).CreateUser(
                pb.CreateUserRequest(email="y@example.com", password="a long password", role="admin"),
                metadata=(("x-smm-actor", "system:evil"), ("x-smm-internal-token", INTERNAL_TOKEN + "x")),
            )
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_seed_admin_once(grpc_server: ServerHandle, settings: object, http: httpx.AsyncClient) -> None:
    from ops.admin import SEED_ADMIN_EMAIL, seed_admin

    target = f"127.0.0.1:{grpc_server.port}"
    password = await seed_admin(target, settings)  # type: ignore[arg-type]
    assert password
    assert await seed_admin(target, settings) is None  # type: ignore[arg-type]
    login = await http.post("/api/v1/auth/login", json={"email": SEED_ADMIN_EMAIL, "password": password})
    assert login.json()["user"]["role"] == "admin"
