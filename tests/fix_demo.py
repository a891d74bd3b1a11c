"""The demo provider served over real HTTP on loopback, with helpers for its control API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest

from demo.provider import DemoConfig, RunningDemo, start_demo_provider
from ops.embedded import free_port
from tests.fix_edge import TEST_TLS

CONTROL_TOKEN = "control-token-for-tests"
# Short steps keep progression tests fast; the "timeout" fault holds replies longer than any test client waits.
TEST_CONFIG = DemoConfig(step_s=0.05, timeout_fault_s=3.0, control_token=CONTROL_TOKEN)


@dataclass
class DemoHandle:
    running: RunningDemo
    control: httpx.AsyncClient

    @property
    def base_url(self) -> str:
        return self.running.base_url

    @property
    def api_url(self) -> str:
        return self.running.api_url

    @property
    def api_key(self) -> str:
        return self.running.config.api_keys[0]

    @property
    def config(self) -> DemoConfig:
        return self.running.config

    async def stop(self) -> None:
        await self.control.aclose()
        await self.running.stop()

    async def fault(self, kind: str, count: int = 1, actions: list[str] | None = None, **extra: Any) -> None:
        spec: dict[str, Any] = {"kind": kind, "count": count, **extra}
        if actions is not None:
            spec["actions"] = actions
        response = await self.control.post("/control/faults", json=spec)
        assert response.status_code == 201, response.text

    async def clear_faults(self) -> None:
        response = await self.control.delete("/control/faults")
        assert response.status_code == 204, response.text

    async def orders(self) -> list[dict[str, Any]]:
        response = await self.control.get("/control/orders")
        assert response.status_code == 200, response.text
        orders: list[dict[str, Any]] = response.json()["orders"]
        return orders

    async def stats(self) -> dict[str, Any]:
        response = await self.control.get("/control/stats")
        assert response.status_code == 200, response.text
        stats: dict[str, Any] = response.json()
        return stats

    async def requests(self, action: str) -> int:
        count: int = (await self.stats())["requests"].get(action, 0)
        return count

    async def set_balance(self, amount: str, key: str | None = None) -> None:
        response = await self.control.post(
            "/control/balance", json={"key": key or self.api_key, "balance": amount}
        )
        assert response.status_code == 200, response.text


async def start_demo(config: DemoConfig = TEST_CONFIG) -> DemoHandle:
    running = await start_demo_provider(config, port=free_port())
    control = httpx.AsyncClient(
        base_url=running.base_url,
        timeout=10,
        headers={"X-Control-Token": config.control_token or ""},
        verify=TEST_TLS,
    )
    return DemoHandle(running, control)


@pytest.fixture
async def demo_provider() -> AsyncIterator[DemoHandle]:
    """A fresh demo provider (empty order book) per test, with ``TEST_CONFIG``."""
    handle = await start_demo()
    yield handle
    await handle.stop()


DemoFactory = Callable[..., Awaitable[DemoHandle]]


@pytest.fixture
async def demo_provider_factory() -> AsyncIterator[DemoFactory]:
    """Start demo providers with ``TEST_CONFIG`` fields overridden: ``await factory(webhook_url=...)``."""
    started: list[DemoHandle] = []

    async def factory(**overrides: Any) -> DemoHandle:
        handle = await start_demo(replace(TEST_CONFIG, **overrides))
        started.append(handle)
        return handle

    yield factory
    for handle in started:
        await handle.stop()


def _lines(prefix: str, n: int) -> str:
    return "\n".join(f"{prefix} {i}" for i in range(1, n + 1))


# One valid ``add`` per service type of the demo catalog: type -> (service id, parameters).
ORDER_EXAMPLES: dict[str, tuple[int, dict[str, str]]] = {
    "Default": (1, {"link": "https://instagram.com/demo.user", "quantity": "100"}),
    "Package": (3, {"link": "https://instagram.com/stories/demo.user"}),
    "SEO": (
        4,
        {"link": "https://example.com/shop", "quantity": "100", "keywords": "smm panel\r\nbuy followers"},
    ),
    "Custom Comments": (5, {"link": "https://instagram.com/p/abc", "comments": _lines("Nice post", 10)}),
    "Custom Comments Package": (6, {"link": "https://instagram.com/p/abc", "comments": "Great\nLovely"}),
    "Mentions": (7, {"link": "https://instagram.com/p/abc", "quantity": "100", "usernames": "alice\nbob"}),
    "Mentions with Hashtags": (
        8,
        {
            "link": "https://instagram.com/p/abc",
            "quantity": "100",
            "usernames": "alice\nbob",
            "hashtags": "#a\n#b",
        },
    ),
    "Mentions Custom List": (9, {"link": "https://instagram.com/p/abc", "usernames": _lines("user", 10)}),
    "Mentions Hashtag": (10, {"link": "https://instagram.com/p/abc", "quantity": "100", "hashtag": "travel"}),
    "Mentions User Followers": (
        11,
        {"link": "https://instagram.com/p/abc", "quantity": "100", "username": "natgeo"},
    ),
    "Mentions Media Likers": (
        12,
        {"link": "https://instagram.com/p/abc", "quantity": "100", "media": "https://instagram.com/p/media1"},
    ),
    "Comment Likes": (13, {"link": "https://instagram.com/p/abc", "quantity": "20", "username": "commenter"}),
    "Comment Replies": (
        14,
        {"link": "https://instagram.com/p/abc", "username": "commenter", "comments": _lines("Reply", 10)},
    ),
    "Poll": (15, {"link": "https://twitter.com/x/status/1", "quantity": "100", "answer_number": "2"}),
    "Invites from Groups": (
        16,
        {"link": "https://t.me/mygroup", "quantity": "100", "groups": "group1\ngroup2"},
    ),
    "Subscriptions": (
        17,
        {
            "username": "someuser",
            "min": "50",
            "max": "100",
            "posts": "3",
            "delay": "30",
            "expiry": "31/12/2030",
        },
    ),
    "Web Traffic": (
        18,
        {
            "link": "https://example.com",
            "quantity": "500",
            "country": "US",
            "device": "1",
            "type_of_traffic": "1",
            "google_keyword": "smm panel",
        },
    ),
}
