"""No secret appears in logs, events, the outbox, the audit trail or any later response.

One run through every flow that handles a secret (password, session token, API key, reset and
verification links, TOTP seed and recovery codes, the phone verification code), then a search for
each secret everywhere it must not be."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import httpx
import pyotp
import pytest

from core.config import Settings
from core.events import STREAMS, Namespace, connect
from server.common.db import Pool
from tests.fix_nats import running_worker
from tests.integration.test_accounts import PASSWORD, bearer, register
from tests.mailbox import wait_for_mail, wait_for_subject

pytestmark = pytest.mark.integration


async def stream_payloads(settings: Settings) -> list[bytes]:
    nc = await connect(settings.nats_url, name="tests-leaks")
    js = nc.jetstream()
    ns = Namespace(settings.nats_namespace)
    found: list[bytes] = []
    try:
        for stream in STREAMS:
            info = await js.stream_info(ns.stream(stream.name))
            if info.state.messages == 0:
                continue
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                message = await js.get_msg(ns.stream(stream.name), seq)
                found.append((message.data or b"") + repr(message.headers).encode())
    finally:
        await nc.close()
    return found


async def test_no_secret_leaks_anywhere(
    http: httpx.AsyncClient,
    worker_settings: Settings,
    pool: Pool,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    mail_dir = tmp_path / "mail"
    sms_dir = tmp_path / "sms"
    settings = worker_settings.model_copy(update={"mail_dir": str(mail_dir), "sms_dir": str(sms_dir)})
    secrets: dict[str, str] = {"password": PASSWORD}
    async with running_worker(settings, "email"), running_worker(settings, "sms"):
        ann = await register(http, "ann@example.com")
        secrets["session"] = ann["token"]
        headers = bearer(ann["token"])
        [verify] = await wait_for_mail(mail_dir, "ann@example.com")
        secrets["verify link"] = verify.token
        phone = await http.post(
            "/api/v1/dashboard/profile/phone", json={"phone": "+15551230001"}, headers=headers
        )
        assert phone.status_code == 200, phone.text
        phone_code = await code_from_text(sms_dir)
        verified = await http.post(
            "/api/v1/dashboard/profile/phone/verify", json={"code": phone_code}, headers=headers
        )
        assert verified.json()["phoneVerified"] is True
        key = (await http.post("/api/v1/dashboard/api-keys", json={"name": "bot"}, headers=headers)).json()
        secrets["api key"] = key["secret"]
        rotated = (
            await http.post(
                f"/api/v1/dashboard/api-keys/{key['apiKey']['id']}/rotate", json={}, headers=headers
            )
        ).json()
        secrets["rotated api key"] = rotated["secret"]
        await http.get("/api/v1/auth/me", headers=bearer(key["secret"]))
        setup = (await http.post("/api/v1/auth/totp/setup", json={}, headers=headers)).json()
        secrets["totp seed"] = setup["secret"]
        enabled = await http.post(
            "/api/v1/auth/totp/enable",
            json={"password": PASSWORD, "code": pyotp.TOTP(setup["secret"]).now()},
            headers=headers,
        )
        for index, code in enumerate(enabled.json()["recoveryCodes"]):
            secrets[f"recovery code {index}"] = code
        await http.post("/api/v1/auth/password/forgot", json={"email": "ann@example.com"})
        reset = await wait_for_subject(mail_dir, "ann@example.com", "Reset your password")
        secrets["reset link"] = reset.token
        secrets["new password"] = "a brand new secret"
        done = await http.post(
            "/api/v1/auth/password/reset", json={"token": reset.token, "newPassword": "a brand new secret"}
        )
        assert done.status_code == 200
        relogin = await http.post(
            "/api/v1/auth/login",
            json={
                "email": "ann@example.com",
                "password": "a brand new secret",
                "totp": secrets["recovery code 0"],
            },
        )
        assert relogin.status_code == 200, relogin.text
        secrets["second session"] = relogin.json()["token"]
        later = bearer(relogin.json()["token"])

        # Responses after creation: keys are listed by prefix only; nothing else echoes a secret.
        responses = [
            (await http.get(path, headers=later)).text
            for path in (
                "/api/v1/auth/me",
                "/api/v1/dashboard/profile",
                "/api/v1/dashboard/api-keys",
                "/api/v1/dashboard/sessions",
            )
        ]
    async with pool.connection() as conn:
        tables = []
        for query in (
            "SELECT payload FROM outbox_events",
            "SELECT row_to_json(a)::text FROM audit_events a",
            "SELECT row_to_json(u)::text FROM users u",
            "SELECT row_to_json(k)::text FROM api_keys k",
            "SELECT row_to_json(m)::text FROM sms_messages m",
            "SELECT row_to_json(c)::text FROM phone_codes c",
        ):
            cursor = await conn.execute(query)
            tables += [
                bytes(r[0]) if isinstance(r[0], (bytes, memoryview)) else str(r[0]).encode()
                for r in await cursor.fetchall()
            ]
    events = await stream_payloads(settings)
    assert events, "the events were published"
    logs = caplog.text + "".join(repr(record.__dict__) for record in caplog.records)
    assert "HTTP Request: POST" in logs  # the capture works (httpx logs every request)

    # A 6-digit code could match digits of a timestamp by chance: look for it as a token of its own.
    alone = re.compile(rf"(?<![0-9]){phone_code}(?![0-9])")
    assert f"code is {phone_code}" in (await code_text(sms_dir))  # the search would find it where it is
    assert not alone.search(logs), "the phone code in the logs"
    assert all(not alone.search(event.decode("latin-1")) for event in events), (
        "the phone code in a NATS event"
    )
    assert all(not alone.search(row.decode("latin-1")) for row in tables), "the phone code in the database"
    assert all(not alone.search(text) for text in responses), "the phone code in a later response"

    for name, secret in secrets.items():
        assert secret not in logs, f"{name} in the logs"
        assert all(secret.encode() not in event for event in events), f"{name} in a NATS event"
        assert all(secret.encode() not in row for row in tables), f"{name} in the database"
        assert all(secret not in text for text in responses), f"{name} in a later response"


def _texts(folder: Path) -> list[str]:
    paths = sorted(folder.glob("*.txt")) if folder.exists() else []
    for path in paths:
        assert path.stat().st_mode & 0o077 == 0  # owner-only: it holds a live code
    return [p.read_text() for p in paths]


async def code_text(folder: Path) -> str:
    async with asyncio.timeout(10):
        while True:
            found = _texts(folder)
            if found:
                return found[0]
            await asyncio.sleep(0.05)


async def code_from_text(folder: Path) -> str:
    [code] = re.findall(r"code is ([0-9]{6})", await code_text(folder))
    return str(code)
