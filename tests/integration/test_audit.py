"""The audit trail: security events recorded in their transaction, listed for staff, append-only."""

from __future__ import annotations

import httpx
import psycopg
import pytest

from ops.admin import create_user
from server.common.db import Pool
from server.main import ServerHandle
from tests.integration.test_accounts import PASSWORD, bearer, register
from tests.integration.test_edge_http import assert_error

pytestmark = pytest.mark.integration


async def test_security_events_are_audited_and_listed_for_staff(
    http: httpx.AsyncClient, grpc_server: ServerHandle, settings: object, pool: Pool
) -> None:
    target = f"127.0.0.1:{grpc_server.port}"
    await create_user(target, settings, email="boss@example.com", password=PASSWORD, role="admin")  # type: ignore[arg-type]
    admin = (
        await http.post("/api/v1/auth/login", json={"email": "boss@example.com", "password": PASSWORD})
    ).json()
    user = (await register(http))["token"]
    await http.post("/api/v1/auth/login", json={"email": "ann@example.com", "password": "wrong password!"})
    key = (await http.post("/api/v1/dashboard/api-keys", json={"name": "k"}, headers=bearer(user))).json()
    await http.post(f"/api/v1/dashboard/api-keys/{key['apiKey']['id']}/rotate", json={}, headers=bearer(user))

    listed = await http.get("/api/v1/admin/audit", headers=bearer(admin["token"]))
    assert listed.status_code == 200, listed.text
    events = listed.json()["events"]
    actions = [e["action"] for e in events]
    assert actions[:4] == ["api_key.rotated", "api_key.created", "auth.login_failed", "auth.register"]
    assert {"user.created", "auth.login"} <= set(actions)
    failed = next(e for e in events if e["action"] == "auth.login_failed")
    assert failed["target"] == "email:ann@example.com"
    assert failed["clientIp"] == "127.0.0.1"
    assert failed["requestId"]
    assert key["secret"] not in listed.text  # secrets never reach the trail
    rotated = next(e for e in events if e["action"] == "api_key.rotated")
    assert rotated["before"]["prefix"] != rotated["after"]["prefix"]

    only_failures = await http.get(
        "/api/v1/admin/audit", params={"action": "auth.login_failed"}, headers=bearer(admin["token"])
    )
    assert [e["action"] for e in only_failures.json()["events"]] == ["auth.login_failed"]
    page = await http.get("/api/v1/admin/audit", params={"pageSize": "2"}, headers=bearer(admin["token"]))
    second = await http.get(
        "/api/v1/admin/audit",
        params={"pageSize": "2", "pageToken": page.json()["nextPageToken"]},
        headers=bearer(admin["token"]),
    )
    assert [e["id"] for e in second.json()["events"]] == [e["id"] for e in events[2:4]]

    assert_error(await http.get("/api/v1/admin/audit", headers=bearer(user)), 403, "PERMISSION_DENIED")
    async with pool.connection() as conn:
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            await conn.execute("UPDATE audit_events SET actor = 'someone else'")
