"""Two-factor sign-in: setup, enable with recovery codes, login with codes, replay refused,
recovery codes single-use, disable; a wrong code counts as an authentication failure."""

from __future__ import annotations

import time

import httpx
import pyotp
import pytest

from server.common.db import Pool
from tests.integration.test_accounts import PASSWORD, register
from tests.integration.test_edge_http import assert_error

pytestmark = pytest.mark.integration


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def enable_two_factor(
    http: httpx.AsyncClient, token: str, *, try_a_wrong_code: bool = True
) -> tuple[pyotp.TOTP, list[str]]:
    setup = await http.post("/api/v1/auth/totp/setup", json={}, headers=bearer(token))
    assert setup.status_code == 200, setup.text
    secret = setup.json()["secret"]
    assert setup.json()["otpauthUri"].startswith("otpauth://totp/")
    otp = pyotp.TOTP(secret)
    if not try_a_wrong_code:  # each try spends the account's login budget (the password is checked)
        enabled = await http.post(
            "/api/v1/auth/totp/enable", json={"password": PASSWORD, "code": otp.now()}, headers=bearer(token)
        )
        assert enabled.status_code == 200, enabled.text
        return otp, enabled.json()["recoveryCodes"]
    wrong = await http.post(
        "/api/v1/auth/totp/enable", json={"password": PASSWORD, "code": "000000"}, headers=bearer(token)
    )
    if otp.now() != "000000":
        assert_error(wrong, 400, "INVALID_ARGUMENT")
    enabled = await http.post(
        "/api/v1/auth/totp/enable", json={"password": PASSWORD, "code": otp.now()}, headers=bearer(token)
    )
    assert enabled.status_code == 200, enabled.text
    codes = enabled.json()["recoveryCodes"]
    return otp, codes


def next_code(otp: pyotp.TOTP) -> str:
    # The code of the next 30-second step: accepted (one step of drift) and newer than the last used.
    return otp.at(time.time() + 30)


async def login(http: httpx.AsyncClient, totp: str | None = None) -> httpx.Response:
    body = {"email": "ann@example.com", "password": PASSWORD}
    if totp is not None:
        body["totp"] = totp
    return await http.post("/api/v1/auth/login", json=body)


async def test_two_factor_login_with_codes_and_recovery_codes(http: httpx.AsyncClient, pool: Pool) -> None:
    token = (await register(http))["token"]
    otp, codes = await enable_two_factor(http, token)
    assert len(codes) == 10
    assert len(set(codes)) == 10
    me = await http.get("/api/v1/auth/me", headers=bearer(token))
    assert me.json()["twoFactorEnabled"] is True

    assert_error(await login(http), 401, "UNAUTHENTICATED", "TOTP_REQUIRED")
    wrong = "123456" if next_code(otp) != "123456" else "654321"
    assert_error(await login(http, wrong), 401, "UNAUTHENTICATED", "INVALID_TOTP")
    code = next_code(otp)
    ok = await login(http, code)
    assert ok.status_code == 200, ok.text
    # The same code again (overheard or replayed) is refused.
    assert_error(await login(http, code), 401, "UNAUTHENTICATED", "INVALID_TOTP")

    recovered = await login(http, codes[0].upper())  # case and dashes do not matter
    assert recovered.status_code == 200, recovered.text
    assert_error(await login(http, codes[0]), 401, "UNAUTHENTICATED", "INVALID_TOTP")

    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT totp_secret FROM users WHERE email = 'ann@example.com'")
        [(stored,)] = await cursor.fetchall()
    assert stored.startswith("test1:")
    assert otp.secret not in stored


async def test_setup_twice_and_enable_without_setup_are_refused(http: httpx.AsyncClient) -> None:
    token = (await register(http))["token"]
    early = await http.post(
        "/api/v1/auth/totp/enable", json={"password": PASSWORD, "code": "123456"}, headers=bearer(token)
    )
    assert_error(early, 400, "FAILED_PRECONDITION", "TOTP_NOT_SET_UP")
    await enable_two_factor(http, token)
    again = await http.post("/api/v1/auth/totp/setup", json={}, headers=bearer(token))
    assert_error(again, 400, "FAILED_PRECONDITION", "TOTP_ALREADY_ENABLED")


async def test_regenerating_recovery_codes_voids_the_old_ones(http: httpx.AsyncClient) -> None:
    token = (await register(http))["token"]
    otp, old_codes = await enable_two_factor(http, token)
    regenerated = await http.post(
        "/api/v1/auth/totp/recovery-codes", json={"code": next_code(otp)}, headers=bearer(token)
    )
    assert regenerated.status_code == 200, regenerated.text
    new_codes = regenerated.json()["recoveryCodes"]
    assert not set(new_codes) & set(old_codes)
    assert_error(await login(http, old_codes[1]), 401, "UNAUTHENTICATED", "INVALID_TOTP")
    assert (await login(http, new_codes[1])).status_code == 200


