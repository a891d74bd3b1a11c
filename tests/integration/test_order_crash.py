"""The server killed with SIGKILL after the provider accepted an order and before the answer was
stored: after a restart no second upstream order exists, the hold is intact, and the ledger holds.

The gRPC server runs as a real `smm serve grpc` process; the demo provider accepts the order and
then holds its reply (the "timeout" fault processes first), so the kill lands exactly between
"the provider has it" and "smm wrote it down"."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import grpc
import pytest
from smm.v1 import accounts_service_pb2 as apb
from smm.v1 import accounts_service_pb2_grpc as apb_grpc
from smm.v1 import orders_service_pb2 as opb
from smm.v1 import orders_service_pb2_grpc as opb_grpc
from smm.v1 import providers_service_pb2 as ppb
from smm.v1 import providers_service_pb2_grpc as ppb_grpc
from smm.v1 import wallet_service_pb2 as wpb
from smm.v1 import wallet_service_pb2_grpc as wpb_grpc

from ops.embedded import free_port
from ops.grpc_client import wait_for_grpc
from tests.fix_db import INTERNAL_TOKEN, TEST_ENCRYPTION_KEYS
from tests.fix_demo import DemoHandle
from tests.fix_grpc import system_metadata

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def grpc_process(db_url: str, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMM_")}
    env.update(
        SMM_DATABASE_URL=db_url,
        SMM_GRPC_ADDR=f"127.0.0.1:{port}",
        SMM_INTERNAL_TOKEN=INTERNAL_TOKEN,
        SMM_PAGE_TOKEN_SECRET="crash-test",
        SMM_ENCRYPTION_KEYS=TEST_ENCRYPTION_KEYS,
    )
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ops.cli", "serve", "grpc"], cwd=ROOT, env=env, stderr=out
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@asynccontextmanager
async def channel_to(port: int) -> AsyncIterator[grpc.aio.Channel]:
    await wait_for_grpc(f"127.0.0.1:{port}", 30, metadata=system_metadata())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel


async def _until_upstream_has_an_order(demo: DemoHandle) -> None:
    while True:
        if await demo.orders():
            return
        await asyncio.sleep(0.02)


async def test_sigkill_between_provider_accept_and_store_never_orders_twice(
    db_url: str, demo_provider: DemoHandle, tmp_path: Path
) -> None:
    port = free_port()
    system = system_metadata()
    with grpc_process(db_url, port, tmp_path / "grpc-1.log") as first:
        async with channel_to(port) as channel:
            providers = ppb_grpc.ProvidersServiceStub(channel)
            provider = await providers.CreateProvider(
                ppb.CreateProviderRequest(provider=ppb.Provider(
                    name="Demo", api_url=demo_provider.api_url, api_key=demo_provider.api_key, currency="USD",
                    timeout_ms=10_000)),
                metadata=system,
            )  # fmt: skip
            queued = await providers.SyncProvider(ppb.SyncProviderRequest(id=provider.id), metadata=system)
            await providers.RunSync(ppb.RunSyncRequest(id=queued.id), metadata=system)
            accounts = apb_grpc.AccountsServiceStub(channel)
            user = await accounts.CreateUser(
                apb.CreateUserRequest(email="ann@example.com", password="a long password"), metadata=system
            )
            login = await accounts.Login(
                apb.LoginRequest(email="ann@example.com", password="a long password"),
                metadata=(("x-smm-internal-token", INTERNAL_TOKEN),),
            )
            wallet = wpb_grpc.WalletServiceStub(channel)
            await wallet.CreateBalanceAdjustment(
                wpb.CreateBalanceAdjustmentRequest(user_id=user.id, amount="5.00", reason="test"),
                metadata=system,
            )
            ann = (("x-smm-internal-token", INTERNAL_TOKEN), ("authorization", f"Bearer {login.token}"))
            orders = opb_grpc.OrdersServiceStub(channel)
            services = await providers.ListUpstreamServices(
                ppb.ListUpstreamServicesRequest(id=provider.id), metadata=system
            )
            assert services.services
            order = await orders.CreateOrder(
                opb.CreateOrderRequest(service_id=2, link="https://x.com/crash", quantity=1000), metadata=ann
            )
            await demo_provider.fault("timeout", count=1, actions=["add"])
            submit = orders.SubmitOrder(opb.SubmitOrderRequest(id=order.id), metadata=system)
            async with asyncio.timeout(10):
                await _until_upstream_has_an_order(demo_provider)
            first.send_signal(signal.SIGKILL)  # the provider has the order; smm has not written it down
            assert first.wait(timeout=10) == -signal.SIGKILL
            with pytest.raises(grpc.aio.AioRpcError):
                await submit

    with grpc_process(db_url, port, tmp_path / "grpc-2.log"):
        async with channel_to(port) as channel:
            orders = opb_grpc.OrdersServiceStub(channel)
            # The dispatch event is delivered again after the crash.
            after = await orders.SubmitOrder(opb.SubmitOrderRequest(id=order.id), metadata=system)
            assert after.status == opb.ORDER_STATUS_NEEDS_REVIEW
            assert "interrupted" in after.status_note
            again = await orders.SubmitOrder(opb.SubmitOrderRequest(id=order.id), metadata=system)
            assert again.status == opb.ORDER_STATUS_NEEDS_REVIEW
            assert len(await demo_provider.orders()) == 1  # never a second upstream order
            wallet = wpb_grpc.WalletServiceStub(channel)
            balance = await wallet.GetUserBalance(wpb.GetUserBalanceRequest(user_id=user.id), metadata=system)
            assert (balance.available, balance.held) == ("4.675", "0.325")  # the hold waits for staff
            verified = await wallet.VerifyLedger(wpb.VerifyLedgerRequest(), metadata=system)
            assert verified.ok, verified.problems
