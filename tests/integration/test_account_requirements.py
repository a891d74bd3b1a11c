"""Operator requirements: a verified address (SMM_REQUIRE_EMAIL_VERIFICATION) and two-factor
sign-in for staff (SMM_REQUIRE_STAFF_TOTP). Both are off by default; here both are on."""

from __future__ import annotations

from pathlib import Path

import httpx
import pyotp
import pytest

from core.config import Settings
from server.main import ServerHandle
from tests.fix_db import make_settings
from tests.fix_nats import running_worker
from tests.integration.test_accounts import PASSWORD, bearer, register
from tests.integration.test_admin_users import admin_token
from tests.integration.test_edge_http import assert_error
from tests.mailbox import wait_for_mail

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(db_url: str, nats_url: str, namespace: str, tmp_path: Path) -> Settings:
    return make_settings(
        db_url,
        nats_url=nats_url,
        nats_namespace=namespace,
        relay_poll_s=0.2,
        require_email_verification=True,
        require_staff_totp=True,
        mail_dir=str(tmp_path / "mail"),
    )


async def test_an_unverified_user_can_sign_in_but_do_nothing_else_until_verified(
    http: httpx.AsyncClient, worker_settings: Settings
) -> None:
    body = await register(http, "ann@example.com")
    headers = bearer(body["token"])
    assert (await http.get("/api/v1/auth/me", headers=headers)).status_code == 200
    assert (await http.get("/api/v1/dashboard/profile", headers=headers)).status_code == 200
    refused = await http.post("/api/v1/dashboard/api-keys", json={"name": "bot"}, headers=headers)
    error = assert_error(refused, 400, "FAILED_PRECONDITION", "EMAIL_NOT_VERIFIED")
    assert "confirm your email" in error["message"]
    # The public catalog stays open to everyone.
    assert (await http.get("/api/v1/public/services", headers=headers)).status_code == 200

    async with running_worker(worker_settings, "email"):
        [mail] = await wait_for_mail(Path(worker_settings.mail_path), "ann@example.com")
    assert (await http.post("/api/v1/auth/email/verify", json={"token": mail.token})).status_code == 200
    created = await http.post("/api/v1/dashboard/api-keys", json={"name": "bot"}, headers=headers)
    assert created.status_code == 200, created.text


async def test_staff_must_turn_on_two_factor_first(
    http: httpx.AsyncClient, grpc_server: ServerHandle, settings: Settings
) -> None:
    headers = bearer(await admin_token(http, grpc_server, settings))
    refused = await http.get("/api/v1/admin/users", headers=headers)
    assert_error(refused, 400, "FAILED_PRECONDITION", "TOTP_SETUP_REQUIRED")
    setup = await http.post("/api/v1/auth/totp/setup", json={}, headers=headers)
    otp = pyotp.TOTP(setup.json()["secret"])
    enabled = await http.post(
        "/api/v1/auth/totp/enable", json={"password": PASSWORD, "code": otp.now()}, headers=headers
    )
    assert enabled.status_code == 200, enabled.text
    # Checked on every call: the same session works as soon as two-factor is on.
    assert (await http.get("/api/v1/admin/users", headers=headers)).status_code == 200


async def test_users_made_by_staff_start_verified_and_need_no_two_factor(
    http: httpx.AsyncClient, grpc_server: ServerHandle, settings: Settings
) -> None:
    token = await admin_token(http, grpc_server, settings, role="user")
    me = await http.get("/api/v1/auth/me", headers=bearer(token))
    assert me.json()["emailVerified"] is True
    created = await http.post("/api/v1/dashboard/api-keys", json={"name": "bot"}, headers=bearer(token))
    assert created.status_code == 200, created.text