async def test_disable_needs_the_password_and_a_code(http: httpx.AsyncClient) -> None:
    token = (await register(http))["token"]
    _otp, codes = await enable_two_factor(http, token)
    no_password = await http.post(
        "/api/v1/auth/totp/disable",
        json={"password": "wrong password!", "code": codes[0]},
        headers=bearer(token),
    )
    assert_error(no_password, 400, "FAILED_PRECONDITION", "WRONG_PASSWORD")
    bad_code = await http.post(
        "/api/v1/auth/totp/disable", json={"password": PASSWORD, "code": "not-a-code"}, headers=bearer(token)
    )
    assert_error(bad_code, 400, "INVALID_ARGUMENT")
    off = await http.post(
        "/api/v1/auth/totp/disable", json={"password": PASSWORD, "code": codes[0]}, headers=bearer(token)
    )
    assert off.status_code == 200, off.text
    assert (await login(http)).status_code == 200  # no code needed any more
    me = await http.get("/api/v1/auth/me", headers=bearer(token))
    assert me.json()["twoFactorEnabled"] is False
    twice = await http.post(
        "/api/v1/auth/totp/disable", json={"password": PASSWORD, "code": codes[1]}, headers=bearer(token)
    )
    assert_error(twice, 400, "FAILED_PRECONDITION", "TOTP_NOT_ENABLED")


async def test_wrong_codes_are_audited_as_login_failures(http: httpx.AsyncClient, pool: Pool) -> None:
    token = (await register(http))["token"]
    otp, _ = await enable_two_factor(http, token)
    wrong = "111111" if next_code(otp) != "111111" else "222222"
    assert_error(await login(http, wrong), 401, "UNAUTHENTICATED", "INVALID_TOTP")
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT after ->> 'reason' FROM audit_events WHERE action = 'auth.login_failed'"
        )
        reasons = [row[0] for row in await cursor.fetchall()]
    assert reasons == ["wrong two-factor code"]


async def test_a_code_that_is_not_six_ascii_digits_is_a_field_error(http: httpx.AsyncClient) -> None:
    token = (await register(http))["token"]
    setup = await http.post("/api/v1/auth/totp/setup", json={}, headers=bearer(token))
    assert setup.status_code == 200, setup.text
    # Non-ASCII text, and digits of another script (str.isdigit() says yes to both of the last).
    for code in (
        "12345\u00e9",
        "\uff11\uff12\uff13\uff14\uff15\uff16",
        "\u0661\u0662\u0663\u0664\u0665\u0666",
    ):
        enable = await http.post(
            "/api/v1/auth/totp/enable", json={"password": PASSWORD, "code": code}, headers=bearer(token)
        )
        error = assert_error(enable, 400, "INVALID_ARGUMENT")
        assert error["details"][0]["metadata"] == {"field": "code", "fields": "code"}, error
    otp = pyotp.TOTP(setup.json()["secret"])
    enabled = await http.post(
        "/api/v1/auth/totp/enable", json={"password": PASSWORD, "code": otp.now()}, headers=bearer(token)
    )
    assert enabled.status_code == 200, enabled.text
    # Once on, such a code is neither a current code nor a recovery code, wherever it is sent.
    for path, body in (
        ("/api/v1/auth/totp/recovery-codes", {"code": "\uff11\uff12\uff13\uff14\uff15\uff16"}),
        ("/api/v1/auth/totp/disable", {"password": PASSWORD, "code": "12345\u00e9"}),
    ):
        assert_error(await http.post(path, json=body, headers=bearer(token)), 400, "INVALID_ARGUMENT")
    signed_in = await login(http, "\uff11\uff12\uff13\uff14\uff15\uff16")
    assert_error(signed_in, 401, "UNAUTHENTICATED", "INVALID_TOTP")


async def test_a_wrong_password_to_turn_two_factor_off_is_audited(
    http: httpx.AsyncClient, pool: Pool
) -> None:
    ann = await register(http)
    _otp, codes = await enable_two_factor(http, ann["token"])
    wrong = await http.post(
        "/api/v1/auth/totp/disable",
        json={"password": "wrong password!", "code": codes[0]},
        headers=bearer(ann["token"]),
    )
    assert_error(wrong, 400, "FAILED_PRECONDITION", "WRONG_PASSWORD")
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT actor, target, after FROM audit_events WHERE action = 'auth.password_check_failed'"
        )
        rows = await cursor.fetchall()
    who = f"user:{ann['user']['id']}"
    assert rows == [(who, who, {"reason": "wrong password", "field": "password"})]


async def test_turning_two_factor_on_needs_the_password(http: httpx.AsyncClient) -> None:
    """Turning it off needed the password, turning it on only a session: someone holding a stolen
    session put their own authenticator on the account, and its owner could no longer sign in."""
    token = (await register(http))["token"]
    setup = await http.post("/api/v1/auth/totp/setup", json={}, headers=bearer(token))
    otp = pyotp.TOTP(setup.json()["secret"])
    for body in ({"code": otp.now()}, {"password": "not-the-password", "code": otp.now()}):
        refused = await http.post("/api/v1/auth/totp/enable", json=body, headers=bearer(token))
        error = assert_error(refused, 400, "FAILED_PRECONDITION", "WRONG_PASSWORD")
        assert error["details"][0]["metadata"] == {"field": "password"}, error
    me = (await http.get("/api/v1/auth/me", headers=bearer(token))).json()
    assert me["twoFactorEnabled"] is False
    assert (await login(http)).status_code == 200  # no code asked for

    enabled = await http.post(
        "/api/v1/auth/totp/enable", json={"password": PASSWORD, "code": otp.now()}, headers=bearer(token)
    )
    assert enabled.status_code == 200, enabled.text
    assert len(enabled.json()["recoveryCodes"]) > 0
