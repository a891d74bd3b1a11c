"""What users receive and what they can do with it: found by the notifications audit."""

from __future__ import annotations

from urllib.parse import urlencode

import httpx
import pytest

from core.config import Settings
from server.common.db import Pool
from server.common.pagetoken import PageTokenCodec
from tests.integration.test_accounts import bearer, register
from tests.integration.test_edge_http import assert_error

pytestmark = pytest.mark.integration


def unsubscribe_path(settings: Settings, user_id: int, topic: str) -> str:
    """The path and query of the link a message carries (``Notifications._unsubscribe_url``)."""
    tokens = PageTokenCodec(settings.page_token_secret.get_secret_value().encode())
    token = tokens.encode({"user": user_id, "topic": topic}, filters={"use": "unsubscribe"})
    return f"/api/v1/public/unsubscribe?{urlencode({'token': token})}"


async def email_preferences(pool: Pool, user_id: int) -> object:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT notification_preferences -> 'email' FROM users WHERE id = %s", [user_id]
        )
        row = await cursor.fetchone()
    assert row is not None
    return row[0]


async def test_rfc8058_one_click_post_unsubscribes_and_is_idempotent(
    http: httpx.AsyncClient, pool: Pool, settings: Settings
) -> None:
    """A mail client's one-click unsubscribe (RFC 8058 section 3.2) POSTs to the List-Unsubscribe
    URL, the token in its query string, with the form body ``List-Unsubscribe=One-Click``. The
    edge read that body as JSON: every one-click unsubscribe from Gmail or Yahoo was a 400 and the
    user kept getting the mail."""
    account = await register(http, "oneclick@example.com")
    user_id = int(account["user"]["id"])
    assert bearer(account["token"])
    path = unsubscribe_path(settings, user_id, "order_finished")
    form = {"content-type": "application/x-www-form-urlencoded"}
    for _ in range(2):  # a client may send it twice: the same answer, nothing else changes
        clicked = await http.post(path, content=b"List-Unsubscribe=One-Click", headers=form)
        assert clicked.status_code == 200, clicked.text
        assert clicked.json() == {"topic": "order_finished"}
    assert await email_preferences(pool, user_id) == {"order_finished": False}


async def test_a_get_of_an_unsubscribe_link_changes_nothing(
    http: httpx.AsyncClient, pool: Pool, settings: Settings
) -> None:
    """Mail scanners, link previews and prefetchers GET the links of a mail: a GET that
    unsubscribed turned users' mail off without their knowing (RFC 8058 exists because of it). A
    GET only says what the link would turn off, for the web front end's confirmation page."""
    account = await register(http, "scanned@example.com")
    user_id = int(account["user"]["id"])
    path = unsubscribe_path(settings, user_id, "order_finished")
    for _ in range(3):
        scanned = await http.get(path)
        assert scanned.status_code == 200, scanned.text
        assert scanned.json() == {"topic": "order_finished", "subscribed": True}
    assert await email_preferences(pool, user_id) is None

    confirmed = await http.post(path)  # the page's button
    assert confirmed.status_code == 200, confirmed.text
    assert await email_preferences(pool, user_id) == {"order_finished": False}
    after = await http.get(path)
    assert after.json() == {"topic": "order_finished", "subscribed": False}

    for bad in (path[:-6] + "AAAAAA", "/api/v1/public/unsubscribe"):  # forged, missing
        error = assert_error(await http.get(bad), 400, "INVALID_ARGUMENT")
        [bad_request] = [d for d in error["details"] if d["@type"].endswith("BadRequest")]
        assert [v["field"] for v in bad_request["fieldViolations"]] == ["token"]


async def test_an_unsubscribe_link_of_a_deleted_account_is_invalid(
    http: httpx.AsyncClient, pool: Pool, settings: Settings
) -> None:
    path = unsubscribe_path(settings, 987_654_321, "order_finished")
    assert_error(await http.get(path), 400, "INVALID_ARGUMENT")
