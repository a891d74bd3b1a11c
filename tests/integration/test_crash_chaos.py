"""Chaos: real processes SIGKILLed at seeded moments while orders flow; no order is placed twice
upstream and no money is lost or created.

A real `smm serve grpc` (with its outbox relay) and a real `smm worker dispatch` run against the
test's own PostgreSQL database and NATS namespace. Three funded users place orders through
CreateOrder (retrying under one request id when the server dies under them), the demo provider
answers with a mix of outcomes (completed, partial, canceled links) and faults on `add` (timeout,
5xx, malformed JSON, an HTML page, a definite refusal), and a seeded schedule SIGKILLs the gRPC
server, the dispatch worker or both after 0.5-1.5 s of work (each restarted at once; the next kill
waits until they serve again, or a restart taking longer than the gap would be all the test saw). The test also plays
the scheduler's order-poll tick (PollOrders; the real tick comes every 30 s, longer than the test).

Then the system settles within a bounded time, with two steps the test compresses:
- an order-created event that a killed dispatch worker held unacknowledged comes back only after
  the durable's ack_wait (120 s), and one naked after failures after a back-off of up to 30 s;
  the test redelivers it (SubmitOrder, as the worker would) once nothing moves any more;
- an order in review is first left to the automatic reconciler (aged past its two minutes, as
  tests/integration/test_reconcile.py does), then resolved as staff would, from the provider's own
  order book: found (with the id the provider gave it) or not placed (sent again); staff's
  resolutions wait until a crash-interrupted submission is 5 minutes old, which the test ages too.

Invariants: every order placed once in smm and at most once upstream, every order final, its status
and money as the provider's outcome says, every user's available + held + charged equal to what
the user was funded, and VerifyLedger ok.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc
import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError
from smm.v1 import accounts_service_pb2 as apb
from smm.v1 import accounts_service_pb2_grpc as apb_grpc
from smm.v1 import orders_service_pb2 as opb
from smm.v1 import orders_service_pb2_grpc as opb_grpc
from smm.v1 import providers_service_pb2 as ppb
from smm.v1 import providers_service_pb2_grpc as ppb_grpc
from smm.v1 import wallet_service_pb2 as wpb
from smm.v1 import wallet_service_pb2_grpc as wpb_grpc

from core.config import Settings
from core.events import Namespace
from ops.embedded import free_port
from ops.grpc_client import wait_for_grpc
from server.common.db import Pool
from tests.fix_db import INTERNAL_TOKEN, TEST_ENCRYPTION_KEYS
from tests.fix_demo import DemoHandle
from tests.fix_grpc import system_metadata
from tests.integration.test_order_crash import channel_to
from workers.dispatch import ORDER_CREATED

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]

SEED = 20_240_611
USERS = 3
ORDERS_PER_USER = 25
FUNDS_MICROS = 10_000_000  # "10.00" each: more than 25 orders of at most 1000 likes (0.325) cost
MIN_KILLS = 8
# Faults on `add` the demo applies to whichever submission comes next; error_body is a refusal.
ADD_FAULTS = ("timeout", "http500", "malformed_json", "html", "error_body")
PROVIDER_TIMEOUT_MS = 1500  # the demo's "timeout" fault holds its reply 3 s (tests/fix_demo.py)
SETTLE_S = 40.0
FINAL = {"completed", "partial", "canceled", "failed"}
SYSTEM = system_metadata()


class Processes:
    """The gRPC server and the dispatch worker as real processes, killed and restarted at will."""

    def __init__(self, settings: Settings, port: int, logs: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMM_")}
        env.update(
            SMM_DATABASE_URL=settings.database_url,
            SMM_NATS_URL=settings.nats_url,
            SMM_NATS_NAMESPACE=settings.nats_namespace,
            SMM_GRPC_ADDR=f"127.0.0.1:{port}",
            SMM_GRPC_TARGET=f"127.0.0.1:{port}",
            SMM_INTERNAL_TOKEN=INTERNAL_TOKEN,
            SMM_PAGE_TOKEN_SECRET="chaos-test",
            SMM_ENCRYPTION_KEYS=TEST_ENCRYPTION_KEYS,
            SMM_RELAY_POLL_S="0.2",
            SMM_VAR_DIR=str(logs),
            # A circuit opened by a run of faults closes again within the test's time.
            SMM_PROVIDER_CIRCUIT_RESET_S="1",
        )
        self._env = env
        self.port = port
        self._logs = logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.kills: Counter[str] = Counter()

    def start(self, name: str) -> None:
        args = ("serve", "grpc") if name == "grpc" else ("worker", name)
        with (self._logs / f"{name}.log").open("ab") as out:
            self.running[name] = subprocess.Popen(
                [sys.executable, "-m", "ops.cli", *args], cwd=ROOT, env=self._env, stdout=out, stderr=out
            )

    def kill(self, name: str) -> None:
        process = self.running[name]
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            self.kills[name] += 1

    def ensure_running(self) -> None:
        for name, process in list(self.running.items()):
            if process.poll() is not None:
                self.start(name)

    def stop_all(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


@dataclass
class Customer:
    user_id: int
    metadata: tuple[tuple[str, str], ...]
    links: list[str] = field(default_factory=list)


async def retried(call: Any, request: Any, metadata: Any, *, timeout_s: float = 30.0) -> Any:
    """Calls until the server answers: it may be dead or starting (UNAVAILABLE), or killed mid-call."""
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                return await call(request, metadata=metadata, timeout=10)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
            await asyncio.sleep(0.1)


async def set_up_shop(channel: grpc.aio.Channel, demo: DemoHandle) -> tuple[list[Customer], int]:
    providers = ppb_grpc.ProvidersServiceStub(channel)
    provider = await providers.CreateProvider(
        ppb.CreateProviderRequest(provider=ppb.Provider(
            name="Demo", api_url=demo.api_url, api_key=demo.api_key, currency="USD",
            timeout_ms=PROVIDER_TIMEOUT_MS)),
        metadata=SYSTEM,
    )  # fmt: skip
    queued = await providers.SyncProvider(ppb.SyncProviderRequest(id=provider.id), metadata=SYSTEM)
    await providers.RunSync(ppb.RunSyncRequest(id=queued.id), metadata=SYSTEM)
    accounts = apb_grpc.AccountsServiceStub(channel)
    wallet = wpb_grpc.WalletServiceStub(channel)
    customers = []
    for n in range(USERS):
        email = f"user{n}@example.com"
        user = await accounts.CreateUser(
            apb.CreateUserRequest(email=email, password="a long password"), metadata=SYSTEM
        )
        login = await accounts.Login(
            apb.LoginRequest(email=email, password="a long password"),
            metadata=(("x-smm-internal-token", INTERNAL_TOKEN),),
        )
        await wallet.CreateBalanceAdjustment(
            wpb.CreateBalanceAdjustmentRequest(
                user_id=user.id, amount=f"{FUNDS_MICROS // 1_000_000}.00", reason="test funds"
            ),
            metadata=SYSTEM,
        )
        customers.append(
            Customer(
                user.id,
                (("x-smm-internal-token", INTERNAL_TOKEN), ("authorization", f"Bearer {login.token}")),
            )
        )
    return customers, provider.id


def link_for(user: int, n: int, rng: random.Random) -> str:
    ending = rng.choices(["done", "partial", "cancel"], weights=[6, 2, 2])[0]
    return f"https://x.com/u{user}-o{n}-{ending}"


async def place_orders(
    orders: opb_grpc.OrdersServiceStub, customer: Customer, user: int, demo: DemoHandle, rng: random.Random
) -> None:
    """The customer's orders one after another, each retried under its request id until answered;
    now and then the next `add` upstream is set to misbehave."""
    for n in range(ORDERS_PER_USER):
        link = link_for(user, n, rng)
        quantity = rng.choice([100, 250, 500, 1000])
        if rng.random() < 0.3:
            await demo.fault(rng.choice(ADD_FAULTS), count=1, actions=["add"])
        request = opb.CreateOrderRequest(
            service_id=2, link=link, quantity=quantity, request_id=f"chaos-{user}-{n}"
        )
        await retried(orders.CreateOrder, request, customer.metadata)
        customer.links.append(link)
        await asyncio.sleep(rng.uniform(0.05, 0.4))


async def until_up(processes: Processes, name: str, nc: NATS, ns: Namespace, port: int) -> None:
    """Until a restarted process serves: the gRPC server answers, the worker pulls events."""
    if name == "grpc":
        await wait_for_grpc(f"127.0.0.1:{port}", 30, metadata=SYSTEM)
        return
    js = nc.jetstream()
    await asyncio.sleep(1.2)  # the killed worker's last pull request (1 s) has expired
    async with asyncio.timeout(30):
        while True:
            try:
                info = await js.consumer_info(ns.stream("ORDERS"), ns.durable(ORDER_CREATED.name))
            except NotFoundError:  # a first start still importing: its durable is not declared yet
                await asyncio.sleep(0.1)
                continue
            if info.num_waiting:
                return
            await asyncio.sleep(0.1)


async def chaos(
    processes: Processes,
    rng: random.Random,
    placing: asyncio.Future[Any],
    nc: NATS,
    ns: Namespace,
    port: int,
    *,
    min_kills: int = MIN_KILLS,
) -> None:
    """SIGKILL the server, the worker or both after 0.5-1.5 s of work (restarting them at once)
    until the orders are placed and at least `min_kills` kills happened."""
    kills = 0
    while not placing.done() or kills < min_kills:
        await asyncio.sleep(rng.uniform(0.5, 1.5))
        victims = rng.choice([("grpc",), ("dispatch",), ("grpc", "dispatch")])
        for name in victims:
            processes.kill(name)
            processes.start(name)
        for name in victims:
            await until_up(processes, name, nc, ns, port)
        kills += 1


async def ready_to_poll(pool: Pool) -> None:
    async with pool.connection() as conn:
        await conn.execute("UPDATE orders SET next_poll_time = now() WHERE next_poll_time IS NOT NULL")


async def poll_tick(pool: Pool, orders: opb_grpc.OrdersServiceStub) -> None:
    """The scheduler's order-poll tick, as the dispatch worker runs it (PollOrders)."""
    await ready_to_poll(pool)
    poll: Any = orders.PollOrders  # typed by the stubs without the timeout keyword
    with contextlib.suppress(grpc.aio.AioRpcError):
        await poll(opb.PollOrdersRequest(), metadata=SYSTEM, timeout=20)


