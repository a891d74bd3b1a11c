"""Admin user management through the edge: list/search, detail, update, suspend, reactivate, delete."""

from __future__ import annotations

import httpx
import pytest
from smm.v1 import accounts_service_pb2 as pb

from ops.admin import create_user
from server.common.db import Pool
from server.main import ServerHandle
from tests.integration.test_accounts import PASSWORD, account_link, bearer, register, reset
from tests.integration.test_edge_http import assert_error

pytestmark = pytest.mark.integration


async def admin_token(
    http: httpx.AsyncClient, grpc_server: ServerHandle, settings: object, role: str = "admin"
) -> str:
    email = f"{role}-staff@example.com"
    await create_user(f"127.0.0.1:{grpc_server.port}", settings, email=email, password=PASSWORD, role=role)  # type: ignore[arg-type]
    return str(
        (await http.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})).json()["token"]
    )


async def test_admin_manages_users(
    http: httpx.AsyncClient, grpc_server: ServerHandle, settings: object, pool: Pool
) -> None:
    admin = await admin_token(http, grpc_server, settings)
    ann = await register(http, "ann@example.com")
    await register(http, "bob@example.com")
    ann_id = ann["user"]["id"]
    key = (
        await http.post("/api/v1/dashboard/api-keys", json={"name": "k"}, headers=bearer(ann["token"]))
    ).json()

    found = (await http.get("/api/v1/admin/users", params={"query": "ann@"}, headers=bearer(admin))).json()
    assert [u["email"] for u in found["users"]] == ["ann@example.com"]
    by_role = (await http.get("/api/v1/admin/users", params={"role": "admin"}, headers=bearer(admin))).json()
    assert [u["role"] for u in by_role["users"]] == ["admin"]
    page = (await http.get("/api/v1/admin/users", params={"pageSize": "2"}, headers=bearer(admin))).json()
    rest = (
        await http.get(
            "/api/v1/admin/users",
            params={"pageSize": "2", "pageToken": page["nextPageToken"]},
            headers=bearer(admin),
        )
    ).json()
    assert len(page["users"]) == 2
    assert len(rest["users"]) == 1
    assert (await http.get(f"/api/v1/admin/users/{ann_id}", headers=bearer(admin))).json()[
        "email"
    ] == "ann@example.com"

    updated = await http.patch(
        f"/api/v1/admin/users/{ann_id}",
        json={"discountPercent": "12.5", "name": "Ann B."},
        headers=bearer(admin),
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["discountPercent"] == "12.5"
    assert updated.json()["name"] == "Ann B."
    bad = await http.patch(
        f"/api/v1/admin/users/{ann_id}", json={"discountPercent": "150"}, headers=bearer(admin)
    )
    assert_error(bad, 400, "INVALID_ARGUMENT")

    suspended = await http.post(f"/api/v1/admin/users/{ann_id}/suspend", json={}, headers=bearer(admin))
    assert suspended.json()["status"] == "suspended"
    for credential in (ann["token"], key["secret"]):  # both stop at once
        assert_error(await http.get("/api/v1/auth/me", headers=bearer(credential)), 401, "UNAUTHENTICATED")
    reactivated = await http.post(f"/api/v1/admin/users/{ann_id}/reactivate", json={}, headers=bearer(admin))
    assert reactivated.json()["status"] == "active"
    login = await http.post("/api/v1/auth/login", json={"email": "ann@example.com", "password": PASSWORD})
    assert login.status_code == 200

    deleted = await http.delete(f"/api/v1/admin/users/{ann_id}", headers=bearer(admin))
    assert deleted.json()["status"] == "deleted"
    assert deleted.json()["email"] == f"deleted-{ann_id}@deleted.invalid"
    gone = await http.post("/api/v1/auth/login", json={"email": "ann@example.com", "password": PASSWORD})
    assert_error(gone, 401, "UNAUTHENTICATED", "INVALID_LOGIN")
    assert_error(
        await http.get("/api/v1/admin/users/999999", headers=bearer(admin)),
        404,
        "NOT_FOUND",
        "USER_NOT_FOUND",
    )
    async with pool.connection() as conn:
        actions = [
            r[0]
            for r in await (
                await conn.execute(
                    "SELECT action FROM audit_events WHERE target = %s ORDER BY id", (f"user:{ann_id}",)
                )
            ).fetchall()
        ]
    staff_actions = [a for a in actions if a.startswith("user.")]
    assert staff_actions == ["user.updated", "user.suspended", "user.reactivated", "user.deleted"]


async def test_support_reads_but_cannot_change(
    http: httpx.AsyncClient, grpc_server: ServerHandle, settings: object
) -> None:
    support = await admin_token(http, grpc_server, settings, role="support")
    ann = await register(http)
    assert (await http.get("/api/v1/admin/users", headers=bearer(support))).status_code == 200
    refused = await http.post(
        f"/api/v1/admin/users/{ann['user']['id']}/suspend", json={}, headers=bearer(support)
    )
    assert_error(refused, 403, "PERMISSION_DENIED")
    assert_error(
        await http.get("/api/v1/admin/users", headers=bearer(ann["token"])), 403, "PERMISSION_DENIED"
    )


async def test_user_search_takes_percent_and_underscore_literally(
    http: httpx.AsyncClient, grpc_server: ServerHandle, settings: object
) -> None:
    """``a_n`` once also found ``axn`` and ``%`` every user: LIKE wildcards, not characters."""
    admin = await admin_token(http, grpc_server, settings)
    wanted = (await register(http, "a_n@example.com"))["user"]["id"]
    await register(http, "axn@example.com")

    async def found(query: str) -> list[str]:
        listed = await http.get("/api/v1/admin/users", params={"query": query}, headers=bearer(admin))
        assert listed.status_code == 200, listed.text
        return [u["id"] for u in listed.json()["users"]]

    assert await found("a_n@") == [wanted]
    assert await found("%@example") == []


async def test_an_overlong_admin_set_email_is_a_field_error(
    http: httpx.AsyncClient, grpc_server: ServerHandle, settings: object
) -> None:
    admin = await admin_token(http, grpc_server, settings)
    ann_id = (await register(http, "ann@example.com"))["user"]["id"]
    overlong = await http.patch(
        f"/api/v1/admin/users/{ann_id}", json={"email": "a@" + "b" * 400 + ".com"}, headers=bearer(admin)
    )
    error = assert_error(overlong, 400, "INVALID_ARGUMENT")
    [bad_request] = [d for d in error["details"] if "fieldViolations" in d]
    assert [v["field"] for v in bad_request["fieldViolations"]] == ["user.email"]


async def test_an_admin_set_email_is_stored_trimmed(
    http: httpx.AsyncClient, grpc_server: ServerHandle, settings: object
) -> None:
    admin = await admin_token(http, grpc_server, settings)
    ann_id = (await register(http, "ann@example.com"))["user"]["id"]
    moved = await http.patch(
        f"/api/v1/admin/users/{ann_id}", json={"email": "  ann.new@example.com \t"}, headers=bearer(admin)
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["email"] == "ann.new@example.com"
    login = await http.post("/api/v1/auth/login", json={"email": "ann.new@example.com", "password": PASSWORD})
    assert login.status_code == 200, login.text


async def test_staff_changes_void_unused_reset_links(
    http: httpx.AsyncClient, grpc_server: ServerHandle, settings: object
) -> None:
    admin = await admin_token(http, grpc_server, settings)
    ann_id = (await register(http, "ann@example.com"))["user"]["id"]
    # Away to another address and back: the link's address is the account's again, so only
    # voiding it at the change stops it.
    link = await account_link(grpc_server, ann_id)
    for email in ("ann.new@example.com", "ann@example.com"):
        moved = await http.patch(
            f"/api/v1/admin/users/{ann_id}", json={"email": email}, headers=bearer(admin)
        )
        assert moved.status_code == 200, moved.text
    assert_error(await reset(http, link), 400, "FAILED_PRECONDITION", "INVALID_LINK")
    # A suspension: the link must not come back to life with a reactivation.
    link = await account_link(grpc_server, ann_id)
    for action in ("suspend", "reactivate"):
        changed = await http.post(f"/api/v1/admin/users/{ann_id}/{action}", json={}, headers=bearer(admin))
        assert changed.status_code == 200, changed.text
    assert_error(await reset(http, link), 400, "FAILED_PRECONDITION", "INVALID_LINK")


async def test_an_address_staff_set_ends_the_users_own_pending_change(
    http: httpx.AsyncClient, grpc_server: ServerHandle, settings: object
) -> None:
    """The user's earlier change link, confirmed after staff set the address, overwrote it."""
    admin = await admin_token(http, grpc_server, settings)
    ann = await register(http, "ann@example.com")
    asked = await http.post(
        "/api/v1/auth/email/change",
        json={"newEmail": "ann.wanted@example.com", "password": PASSWORD},
        headers=bearer(ann["token"]),
    )
    assert asked.status_code == 200, asked.text
    change = await account_link(grpc_server, ann["user"]["id"], pb.ACCOUNT_EMAIL_KIND_CHANGE_EMAIL)
    moved = await http.patch(
        f"/api/v1/admin/users/{ann['user']['id']}",
        json={"email": "ann.staff@example.com"},
        headers=bearer(admin),
    )
    assert moved.status_code == 200, moved.text
    assert_error(
        await http.post("/api/v1/auth/email/verify", json={"token": change}),
        400,
        "FAILED_PRECONDITION",
        "INVALID_LINK",
    )
    me = (await http.get("/api/v1/auth/me", headers=bearer(ann["token"]))).json()
    assert (me["email"], me.get("pendingEmail", "")) == ("ann.staff@example.com", "")


async def test_a_suspension_ends_the_users_pending_email_change(
    http: httpx.AsyncClient, grpc_server: ServerHandle, settings: object
) -> None:
    """A change link mailed before a suspension came back to life with the reactivation: whoever
    asked for it (a thief with the password, the reason for the suspension) took the address."""
    admin = await admin_token(http, grpc_server, settings)
    ann = await register(http, "ann@example.com")
    ann_id = ann["user"]["id"]
    asked = await http.post(
        "/api/v1/auth/email/change",
        json={"newEmail": "thief@example.com", "password": PASSWORD},
        headers=bearer(ann["token"]),
    )
    assert asked.status_code == 200, asked.text
    change = await account_link(grpc_server, ann_id, pb.ACCOUNT_EMAIL_KIND_CHANGE_EMAIL)
    for action in ("suspend", "reactivate"):
        changed = await http.post(f"/api/v1/admin/users/{ann_id}/{action}", json={}, headers=bearer(admin))
        assert changed.status_code == 200, changed.text
    assert changed.json()["email"] == "ann@example.com"
    assert changed.json().get("pendingEmail", "") == ""
    assert_error(
        await http.post("/api/v1/auth/email/verify", json={"token": change}),
        400,
        "FAILED_PRECONDITION",
        "INVALID_LINK",
    )
    user = (await http.get(f"/api/v1/admin/users/{ann_id}", headers=bearer(admin))).json()
    assert (user["email"], user.get("pendingEmail", "")) == ("ann@example.com", "")


async def test_no_address_can_stand_in_the_way_of_deleting_an_account(
    http: httpx.AsyncClient, grpc_server: ServerHandle, settings: object
) -> None:
    """Deleting anonymises the address to deleted-<id>@deleted.invalid; anyone could register that
    address first and so make the account impossible to delete (409 EMAIL_TAKEN)."""
    admin = await admin_token(http, grpc_server, settings)
    ann_id = (await register(http, "ann@example.com"))["user"]["id"]
    squatter = await http.post(
        "/api/v1/auth/register",
        json={"email": f"deleted-{ann_id}@Deleted.Invalid", "password": PASSWORD},
    )
    deleted = await http.delete(f"/api/v1/admin/users/{ann_id}", headers=bearer(admin))
    assert deleted.status_code == 200, deleted.text
    assert (deleted.json()["email"], deleted.json()["status"]) == (
        f"deleted-{ann_id}@deleted.invalid",
        "deleted",
    )
    assert_error(squatter, 400, "INVALID_ARGUMENT")
    # Nor can a living account be moved there, by its owner or by staff.
    bob = await register(http, "bob@example.com")
    moved = await http.post(
        "/api/v1/auth/email/change",
        json={"newEmail": "someone@deleted.invalid", "password": PASSWORD},
        headers=bearer(bob["token"]),
    )
    assert_error(moved, 400, "INVALID_ARGUMENT")
    staff_set = await http.patch(
        f"/api/v1/admin/users/{bob['user']['id']}",
        json={"email": "someone@deleted.invalid"},
        headers=bearer(admin),
    )
    assert_error(staff_set, 400, "INVALID_ARGUMENT")
