"""Every route, called as anonymous, user, support and admin: the status follows RPC_ROLES.

Generated from the compiled route table, so a new route cannot be forgotten. Signed-in callers
use API keys (a session would be revoked by the logout route mid-matrix)."""

from __future__ import annotations

import re

import grpc
import httpx
import pytest

from edge.routes import compile_routes
from ops.admin import create_user
from server.common.auth import Role, allowed_roles
from server.main import ServerHandle
from tests.fix_grpc import INTERNAL_TOKEN
from tests.integration.test_edge_http import assert_error

pytestmark = pytest.mark.integration
ROLES = (Role.ANONYMOUS, Role.USER, Role.SUPPORT, Role.ADMIN)


async def key_for(http: httpx.AsyncClient, email: str) -> str:
    login = await http.post("/api/v1/auth/login", json={"email": email, "password": "a long password"})
    token = login.json()["token"]
    created = await http.post(
        "/api/v1/dashboard/api-keys", json={"name": "matrix"}, headers={"Authorization": f"Bearer {token}"}
    )
    return str(created.json()["secret"])


async def test_every_route_answers_each_role_as_the_role_table_says(
    http: httpx.AsyncClient, grpc_server: ServerHandle, settings: object
) -> None:
    target = f"127.0.0.1:{grpc_server.port}"
    credentials: dict[Role, str] = {}
    for role in (Role.USER, Role.SUPPORT, Role.ADMIN):
        email = f"{role.value}@example.com"
        await create_user(target, settings, email=email, password="a long password", role=role.value)  # type: ignore[arg-type]
        credentials[role] = await key_for(http, email)
    checked = 0
    for route in compile_routes():
        path = re.sub(r"\{[^}]+\}", "999999", route.template)  # ids no caller owns
        allowed = allowed_roles(route.rpc)
        for role in ROLES:
            headers = {"Authorization": f"Bearer {credentials[role]}"} if role in credentials else {}
            body = {} if route.body else None
            response = await http.request(route.http_method, path, json=body, headers=headers)
            if role in allowed:
                # The role check lets it through; the RPC itself may still refuse the dummy input.
                assert response.status_code < 500, (route.rpc, role, response.text)
                reasons = {d.get("reason") for d in response.json().get("error", {}).get("details", [])}
                assert not reasons & {"SIGN_IN_REQUIRED", "PERMISSION_DENIED"}, (
                    route.rpc,
                    role,
                    response.text,
                )
            elif role == Role.ANONYMOUS:
                assert_error(response, 401, "UNAUTHENTICATED", "SIGN_IN_REQUIRED")
            else:
                assert_error(response, 403, "PERMISSION_DENIED")
            checked += 1
    assert checked == len(ROLES) * len(compile_routes())


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