async def keep_polling(pool: Pool, orders: opb_grpc.OrdersServiceStub) -> None:
    while True:
        await poll_tick(pool, orders)
        await asyncio.sleep(0.5)


@dataclass(frozen=True)
class Row:
    id: int
    user_id: int
    link: str
    status: str
    upstream_order_id: str
    price: int
    charged: int
    released: int
    quantity: int


async def all_orders(pool: Pool) -> list[Row]:
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT id, user_id, link, status, upstream_order_id, price_micros, charged_micros,"
                " released_micros, quantity FROM orders ORDER BY id"
            )
        ).fetchall()
    return [Row(*row) for row in rows]


async def statuses(pool: Pool) -> Counter[str]:
    return Counter(row.status for row in await all_orders(pool))


async def until_quiet(pool: Pool, orders: opb_grpc.OrdersServiceStub, quiet_s: float, limit_s: float) -> None:
    """Poll until no order has changed for `quiet_s` (every call in flight has ended), or `limit_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    last = await all_orders(pool)
    since = loop.time()
    while loop.time() < deadline and loop.time() - since < quiet_s:
        await poll_tick(pool, orders)
        await asyncio.sleep(0.3)
        now = await all_orders(pool)
        if now != last:
            last, since = now, loop.time()


async def redeliver(pool: Pool, orders: opb_grpc.OrdersServiceStub) -> int:
    """What JetStream does after ack_wait or a back-off: the order-created event again."""
    stuck = [row.id for row in await all_orders(pool) if row.status in ("pending", "submitting")]
    for order_id in stuck:
        await retried(orders.SubmitOrder, opb.SubmitOrderRequest(id=order_id), SYSTEM)
    return len(stuck)


async def reconcile_automatically(pool: Pool, orders: opb_grpc.OrdersServiceStub) -> None:
    """The reconciler looks at an order in review once it is two minutes old: age them."""
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE orders SET update_time = now() - interval '3 minutes', reconcile_time = NULL"
            " WHERE status = 'needs_review'"
        )
    await retried(orders.PollOrders, opb.PollOrdersRequest(), SYSTEM)


async def resolve_as_staff(pool: Pool, orders: opb_grpc.OrdersServiceStub, demo: DemoHandle) -> int:
    """Staff look at the provider's order book: found there (by its link), or never placed. A
    submission a crash interrupted stays 'starting'; a resolution waits until no call of it can
    still be out (5 minutes): the calls ended with their processes, so that wait is aged away."""
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE order_submissions SET create_time = create_time - interval '6 minutes'"
            " WHERE state = 'starting'"
        )
    upstream = {o["link"]: str(o["order"]) for o in await demo.orders()}
    resolved = 0
    for row in await all_orders(pool):
        if row.status != "needs_review":
            continue
        found = upstream.get(row.link)
        request = opb.ResolveOrderRequest(
            id=row.id,
            resolution="found" if found else "not_placed",
            upstream_order_id=found or "",
            reason="checked at the provider",
        )
        await retried(orders.ResolveOrder, request, SYSTEM)
        resolved += 1
    return resolved


@pytest.fixture
async def processes(settings: Settings, tmp_path: Path) -> AsyncIterator[Processes]:
    running = Processes(settings, free_port(), tmp_path)
    try:
        yield running
    finally:
        running.stop_all()


# About 45-50 s in make test on an ordinary day (killed processes restart): slow days double it.
@pytest.mark.timeout(600)
async def test_kills_mid_flow_never_order_twice_nor_lose_money(
    settings: Settings, pool: Pool, nc: NATS, demo_provider: DemoHandle, processes: Processes
) -> None:
    rng = random.Random(SEED)
    processes.start("grpc")
    port = processes.port
    async with channel_to(port) as channel:
        customers, _ = await set_up_shop(channel, demo_provider)
        processes.start("dispatch")
        await until_up(processes, "dispatch", nc, Namespace(settings.nats_namespace), port)
        orders = opb_grpc.OrdersServiceStub(channel)

        # Orders flow while the processes are killed.
        placing = asyncio.gather(
            *(
                place_orders(orders, c, n, demo_provider, random.Random(SEED + n + 1))
                for n, c in enumerate(customers)
            )
        )
        poller = asyncio.create_task(keep_polling(pool, orders))
        try:
            await chaos(processes, rng, placing, nc, Namespace(settings.nats_namespace), port)
            await placing
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        processes.ensure_running()
        await demo_provider.clear_faults()  # what is left of them must not catch the settling

        # Settle: natural progress first, then what ack_wait / back-off / staff would bring.
        async with asyncio.timeout(SETTLE_S):
            await until_quiet(pool, orders, quiet_s=3.0, limit_s=10.0)
            before_redelivery = await statuses(pool)
            redelivered = await redeliver(pool, orders)
            await until_quiet(pool, orders, quiet_s=2.0, limit_s=6.0)
            in_review = (await statuses(pool))["needs_review"]
            await reconcile_automatically(pool, orders)
            by_staff = await resolve_as_staff(pool, orders, demo_provider)
            while True:  # "not placed" orders go out again (the worker, or this redelivery)
                await until_quiet(pool, orders, quiet_s=1.5, limit_s=5.0)
                await redeliver(pool, orders)
                left = await statuses(pool)
                if not set(left) - FINAL:
                    break
                if left["needs_review"]:
                    await resolve_as_staff(pool, orders, demo_provider)

        rows = await all_orders(pool)
        upstream = await demo_provider.orders()
        async with pool.connection() as conn:
            notes = await (
                await conn.execute(
                    "SELECT count(*) FILTER (WHERE note LIKE '%%interrupted%%'),"
                    " count(*) FILTER (WHERE note LIKE '%%reconciled automatically%%'),"
                    " count(*) FILTER (WHERE note LIKE 'found upstream by staff%%')"
                    " FROM order_events"
                )
            ).fetchone()
        report = (
            f"kills {dict(processes.kills)}; before redelivery {dict(before_redelivery)};"
            f" redelivered {redelivered}; in review {in_review}, resolved by staff {by_staff};"
            f" final {dict(Counter(r.status for r in rows))}; upstream {len(upstream)};"
            f" (interrupted, found automatically, found by staff) {notes}"
        )
        print(report)
        assert min(processes.kills["grpc"], processes.kills["dispatch"]) >= 2, report

        # Every order placed is in smm exactly once, whatever retries the kills caused.
        placed = [link for c in customers for link in c.links]
        assert len(placed) == USERS * ORDERS_PER_USER
        assert sorted(r.link for r in rows) == sorted(placed), report
        assert all(r.status in FINAL for r in rows), [(r.id, r.status) for r in rows if r.status not in FINAL]

        # Never two upstream orders for one of ours; each one upstream is the one smm follows.
        per_link = Counter(o["link"] for o in upstream)
        assert [link for link, n in per_link.items() if n > 1] == [], report
        assert set(per_link) <= set(placed)
        upstream_by_link = {o["link"]: o for o in upstream}
        for row in rows:
            there = upstream_by_link.get(row.link)
            if there is None:  # refused, or never sent: nothing charged
                assert (row.status, row.charged, row.released) == ("failed", 0, row.price), row
                continue
            assert row.upstream_order_id == str(there["order"]), (row, there)
            expected = {"Completed": "completed", "Partial": "partial", "Canceled": "canceled"}[
                there["status"]
            ]
            assert row.status == expected, (row, there)
            assert row.charged + row.released == row.price, row
            if expected == "completed":
                assert row.charged == row.price, row
            if expected == "canceled":
                assert row.charged == 0, row

        # No money lost or created: available + held + charged is what each user was funded.
        await assert_money_whole(pool, channel, customers, rows, report)
        wallet = wpb_grpc.WalletServiceStub(channel)
        for customer in customers:
            balance = await wallet.GetUserBalance(
                wpb.GetUserBalanceRequest(user_id=customer.user_id), metadata=SYSTEM
            )
            assert balance.held in ("0", "0.00", "0.0"), balance


class ChargedRow(Protocol):
    @property
    def user_id(self) -> int: ...
    @property
    def charged(self) -> int: ...


async def assert_money_whole(
    pool: Pool, channel: grpc.aio.Channel, customers: list[Customer], rows: Sequence[ChargedRow], report: str
) -> None:
    """Each customer's available + held + charged is what they were funded, nothing is held, and
    VerifyLedger holds."""
    for customer in customers:
        async with pool.connection() as conn:
            wallet_row = await (
                await conn.execute(
                    "SELECT available_micros, held_micros FROM wallets WHERE user_id = %s",
                    (customer.user_id,),
                )
            ).fetchone()
        assert wallet_row is not None
        available, held = wallet_row
        charged = sum(r.charged for r in rows if r.user_id == customer.user_id)
        assert (available + held + charged, held) == (FUNDS_MICROS, 0), (customer.user_id, report)
    wallet = wpb_grpc.WalletServiceStub(channel)
    verified = await wallet.VerifyLedger(wpb.VerifyLedgerRequest(), metadata=SYSTEM)
    assert verified.ok, verified.problems
