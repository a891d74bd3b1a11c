"""Rate limits: shared by every edge and server copy, tighter for login, per key, with Retry-After."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from core.config import Settings
from core.events import connect
from server.common.db import Pool
from server.common.ratelimit import Limits, RateLimiter, client_bucket
from server.main import ServerHandle, create_server
from tests.fix_edge import RunningEdge, start_edge
from tests.integration.test_accounts import PASSWORD, bearer, register
from tests.integration.test_edge_http import assert_error
from tests.integration.test_two_factor import enable_two_factor

pytestmark = pytest.mark.integration


@asynccontextmanager
async def limited_stack(
    settings: Settings,
    pool: Pool,
    limits: dict[str, Any],
    *,
    edges: int = 1,
    clock: Callable[[], float] | None = None,
    **edge_update: Any,
) -> AsyncIterator[tuple[ServerHandle, list[RunningEdge]]]:
    """A gRPC server and ``edges`` edges with these limits, started well inside a minute: windows
    are one minute long, so no count resets mid-test. With ``clock`` the limiter reads the time
    from it instead (the test moves it)."""
    limited = settings.model_copy(update=limits)
    seconds_into_minute = time.time() % 60
    if clock is None and seconds_into_minute > 45:
        await asyncio.sleep(60.5 - seconds_into_minute)
    nc = await connect(limited.nats_url, name="tests-ratelimit")
    handle = await create_server(limited, pool, address="127.0.0.1:0", nc=nc, rate_clock=clock)
    edge_settings = limited.model_copy(update={"grpc_target": f"127.0.0.1:{handle.port}", **edge_update})
    started = [await start_edge(edge_settings) for _ in range(edges)]
    try:
        yield handle, started
    finally:
        for edge in started:
            await edge.stop()
        await handle.stop(None)
        await nc.close()


@pytest.fixture
async def tight(settings: Settings, pool: Pool) -> AsyncIterator[tuple[ServerHandle, list[RunningEdge]]]:
    limits = {
        "rate_per_ip_per_min": 40,
        "rate_login_per_ip_per_min": 5,
        "rate_login_per_account_per_min": 4,
        "rate_per_api_key_per_min": 3,
        "rate_auth_failures_before_penalty": 6,
        "rate_reset_per_ip_per_min": 6,
        "rate_reset_per_account_per_min": 2,
    }
    async with limited_stack(settings, pool, limits, edges=2) as stack:
        yield stack


def assert_limited(response: httpx.Response) -> None:
    error = assert_error(response, 429, "RESOURCE_EXHAUSTED", "RATE_LIMITED")
    assert int(response.headers["retry-after"]) >= 1
    assert any(d["@type"].endswith("RetryInfo") for d in error["details"])


async def test_login_brute_force_is_limited_across_two_edges(
    tight: tuple[ServerHandle, list[RunningEdge]],
) -> None:
    _, edges = tight
    async with (
        httpx.AsyncClient(base_url=edges[0].base_url) as a,
        httpx.AsyncClient(base_url=edges[1].base_url) as b,
    ):
        await register(a)  # 1 login-class call
        statuses = []
        for client in (a, b, a, b, a):
            response = await client.post(
                "/api/v1/auth/login", json={"email": "ann@example.com", "password": "guess!!!!!"}
            )
            statuses.append(response.status_code)
        assert statuses[:3] == [401, 401, 401]
        assert 429 in statuses  # the account's budget is shared by both edges
        assert_limited(
            await b.post("/api/v1/auth/login", json={"email": "ann@example.com", "password": PASSWORD})
        )


async def test_a_key_has_its_own_budget(tight: tuple[ServerHandle, list[RunningEdge]]) -> None:
    _, edges = tight
    async with httpx.AsyncClient(base_url=edges[0].base_url) as http:
        token = (await register(http))["token"]
        key = (
            await http.post("/api/v1/dashboard/api-keys", json={"name": "k"}, headers=bearer(token))
        ).json()
        for _ in range(3):
            assert (await http.get("/api/v1/auth/me", headers=bearer(key["secret"]))).status_code == 200
        assert_limited(await http.get("/api/v1/auth/me", headers=bearer(key["secret"])))
        # The user's session is another budget and still works.
        assert (await http.get("/api/v1/auth/me", headers=bearer(token))).status_code == 200


async def test_failed_credentials_tighten_the_ip_limit(tight: tuple[ServerHandle, list[RunningEdge]]) -> None:
    _, edges = tight
    async with httpx.AsyncClient(base_url=edges[0].base_url) as http:
        for _ in range(6):
            assert (await http.get("/api/v1/auth/me", headers=bearer("smm_s_guessed"))).status_code == 401
        # 40 calls a minute would be allowed; after 6 failures the IP gets 4.
        # 7 calls are far below 40, yet the IP already spent its tightened budget of 4.
        assert_limited(await http.get("/api/v1/admin/audit"))
        # Health is never limited: it must say what is down.
        assert (await http.get("/api/v1/public/health")).status_code == 200


async def test_password_reset_requests_are_limited_per_address_and_per_ip(
    tight: tuple[ServerHandle, list[RunningEdge]],
) -> None:
    _, edges = tight
    async with (
        httpx.AsyncClient(base_url=edges[0].base_url) as a,
        httpx.AsyncClient(base_url=edges[1].base_url) as b,
    ):
        first = await a.post("/api/v1/auth/password/forgot", json={"email": "ann@example.com"})
        second = await b.post("/api/v1/auth/password/forgot", json={"email": "ANN@example.com"})
        assert [first.status_code, second.status_code] == [200, 200]
        # The address's budget (2 a minute) is spent, whichever edge is asked.
        assert_limited(await a.post("/api/v1/auth/password/forgot", json={"email": "ann@example.com"}))
        # Other addresses still pass until the IP's budget (6 a minute) is spent.
        statuses = [
            (await b.post("/api/v1/auth/password/forgot", json={"email": f"u{i}@example.com"})).status_code
            for i in range(4)
        ]
        assert statuses == [200, 200, 200, 429]
        assert_limited(
            await a.post("/api/v1/auth/password/reset", json={"token": "x", "newPassword": "y" * 12})
        )


async def test_a_rate_limited_key_gets_the_reseller_error_convention(
    tight: tuple[ServerHandle, list[RunningEdge]],
) -> None:
    _, edges = tight
    async with httpx.AsyncClient(base_url=edges[0].base_url) as http:
        token = (await register(http))["token"]
        key = (
            await http.post("/api/v1/dashboard/api-keys", json={"name": "r"}, headers=bearer(token))
        ).json()
        replies = [
            (await http.post("/api/v1/reseller", data={"key": key["secret"], "action": "balance"}))
            for _ in range(4)
        ]
    assert [r.status_code for r in replies] == [200, 200, 200, 200]  # the protocol's errors are HTTP 200
    assert replies[0].json() == {"balance": "0.00", "currency": "USD"}
    assert replies[3].json() == {"error": "Too many requests, please slow down"}


async def test_the_v2_alias_serves_the_same_endpoint_when_turned_on(
    settings: Settings, grpc_server: ServerHandle
) -> None:
    edge = await start_edge(
        settings.model_copy(
            update={"grpc_target": f"127.0.0.1:{grpc_server.port}", "reseller_v2_alias": True}
        )
    )
    try:
        async with httpx.AsyncClient(base_url=edge.base_url) as http:
            for path in ("/api/v2", "/api/v2/", "/api/v1/reseller"):
                reply = await http.get(path, params={"key": "nope", "action": "balance"})
                assert (reply.status_code, reply.json()) == (200, {"error": "Invalid API key"}), path
    finally:
        await edge.stop()


async def wrong_password_change(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.post(
        "/api/v1/auth/password",
        json={"currentPassword": "a guess at it", "newPassword": "thief's own password"},
        headers=bearer(token),
    )


async def test_current_password_checks_spend_the_accounts_login_budget(
    tight: tuple[ServerHandle, list[RunningEdge]],
) -> None:
    _, edges = tight
    async with (
        httpx.AsyncClient(base_url=edges[0].base_url) as a,
        httpx.AsyncClient(base_url=edges[1].base_url) as b,
    ):
        token = (await register(a))["token"]  # 1 of the account's 4 login-class calls
        statuses = [(await wrong_password_change(client, token)).status_code for client in (a, b, a)]
        assert statuses == [400, 400, 400]
        assert_limited(await wrong_password_change(b, token))
        # One budget per account, whichever call checks the password, whichever edge is asked.
        assert_limited(
            await a.post(
                "/api/v1/auth/email/change",
                json={"newEmail": "thief@example.com", "password": "another guess"},
                headers=bearer(token),
            )
        )
        assert_limited(
            await b.post(
                "/api/v1/auth/totp/disable", json={"password": "guess", "code": "1"}, headers=bearer(token)
            )
        )
        assert_limited(  # a two-factor code guess for new recovery codes too
            await a.post("/api/v1/auth/totp/recovery-codes", json={"code": "000000"}, headers=bearer(token))
        )
        assert_limited(
            await a.post("/api/v1/auth/login", json={"email": "ann@example.com", "password": PASSWORD})
        )
        # Calls that check no password still pass.
        assert (await a.get("/api/v1/auth/me", headers=bearer(token))).status_code == 200


async def test_wrong_current_passwords_tighten_the_ip_limit(
    tight: tuple[ServerHandle, list[RunningEdge]],
) -> None:
    _, edges = tight
    async with httpx.AsyncClient(base_url=edges[0].base_url) as http:
        tokens = [(await register(http, f"{name}@example.com"))["token"] for name in ("ann", "bob")]
        for token in tokens:  # 3 each: within each account's budget of 4 (registration took 1)
            for _ in range(3):
                assert (await wrong_password_change(http, token)).status_code == 400
        # 8 calls are far below 40 a minute, but 6 wrong passwords leave the IP 4.
        assert_limited(await http.get("/api/v1/auth/me", headers=bearer(tokens[0])))


async def test_wrong_two_factor_codes_of_signed_in_calls_tighten_the_ip_limit(
    tight: tuple[ServerHandle, list[RunningEdge]],
) -> None:
    # "wrong two-factor codes count" (docs/ACCESS.md): also the guesses a stolen session makes for
    # new recovery codes, not only those at login.
    _, edges = tight
    async with httpx.AsyncClient(base_url=edges[0].base_url) as http:
        tokens = [(await register(http, f"{name}@example.com"))["token"] for name in ("ann", "bob", "cat")]
        for token in tokens:
            await enable_two_factor(http, token, try_a_wrong_code=False)
            for _ in range(2):  # within the account's budget of 4 (registration and enabling took 2)
                guess = await http.post(
                    "/api/v1/auth/totp/recovery-codes", json={"code": "abcd-efgh"}, headers=bearer(token)
                )
                assert_error(guess, 400, "INVALID_ARGUMENT")
        # 15 calls are far below 40 a minute, but 6 wrong codes leave the IP 4.
        assert_limited(await http.get("/api/v1/auth/me", headers=bearer(tokens[0])))


async def test_email_change_links_are_limited_per_new_address(
    tight: tuple[ServerHandle, list[RunningEdge]],
) -> None:
    # "the same, by address" (docs/ACCESS.md) for email change: the address the link is mailed to,
    # or any number of accounts could flood one inbox.
    _, edges = tight
    async with (
        httpx.AsyncClient(base_url=edges[0].base_url) as a,
        httpx.AsyncClient(base_url=edges[1].base_url) as b,
    ):
        tokens = [(await register(a, f"{name}@example.com"))["token"] for name in ("ann", "bob", "cat")]
        statuses = [
            (
                await client.post(
                    "/api/v1/auth/email/change",
                    json={"newEmail": "Victim@example.com", "password": PASSWORD},
                    headers=bearer(token),
                )
            ).status_code
            for client, token in zip((a, b, a), tokens, strict=True)
        ]
        assert statuses[:2] == [200, 200]  # 3 calls: within the IP's 6
        assert statuses[2] == 429  # the address's budget (2 a minute) is spent


async def test_verification_links_are_limited_per_address(
    tight: tuple[ServerHandle, list[RunningEdge]],
) -> None:
    # "verification" is one of the mail routes limited "by address" (docs/ACCESS.md): the signed-in
    # account's own, whichever edge is asked.
    _, edges = tight
    async with (
        httpx.AsyncClient(base_url=edges[0].base_url) as a,
        httpx.AsyncClient(base_url=edges[1].base_url) as b,
    ):
        token = (await register(a))["token"]
        statuses = [
            (await client.post("/api/v1/auth/email/verification", json={}, headers=bearer(token))).status_code
            for client in (a, b)
        ]
        assert statuses == [200, 200]
        # The address's budget (2 a minute) is spent; the IP's (6) is not.
        assert_limited(await a.post("/api/v1/auth/email/verification", json={}, headers=bearer(token)))


async def test_counts_of_past_windows_are_dropped_while_the_store_is_down() -> None:
    # With PostgreSQL unreachable each copy limits with its own counts, and a past window's
    # counts limit nothing: they must not pile up per address for as long as the outage lasts.
    down: Pool = AsyncConnectionPool("postgresql://smm@127.0.0.1:9/smm", min_size=0, max_size=1, open=False)
    await down.open()
    now = [1_800_000_000.0]
    limiter = RateLimiter(down, Limits(100, 5, 5, 100, 5, 3), clock=lambda: now[0])
    try:
        for _minute in range(4):
            for client in range(50):
                limiter.take(f"ip:198.51.100.{client}", 100)
            await limiter.sync()  # fails: the store is down
            now[0] += 60
        assert len(limiter._buckets) <= 50  # the counters themselves are the point
    finally:
        await down.close()


@pytest.fixture
async def keyed(settings: Settings, pool: Pool) -> AsyncIterator[RunningEdge]:
    """Limits where a key's budget (8) is above its address's (4), as by default (1,200 / 600)."""
    limits = {
        "rate_per_ip_per_min": 4,
        "rate_per_api_key_per_min": 8,
        "rate_per_user_per_min": 100,
        "rate_login_per_ip_per_min": 10,
        "rate_auth_failures_before_penalty": 100,
    }
    async with limited_stack(settings, pool, limits) as (_, [edge]):
        yield edge


async def test_key_calls_from_one_address_reach_the_keys_figure_not_the_addresses(keyed: RunningEdge) -> None:
    # A reseller runs several scripts from one server, each with a key: the address's budget must
    # not cap what its keys were given. Anonymous calls from that address are still limited by it.
    async with httpx.AsyncClient(base_url=keyed.base_url) as http:
        token = (await register(http))["token"]  # 1 call of the address (anonymous)
        first, second = [
            (await http.post("/api/v1/dashboard/api-keys", json={"name": n}, headers=bearer(token))).json()[
                "secret"
            ]
            for n in ("script 1", "script 2")
        ]  # 2 calls of the address (a session)
        for _ in range(8):  # twice the address's budget of 4, on one key
            assert (await http.get("/api/v1/auth/me", headers=bearer(first))).status_code == 200
        over = await http.get("/api/v1/auth/me", headers=bearer(first))
        assert_limited(over)
        assert over.json()["error"]["details"][0]["metadata"]["bucket"] == "key"
        for _ in range(8):  # another key, another budget, still the same address
            assert (await http.get("/api/v1/auth/me", headers=bearer(second))).status_code == 200
        # Those 17 key calls spent nothing of the address's: 1 anonymous call is left, then 429
        # (a route the edge does not answer from its cache).
        assert (await http.get("/api/v1/auth/me")).status_code == 401
        assert_limited(await http.get("/api/v1/auth/me"))


async def test_calls_with_keys_that_do_not_authenticate_spend_the_addresses_budget(
    keyed: RunningEdge,
) -> None:
    async with httpx.AsyncClient(base_url=keyed.base_url) as http:
        token = (await register(http))["token"]  # 1 of the address's 4 (anonymous)
        key = (
            await http.post("/api/v1/dashboard/api-keys", json={"name": "k"}, headers=bearer(token))
        ).json()  # 2 of 4 (a session)
        # A good key on a route keys may not call is not carried by its key: 3 of 4.
        refused = await http.get("/api/v1/dashboard/api-keys", headers=bearer(key["secret"]))
        assert refused.status_code == 403
        # An unknown key: 4 of 4.
        assert (await http.get("/api/v1/auth/me", headers=bearer("smm_k_guessed"))).status_code == 401
        # The address has spent its budget: unknown keys are refused before they are looked up,
        # and so is a good key from that address until the window ends (as anonymous calls are).
        assert_limited(await http.get("/api/v1/auth/me", headers=bearer("smm_k_guessed")))
        assert_limited(await http.get("/api/v1/auth/me"))
        assert_limited(await http.get("/api/v1/auth/me", headers=bearer(key["secret"])))


@pytest.fixture
async def behind_proxy(settings: Settings, pool: Pool) -> AsyncIterator[RunningEdge]:
    """An edge behind a trusted proxy (the test client), so X-Forwarded-For names the client, with
    a per-IP limit of 4."""
    limits = {"rate_per_ip_per_min": 4}
    async with limited_stack(settings, pool, limits, trusted_proxies="127.0.0.1/32") as (_, [edge]):
        yield edge


async def test_an_ipv6_client_is_counted_by_its_slash_64(behind_proxy: RunningEdge) -> None:
    """Each IPv6 address had a bucket of its own, and one client is routinely given a whole /64:
    a fresh address per call was a fresh budget per call."""
    async with httpx.AsyncClient(base_url=behind_proxy.base_url) as client:

        async def from_address(address: str) -> httpx.Response:
            # Signed out, so not answered from the edge's catalog cache: every call reaches the limiter.
            return await client.get("/api/v1/dashboard/wallet", headers={"X-Forwarded-For": address})

        rotated = [await from_address(f"2001:db8:1:2::{n:x}") for n in range(1, 6)]
        assert [r.status_code for r in rotated[:4]] == [401, 401, 401, 401]
        assert_limited(rotated[4])  # the fifth address of the same /64: its fifth call
        assert (await from_address("2001:db8:1:3::1")).status_code == 401  # the next /64 is another client
        v4 = [await from_address(f"198.51.100.{n}") for n in range(1, 6)]
        assert [r.status_code for r in v4] == [401] * 5  # IPv4 addresses are counted one by one


def test_the_bucket_of_a_client_address() -> None:
    assert client_bucket("2001:db8:1:2:aaaa:bbbb:cccc:dddd") == "2001:db8:1:2::/64"
    assert client_bucket("2001:DB8:1:2::1") == "2001:db8:1:2::/64"
    assert client_bucket("203.0.113.7") == "203.0.113.7"
    assert client_bucket("") == ""


# A minute's start (a multiple of 60), far from the real time: the limiter's windows follow the
# clock the test moves.
T0 = 1_800_000_000.0


@dataclass
class Clock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def sliding(settings: Settings, pool: Pool) -> AsyncIterator[tuple[Clock, RunningEdge]]:
    """The ``tight`` limits on a clock the test moves."""
    limits = {
        "rate_per_ip_per_min": 40,
        "rate_login_per_ip_per_min": 20,
        "rate_login_per_account_per_min": 4,
        "rate_auth_failures_before_penalty": 6,
        "rate_reset_per_ip_per_min": 6,
        "rate_reset_per_account_per_min": 2,
    }
    clock = Clock()
    async with limited_stack(settings, pool, limits, clock=clock) as (_, [edge]):
        yield clock, edge


async def guess(http: httpx.AsyncClient, password: str = "guess!!!!!") -> httpx.Response:  # noqa: S107
    return await http.post("/api/v1/auth/login", json={"email": "ann@example.com", "password": password})


async def test_a_login_budget_spent_at_a_windows_end_is_not_renewed_at_the_next_ones_start(
    sliding: tuple[Clock, RunningEdge],
) -> None:
    # Fixed windows let a whole budget through at 12:00:59 and another at 12:01:00: twice the
    # limit in two seconds. The sliding estimate weighs the previous minute's count by the part
    # of it still inside the last 60 seconds.
    clock, edge = sliding
    async with httpx.AsyncClient(base_url=edge.base_url) as http:
        clock.now = T0 + 59
        await register(http)  # 1 of the account's 4
        assert [(await guess(http)).status_code for _ in range(3)] == [401, 401, 401]  # 4 of 4
        clock.now = T0 + 60  # one second later, a new minute: 4 x 60/60 + 1 > 4
        refused = await guess(http, PASSWORD)
        assert_limited(refused)
        # Truthful: the next call passes once 4 x (1 - t/60) + 1 (the refused one) + 1 <= 4, at t = 30 s.
        assert refused.headers["retry-after"] == "30"
        assert refused.json()["error"]["details"][0]["metadata"]["retry_after_s"] == "30"
        clock.now = T0 + 60 + 29
        assert_limited(await guess(http, PASSWORD))  # not yet (and it counts: 2 in this minute)
        clock.now = T0 + 60 + 45  # 4 x 15/60 + 2 + 1 <= 4: the previous minute has faded enough
        assert (await guess(http, PASSWORD)).status_code == 200
        clock.now = T0 + 120 + 30  # 3 x 30/60 + 3 = 4.5 > 4 at the third: the estimate binds again
        assert [(await guess(http)).status_code for _ in range(3)] == [401, 401, 429]


async def test_a_mail_budget_spent_at_a_windows_end_is_not_renewed_at_the_next_ones_start(
    sliding: tuple[Clock, RunningEdge],
) -> None:
    clock, edge = sliding
    async with httpx.AsyncClient(base_url=edge.base_url) as http:

        async def forgot() -> httpx.Response:
            return await http.post("/api/v1/auth/password/forgot", json={"email": "ann@example.com"})

        clock.now = T0 + 58
        assert [(await forgot()).status_code for _ in range(2)] == [200, 200]  # the address's 2
        clock.now = T0 + 61  # 2 x 59/60 + 1 > 2
        refused = await forgot()
        assert_limited(refused)
        # With this minute's 1 (the refused call) no second fits in it, whatever fades: the next
        # call passes in the next minute, from its start (1 x (1 - t/60) + 1 <= 2), 59 s from now.
        assert refused.headers["retry-after"] == "59"
        clock.now = T0 + 120
        assert (await forgot()).status_code == 200
        assert_limited(await forgot())  # 1 x 60/60 + 2 > 2


async def test_credential_failures_at_a_windows_end_still_tighten_the_next_ones_start(
    sliding: tuple[Clock, RunningEdge],
) -> None:
    clock, edge = sliding
    async with httpx.AsyncClient(base_url=edge.base_url) as http:

        async def me() -> httpx.Response:
            return await http.get("/api/v1/auth/me", headers=bearer("smm_s_guessed"))

        clock.now = T0 + 59
        assert [(await me()).status_code for _ in range(6)] == [401] * 6  # the penalty's 6
        clock.now = T0 + 60  # 6 x 60/60 failures: still tightened, to a tenth of 40
        assert [(await me()).status_code for _ in range(5)] == [401, 401, 401, 401, 429]
        clock.now = T0 + 120 + 50  # this minute's 4 failures x 10/60, and up to 5 more, stay below 6
        assert [(await me()).status_code for _ in range(6)] == [401] * 6  # above the tightened 4
