"""A shop for order tests: the demo provider synced, an admin, funded users, and helpers."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import httpx
import pytest
from smm.v1 import events_pb2
from smm.v1 import orders_service_pb2 as opb
from smm.v1 import orders_service_pb2_grpc as opb_grpc
from smm.v1 import wallet_service_pb2 as wpb
from smm.v1 import wallet_service_pb2_grpc as wpb_grpc

from core.config import Settings
from server.common.db import Pool
from server.main import ServerHandle
from tests.fix_demo import DemoHandle
from tests.fix_grpc import system_metadata
from tests.integration.test_accounts import bearer, register
from tests.integration.test_admin_users import admin_token
from tests.integration.test_providers import add_provider, admin_services, run_sync


class Shop:
    """A panel with the demo provider synced, an admin, and helpers."""

    pool: Pool

    def __init__(self, http: httpx.AsyncClient, channel: grpc.aio.Channel, admin: dict[str, str]) -> None:
        self.http = http
        self.channel = channel
        self.admin = admin
        self.services: dict[str, dict[str, Any]] = {}
        self.orders = opb_grpc.OrdersServiceStub(channel)
        self.wallet = wpb_grpc.WalletServiceStub(channel)

    def service_id(self, upstream: str) -> str:
        return str(self.services[upstream]["service"]["id"])

    async def user(self, email: str, funds: str = "0") -> dict[str, str]:
        account = await register(self.http, email)
        if funds != "0":
            await self.fund(account["user"]["id"], funds)
        return bearer(account["token"])

    async def fund(self, user_id: str, amount: str, reason: str = "test funds") -> httpx.Response:
        response = await self.http.post(
            f"/api/v1/admin/users/{user_id}/balance-adjustments",
            json={"amount": amount, "reason": reason},
            headers=self.admin,
        )
        assert response.status_code == 200, response.text
        return response

    async def balance(self, user: dict[str, str]) -> tuple[str, str]:
        body = (await self.http.get("/api/v1/dashboard/wallet", headers=user)).json()
        return body["available"], body["held"]

    async def with_fallback(
        self, service_id: str, upstream_service_id: str, fallback_provider_id: str
    ) -> None:
        """The service at the demo provider first, then at another provider's same upstream service."""
        mapped = await self.http.post(
            f"/api/v1/admin/services/{service_id}/providers",
            json={
                "provider": {"providerId": self.provider_id, "upstreamServiceId": upstream_service_id},  # type: ignore[attr-defined]
                "fallbacks": [{"providerId": fallback_provider_id, "upstreamServiceId": upstream_service_id}],
            },
            headers=self.admin,
        )
        assert mapped.status_code == 200, mapped.text

    async def order(self, user: dict[str, str], **body: Any) -> httpx.Response:
        return await self.http.post("/api/v1/dashboard/orders", json=body, headers=user)

    async def submit(self, order_id: str) -> opb.Order:
        request = opb.SubmitOrderRequest(id=int(order_id))
        order: opb.Order = await self.orders.SubmitOrder(request, metadata=system_metadata())
        return order

    async def staff_order(self, order_id: str) -> dict[str, Any]:
        """The order as staff see it (provider, upstream id, notes): customers see less."""
        response = await self.http.get(f"/api/v1/admin/orders/{order_id}", headers=self.admin)
        assert response.status_code == 200, response.text
        order: dict[str, Any] = response.json()
        return order

    async def settle(self, order_id: str, user: dict[str, str], timeout_s: float = 10.0) -> dict[str, Any]:
        """Polls (as the poller would) until the order is final."""
        async with asyncio.timeout(timeout_s):
            while True:
                await ready_to_poll(self.pool)  # no waiting for the adaptive interval in tests
                await self.orders.PollOrders(opb.PollOrdersRequest(), metadata=system_metadata())
                order: dict[str, Any] = (
                    await self.http.get(f"/api/v1/dashboard/orders/{order_id}", headers=user)
                ).json()
                if order["status"] in FINAL:
                    return order
                await asyncio.sleep(0.1)

    async def completed_order(self, user: dict[str, str], link: str) -> dict[str, Any]:
        """An order of the demo's service 1 (refill allowed) placed, sent and completed."""
        placed = await self.order(user, serviceId=self.service_id("1"), link=link, quantity=100)
        assert placed.status_code == 200, placed.text
        await self.submit(placed.json()["id"])
        done = await self.settle(placed.json()["id"], user)
        assert done["status"] == "ORDER_STATUS_COMPLETED", done
        return done

    async def verify(self) -> wpb.VerifyLedgerResponse:
        result: wpb.VerifyLedgerResponse = await self.wallet.VerifyLedger(
            wpb.VerifyLedgerRequest(), metadata=system_metadata()
        )
        return result


FINAL = {
    "ORDER_STATUS_COMPLETED",
    "ORDER_STATUS_PARTIAL",
    "ORDER_STATUS_CANCELED",
    "ORDER_STATUS_FAILED",
    "ORDER_STATUS_EXPIRED",
}


@pytest.fixture
async def shop(
    http: httpx.AsyncClient, grpc_server: ServerHandle, settings: Settings, channel: grpc.aio.Channel,
    demo_provider: DemoHandle, pool: Pool,
) -> Shop:  # fmt: skip
    admin = bearer(await admin_token(http, grpc_server, settings))
    provider = await add_provider(http, admin, demo_provider)
    await run_sync(channel, provider["id"])
    # Polls answer at once in tests (production waits 15 s before the first look).
    shop = Shop(http, channel, admin)
    shop.pool = pool
    shop.services = await admin_services(http, admin)
    shop.provider_id = provider["id"]  # type: ignore[attr-defined]
    return shop


async def ready_to_poll(pool: Pool) -> None:
    async with pool.connection() as conn:
        await conn.execute("UPDATE orders SET next_poll_time = now() WHERE next_poll_time IS NOT NULL")


async def shop_orders(shop: Shop) -> list[dict[str, Any]]:
    demo: DemoHandle = shop.demo  # type: ignore[attr-defined]
    return await demo.orders()


@pytest.fixture(autouse=True)
def _demo_on_shop(request: pytest.FixtureRequest) -> None:
    if "shop" in request.fixturenames:
        request.getfixturevalue("shop").demo = request.getfixturevalue("demo_provider")


async def stuck_events(pool: Pool) -> list[events_pb2.OrdersStuck]:
    """Every stuck alert written so far (orders and refills), oldest first."""
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT payload FROM outbox_events WHERE subject = 'smm.orders.alert.stuck' ORDER BY id"
            )
        ).fetchall()
    return [events_pb2.OrdersStuck.FromString(r[0]) for r in rows]


async def stuck_alerts(pool: Pool) -> list[list[int]]:
    """The order ids of every stuck-order alert written so far, one list per alert."""
    return [list(a.order_ids) for a in await stuck_events(pool) if a.order_ids]  # not refills alone
