"""Two smm instances chained: A's provider is B's reseller endpoint, synced like any provider.
An order placed on A is dispatched to B, completes there against B's demo provider, and reaches its
final status and balance on A by polling."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import httpx
import pytest
from smm.v1 import orders_service_pb2 as opb
from smm.v1 import orders_service_pb2_grpc as opb_grpc

from core.config import Settings
from server.common.db import Pool, open_pool
from server.main import ServerHandle, create_server
from tests.fix_db import create_database, drop_database, make_settings
from tests.fix_demo import DemoHandle
from tests.fix_edge import RunningEdge, start_edge
from tests.fix_grpc import system_metadata
from tests.fix_shop import Shop, ready_to_poll
from tests.integration.test_accounts import bearer
from tests.integration.test_admin_users import admin_token
from tests.integration.test_providers import add_provider, admin_services, run_sync

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass
class Instance:
    settings: Settings
    pool: Pool
    server: ServerHandle
    edge: RunningEdge
    http: httpx.AsyncClient
    channel: grpc.aio.Channel


@pytest.fixture
async def panel_b(pg_admin_url: str, template_db: str) -> AsyncIterator[Instance]:
    """A second, independent smm: its own database, gRPC server and edge."""
    name = f"smm_b_{uuid.uuid4().hex[:10]}"
    url = create_database(pg_admin_url, name, template=template_db)
    settings = make_settings(url)
    pool = await open_pool(settings)
    server = await create_server(settings, pool, address="127.0.0.1:0")
    edge = await start_edge(settings.model_copy(update={"grpc_target": f"127.0.0.1:{server.port}"}))
    async with (
        httpx.AsyncClient(base_url=edge.base_url, timeout=10) as http,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        yield Instance(settings, pool, server, edge, http, channel)
    await edge.stop()
    await server.stop(None)
    await pool.close()
    drop_database(pg_admin_url, name)


async def test_an_order_on_a_completes_through_b(
    http: httpx.AsyncClient,
    grpc_server: ServerHandle,
    settings: Settings,
    channel: grpc.aio.Channel,
    pool: Pool,
    panel_b: Instance,
    demo_provider: DemoHandle,
) -> None:
    # B: the demo provider synced, and a reseller account (panel A) with funds and an API key.
    b_admin = bearer(await admin_token(panel_b.http, panel_b.server, panel_b.settings))
    b_demo = await add_provider(panel_b.http, b_admin, demo_provider)
    await run_sync(panel_b.channel, b_demo["id"])
    b = Shop(panel_b.http, panel_b.channel, b_admin)
    b.pool = panel_b.pool
    b.services = await admin_services(panel_b.http, b_admin)
    a_account = await b.user("panel-a@example.com", "50.00")
    key = (
        await panel_b.http.post("/api/v1/dashboard/api-keys", json={"name": "panel A"}, headers=a_account)
    ).json()

    # A: B's reseller endpoint is just another provider; its list (B's prices) becomes A's cost.
    a_admin = bearer(await admin_token(http, grpc_server, settings))
    upstream = await add_provider(
        http, a_admin, demo_provider, name="Panel B", apiUrl=f"{panel_b.edge.base_url}/api/v1/reseller",
        apiKey=key["secret"],
    )  # fmt: skip
    tested = (
        await http.post(f"/api/v1/admin/providers/{upstream['id']}/test", json={}, headers=a_admin)
    ).json()
    assert (tested["ok"], tested["balance"]) == (True, "50.00")
    synced = await run_sync(channel, upstream["id"])
    assert synced.created == 18
    a = Shop(http, channel, a_admin)
    a.pool = pool
    a.services = await admin_services(http, a_admin)
    b_likes = b.service_id("2")  # 0.325 on B
    a_likes = a.services[b_likes]  # B's service id is A's upstream id
    assert (a_likes["providerRate"], a_likes["service"]["rate"]) == ("0.325", "0.4225")  # + A's 30%

    # A customer orders on A; A sends it to B; B sends it to its demo provider.
    customer = await a.user("customer@example.com", "10.00")
    placed = (
        await a.order(customer, serviceId=a_likes["service"]["id"], link="https://x.com/chain", quantity=1000)
    ).json()
    sent = await a.submit(placed["id"])
    assert sent.status == opb.ORDER_STATUS_IN_PROGRESS
    b_order_id = sent.upstream_order_id
    b_orders = opb_grpc.OrdersServiceStub(panel_b.channel)
    on_b = await b_orders.SubmitOrder(opb.SubmitOrderRequest(id=int(b_order_id)), metadata=system_metadata())
    assert on_b.status == opb.ORDER_STATUS_IN_PROGRESS
    assert on_b.source == "reseller"

    # B completes against its demo provider; A sees it through B's reseller status.
    await ready_to_poll(panel_b.pool)
    async with asyncio.timeout(15):
        while True:
            await ready_to_poll(panel_b.pool)
            await b.orders.PollOrders(opb.PollOrdersRequest(), metadata=system_metadata())
            await ready_to_poll(pool)
            await a.orders.PollOrders(opb.PollOrdersRequest(), metadata=system_metadata())
            done = (await http.get(f"/api/v1/dashboard/orders/{placed['id']}", headers=customer)).json()
            if done["status"] == "ORDER_STATUS_COMPLETED":
                break
            await asyncio.sleep(0.1)
    assert (done["charged"], done["released"]) == ("0.4225", "0.00")
    assert await a.balance(customer) == ("9.5775", "0.00")
    assert await b.balance(a_account) == ("49.675", "0.00")  # A paid B's price
    assert len(await demo_provider.orders()) == 1
    assert (await a.verify()).ok
    assert (await b.verify()).ok
