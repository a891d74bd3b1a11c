"""Chaos, second part: customers cancel, and drip-feeds smm sends itself go out run by run, while
the gRPC server and the dispatch worker are SIGKILLed at seeded moments.

The set-up, the kills and the settling steps are test_crash_chaos.py's (imported from there). On
top of its ordinary orders (Instagram Likes, which its provider lets cancel), each customer places
drip-feeds of the demo's SEO service, offered with drip-feed by staff (UpdateService) although the
provider has none: smm sends each run as an upstream order of its own when it is due. The test plays
the clock (a drip-feed's next run is made due on every scheduler tick, PollOrders) and the customers,
who cancel about half of their orders (CancelOrder with their own metadata) at a random moment after
placing them: still pending in smm, being sent (some `add` calls are slowed down), at the provider
(the demo's orders take 3 x 0.4 s), between two runs, or already finished. A cancel smm answers
"try again in a moment" is tried again, as a customer would.

Settling is the first test's, plus a run whose submission a kill interrupted: it is aged past its
5 minutes so that the tick sends it to review, and staff resolve it from the provider's book (an
upstream order of the drip-feed's link no other run has is the run's; none left: not placed).

Invariants: every order final; no link (and no run) twice upstream and every run's upstream order
the one smm follows; statuses and money as the provider's book says; a canceled order charged 0 and
its price released exactly once (the ledger); a drip-feed releases exactly the undelivered runs'
share; no cancel lost (a cancel the provider accepted never ends Completed; a drip-feed cancel sends
no run after it); every user's available + held + charged == funded with nothing held; VerifyLedger.
A cancel answered OK says what it did: canceled (taken before the order was sent), tracked (asked
of the provider), or the end the order reached while the provider was asked. The last test pins that answer down without the chaos.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from nats.aio.client import Client as NATS
from smm.v1 import catalog_service_pb2 as cpb
from smm.v1 import catalog_service_pb2_grpc as cpb_grpc
from smm.v1 import orders_service_pb2 as opb
from smm.v1 import orders_service_pb2_grpc as opb_grpc

from core.config import Settings
from core.events import Namespace
from ops.embedded import free_port
from server.common.db import Pool
from tests.fix_demo import DemoFactory, DemoHandle
from tests.integration.test_crash_chaos import (
    ADD_FAULTS,
    FINAL,
    SYSTEM,
    Customer,
    Processes,
    assert_money_whole,
    chaos,
    reconcile_automatically,
    redeliver,
    retried,
    set_up_shop,
    until_up,
)
from tests.integration.test_order_crash import channel_to

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEED = 20_240_612
ORDINARY_PER_USER = 10
DRIPFEEDS_PER_USER = 3
MIN_KILLS = 6
STEP_S = 0.4  # the demo's orders end 3 steps after they are placed: time to cancel them there
SETTLE_S = 45.0
LIKES, SEO = "2", "4"  # the demo's services: Likes may be canceled; SEO has no drip-feed upstream
UPSTREAM = {"Completed": "completed", "Partial": "partial", "Canceled": "canceled"}
RUN_SENT = {"submitting", "in_progress", "processing", "completed", "partial", "needs_review"}


@dataclass
class Placed:
    order_id: int
    user: int
    link: str
    dripfeed: bool


@dataclass
class Cancel:
    answered: str  # "ok" or the refusal
    status: int = 0  # the order's status in the answer
    runs_out: int = 0  # a drip-feed's runs that had gone out (or may have) when the cancel was answered


@dataclass
class Book:
    placed: list[Placed]
    cancels: dict[int, Cancel]


async def services_of(channel: grpc.aio.Channel, provider_id: int) -> dict[str, int]:
    """smm's service id of each of the provider's services."""
    catalog = cpb_grpc.CatalogServiceStub(channel)
    listed = await catalog.ListAdminServices(
        cpb.ListAdminServicesRequest(provider_id=provider_id, page_size=100), metadata=SYSTEM
    )
    return {s.provider.upstream_service_id: s.service.id for s in listed.services}


async def offer_dripfeed(channel: grpc.aio.Channel, service_id: int) -> None:
    catalog = cpb_grpc.CatalogServiceStub(channel)
    await catalog.UpdateService(
        cpb.UpdateServiceRequest(
            service=cpb.Service(id=service_id, dripfeed=True),
            update_mask=field_mask_pb2.FieldMask(paths=["dripfeed"]),
        ),
        metadata=SYSTEM,
    )
    admin = await catalog.GetAdminService(cpb.GetAdminServiceRequest(id=service_id), metadata=SYSTEM)
    assert (admin.service.dripfeed, admin.upstream_dripfeed) == (True, False)  # smm sends the runs


async def runs_out(pool: Pool, order_id: int) -> int:
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "SELECT count(*) FROM order_runs WHERE order_id = %s"
                " AND (upstream_order_id <> '' OR state = ANY(%s))",
                (order_id, list(RUN_SENT)),
            )
        ).fetchone()
    assert row is not None
    return int(row[0])


async def cancel_later(
    orders: opb_grpc.OrdersServiceStub, pool: Pool, customer: Customer, placed: Placed, delay_s: float,
    book: Book,
) -> None:  # fmt: skip
    """The customer cancels after `delay_s`; "try again in a moment" is tried again a few times."""
    await asyncio.sleep(delay_s)
    for _ in range(10):
        try:
            reply = await retried(
                orders.CancelOrder, opb.CancelOrderRequest(id=placed.order_id), customer.metadata
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
            book.cancels[placed.order_id] = Cancel(exc.details() or "refused")
            if "try again" not in (exc.details() or ""):
                return
            await asyncio.sleep(0.3)
            continue
        out = await runs_out(pool, placed.order_id) if placed.dripfeed else 0
        book.cancels[placed.order_id] = Cancel("ok", reply.status, out)
        return


async def customer_flow(
    orders: opb_grpc.OrdersServiceStub, pool: Pool, demo: DemoHandle, customer: Customer, user: int,
    services: dict[str, int], rng: random.Random, book: Book,
) -> None:  # fmt: skip
    """The customer's orders one after another (each retried under its request id), some of them
    canceled a little later; now and then the next `add` upstream misbehaves or is slow."""
    kinds = [False] * ORDINARY_PER_USER + [True] * DRIPFEEDS_PER_USER
    rng.shuffle(kinds)
    cancels = []
    for n, dripfeed in enumerate(kinds):
        ending = rng.choices(["done", "partial", "cancel"], weights=[6, 2, 2])[0]
        roll = rng.random()
        if roll < 0.2:
            await demo.fault(rng.choice(ADD_FAULTS), count=1, actions=["add"])
        elif roll < 0.4:  # slow: a cancel may come while the order (or run) is being sent
            await demo.fault("latency", count=1, actions=["add"], delay_s=rng.uniform(0.3, 1.0))
        if dripfeed:
            link = f"https://example.com/u{user}-d{n}-{ending}"
            request = opb.CreateOrderRequest(
                service_id=services[SEO], link=link, quantity=rng.choice([100, 150]), runs=rng.choice([2, 3]),
                interval=1, keywords="smm panel", request_id=f"chaos-cancel-{user}-{n}",
            )  # fmt: skip
        else:
            link = f"https://x.com/u{user}-o{n}-{ending}"
            request = opb.CreateOrderRequest(
                service_id=services[LIKES], link=link, quantity=rng.choice([100, 250, 500, 1000]),
                request_id=f"chaos-cancel-{user}-{n}",
            )  # fmt: skip
        order = await retried(orders.CreateOrder, request, customer.metadata)
        placed = Placed(order.id, customer.user_id, link, dripfeed)
        book.placed.append(placed)
        if rng.random() < (0.7 if dripfeed else 0.5):
            delay = rng.uniform(0.0, 2.5)
            cancels.append(asyncio.create_task(cancel_later(orders, pool, customer, placed, delay, book)))
        await asyncio.sleep(rng.uniform(0.05, 0.4))
    await asyncio.gather(*cancels)


async def clock(pool: Pool, *, all_runs: bool) -> None:
    """Time moves on: what is to be polled is due, and a drip-feed's next run (or every run) too."""
    async with pool.connection() as conn:
        await conn.execute("UPDATE orders SET next_poll_time = now() WHERE next_poll_time IS NOT NULL")
        await conn.execute("UPDATE order_runs SET next_poll_time = now() WHERE next_poll_time IS NOT NULL")
        if all_runs:
            await conn.execute("UPDATE order_runs SET due_time = now() WHERE state = 'scheduled'")
        else:
            await conn.execute(
                "UPDATE order_runs r SET due_time = now() WHERE r.state = 'scheduled' AND r.due_time > now()"
                " AND r.run_no = (SELECT min(run_no) FROM order_runs s"
                "                 WHERE s.order_id = r.order_id AND s.state = 'scheduled')"
                " AND NOT EXISTS (SELECT 1 FROM order_runs t WHERE t.order_id = r.order_id"
                "                 AND t.state = 'scheduled' AND t.due_time <= now())"
            )


async def tick(pool: Pool, orders: opb_grpc.OrdersServiceStub, *, all_runs: bool) -> None:
    """The scheduler's order-poll tick (PollOrders: polls orders and runs, sends due runs)."""
    await clock(pool, all_runs=all_runs)
    poll: Any = orders.PollOrders  # typed by the stubs without the timeout keyword
    with contextlib.suppress(grpc.aio.AioRpcError):
        await poll(opb.PollOrdersRequest(), metadata=SYSTEM, timeout=20)


async def keep_ticking(pool: Pool, orders: opb_grpc.OrdersServiceStub) -> None:
    while True:
        await tick(pool, orders, all_runs=False)
        await asyncio.sleep(0.5)


async def snapshot(pool: Pool) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    async with pool.connection() as conn:
        orders = await (
            await conn.execute("SELECT id, status, cancel_state, released_micros FROM orders ORDER BY id")
        ).fetchall()
        runs = await (
            await conn.execute(
                "SELECT order_id, run_no, state, upstream_order_id FROM order_runs ORDER BY 1, 2"
            )
        ).fetchall()
    return list(orders), list(runs)


async def until_quiet(pool: Pool, orders: opb_grpc.OrdersServiceStub, quiet_s: float, limit_s: float) -> None:
    """Tick until no order nor run has changed for `quiet_s` (every call in flight ended), or `limit_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    last = await snapshot(pool)
    since = loop.time()
    while loop.time() < deadline and loop.time() - since < quiet_s:
        await tick(pool, orders, all_runs=True)
        await asyncio.sleep(0.3)
        now = await snapshot(pool)
        if now != last:
            last, since = now, loop.time()


async def statuses(pool: Pool) -> Counter[str]:
    return Counter(row[1] for row in (await snapshot(pool))[0])


async def interrupted_runs_to_review(pool: Pool, orders: opb_grpc.OrdersServiceStub) -> None:
    """A run a kill interrupted stays submitting; after 5 minutes the tick sends it to review (the
    calls ended with their processes, so the wait is aged away)."""
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE order_runs SET update_time = update_time - interval '6 minutes' WHERE state = 'submitting'"
        )
    await tick(pool, orders, all_runs=True)


async def resolve_as_staff(pool: Pool, orders: opb_grpc.OrdersServiceStub, demo: DemoHandle) -> int:
    """Staff look at the provider's book: an order found there by its link, or never placed; a run
    in review is the drip-feed's upstream order no other run has, or never placed."""
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE order_submissions SET create_time = create_time - interval '6 minutes'"
            " WHERE state = 'starting'"
        )
        in_review = await (
            await conn.execute("SELECT id, link, panel_dripfeed FROM orders WHERE status = 'needs_review'")
        ).fetchall()
    upstream = await demo.orders()
    resolved = 0
    for order_id, link, dripfeed in in_review:
        at_provider = [str(o["order"]) for o in upstream if o["link"] == link]
        if dripfeed:
            async with pool.connection() as conn:
                claimed = {
                    r[0]
                    for r in await (
                        await conn.execute(
                            "SELECT upstream_order_id FROM order_runs WHERE order_id = %s AND upstream_order_id <> ''",
                            (order_id,),
                        )
                    ).fetchall()
                }
            at_provider = [u for u in at_provider if u not in claimed]
        found = at_provider[0] if at_provider else ""
        request = opb.ResolveOrderRequest(
            id=order_id,
            resolution="found" if found else "not_placed",
            upstream_order_id=found,
            reason="checked at the provider",
        )
        try:
            await retried(orders.ResolveOrder, request, SYSTEM)
        except grpc.aio.AioRpcError as exc:  # moved on meanwhile: looked at again on the next round
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
            continue
        resolved += 1
    return resolved


async def settle(pool: Pool, orders: opb_grpc.OrdersServiceStub, demo: DemoHandle) -> str:
    """Natural progress, then what ack_wait / back-off / the 5 minutes / staff would bring."""
    await until_quiet(pool, orders, quiet_s=3.0, limit_s=10.0)
    before = await statuses(pool)
    redelivered = await redeliver(pool, orders)
    await until_quiet(pool, orders, quiet_s=2.0, limit_s=6.0)
    by_staff = 0
    while True:
        await interrupted_runs_to_review(pool, orders)
        await reconcile_automatically(pool, orders)
        by_staff += await resolve_as_staff(pool, orders, demo)
        await until_quiet(pool, orders, quiet_s=1.5, limit_s=5.0)
        redelivered += await redeliver(pool, orders)
        left = await statuses(pool)
        if not set(left) - FINAL:
            return (
                f"before redelivery {dict(before)}; redelivered {redelivered}; resolved by staff {by_staff}"
            )


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
    units: int
    dripfeed: bool
    cancel_state: str
    cancel_message: str


@dataclass(frozen=True)
class Run:
    run_no: int
    state: str
    quantity: int
    remains: int | None
    upstream_order_id: str


@pytest.fixture
async def processes(settings: Settings, tmp_path: Path) -> AsyncIterator[Processes]:
    running = Processes(settings, free_port(), tmp_path)
    try:
        yield running
    finally:
        running.stop_all()


def share(price: int, remains: int, units: int) -> int:
    """price x remains / units, half up, at most the price (tracking.split_money)."""
    quotient, remainder = divmod(price * remains, units)
    return min(price, quotient + (1 if 2 * remainder >= units else 0))


# About 45 s in make test on an ordinary day (killed processes restart): slow days double it.
@pytest.mark.timeout(600)
async def test_cancels_and_dripfeed_runs_under_kills_lose_nothing_and_send_nothing_twice(
    settings: Settings, pool: Pool, nc: NATS, demo_provider_factory: DemoFactory, processes: Processes
) -> None:
    rng = random.Random(SEED)
    demo = await demo_provider_factory(step_s=STEP_S)
    ns = Namespace(settings.nats_namespace)
    processes.start("grpc")
    port = processes.port
    async with channel_to(port) as channel:
        customers, provider_id = await set_up_shop(channel, demo)
        services = await services_of(channel, provider_id)
        await offer_dripfeed(channel, services[SEO])
        processes.start("dispatch")
        await until_up(processes, "dispatch", nc, ns, port)
        orders = opb_grpc.OrdersServiceStub(channel)

        book = Book([], {})
        flows = asyncio.gather(
            *(
                customer_flow(orders, pool, demo, c, n, services, random.Random(SEED + n + 1), book)
                for n, c in enumerate(customers)
            )
        )
        ticker = asyncio.create_task(keep_ticking(pool, orders))
        try:
            await chaos(processes, rng, flows, nc, ns, port, min_kills=MIN_KILLS)
            await flows
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        processes.ensure_running()
        await demo.clear_faults()
        async with asyncio.timeout(SETTLE_S):
            settled = await settle(pool, orders, demo)

        async with pool.connection() as conn:
            rows = [
                Row(*r)
                for r in await (
                    await conn.execute(
                        "SELECT id, user_id, link, status, upstream_order_id, price_micros, charged_micros,"
                        " released_micros, quantity * greatest(runs, 1), panel_dripfeed, cancel_state, cancel_message"
                        " FROM orders ORDER BY id"
                    )
                ).fetchall()
            ]
            runs: dict[int, list[Run]] = {}
            for order_id, *run in await (
                await conn.execute(
                    "SELECT order_id, run_no, state, quantity, remains, upstream_order_id"
                    " FROM order_runs ORDER BY order_id, run_no"
                )
            ).fetchall():
                runs.setdefault(order_id, []).append(Run(*run))
            ledger = await (
                await conn.execute(
                    "SELECT reference, kind, count(*), sum(amount_micros) FROM ledger_transactions"
                    " WHERE reference LIKE 'order:%%' GROUP BY reference, kind"
                )
            ).fetchall()
        upstream = await demo.orders()
        cancels = Counter(
            ("dripfeed" if p.dripfeed else "order", c.answered if c.answered == "ok" else "refused")
            for p in book.placed
            if (c := book.cancels.get(p.order_id)) is not None
        )
        answers = Counter(
            (
                "dripfeed" if p.dripfeed else "order",
                opb.OrderStatus.Name(opb.OrderStatus.ValueType(c.status))
                if c.answered == "ok"
                else c.answered[:40],
            )
            for p in book.placed
            if (c := book.cancels.get(p.order_id)) is not None
        )
        report = (
            f"kills {dict(processes.kills)}; cancels {dict(answers)}; {settled};"
            f" final {dict(Counter((r.dripfeed, r.status) for r in rows))}; upstream {len(upstream)}"
        )
        print(report)
        assert min(processes.kills["grpc"], processes.kills["dispatch"]) >= 2, report
        assert cancels[("order", "ok")] > 0, report
        assert cancels[("dripfeed", "ok")] > 0, report

        # Every order placed is in smm once, and final.
        per_customer = len(customers) * (ORDINARY_PER_USER + DRIPFEEDS_PER_USER)
        assert sorted((r.id, r.link) for r in rows) == sorted((p.order_id, p.link) for p in book.placed), (
            report
        )
        assert len(rows) == per_customer
        assert [(r.id, r.status) for r in rows if r.status not in FINAL] == [], report

        # Nothing twice upstream: an order's link at most once, a drip-feed's runs each once.
        at_provider: dict[str, list[dict[str, Any]]] = {}
        for o in upstream:
            at_provider.setdefault(o["link"], []).append(o)
        assert set(at_provider) <= {r.link for r in rows}
        for row in rows:
            there = at_provider.get(row.link, [])
            cancel = book.cancels.get(row.id)
            if row.dripfeed:
                check_dripfeed(row, runs[row.id], there, cancel, report)
                continue
            assert len(there) <= 1, (row, there, report)
            if cancel is not None and cancel.answered == "ok":
                # Taken before it was sent (canceled, said so), asked of the provider (tracked), or
                # the order ended while the provider was asked: then the answer is that end, for good.
                ended = {opb.ORDER_STATUS_COMPLETED: "completed", opb.ORDER_STATUS_PARTIAL: "partial"}
                assert cancel.status in (
                    opb.ORDER_STATUS_CANCELED,
                    opb.ORDER_STATUS_IN_PROGRESS,
                    opb.ORDER_STATUS_PROCESSING,
                    *ended,
                ), (row, cancel)
                if cancel.status in ended:
                    assert row.status == ended[cancel.status], (row, cancel)
                if cancel.status == opb.ORDER_STATUS_CANCELED:
                    assert (there, row.status) == ([], "canceled"), (row, there, cancel)
            if not there:  # refused, never sent, or canceled before it was: nothing charged
                assert row.status in ("failed", "canceled"), (row, cancel)
                assert (row.charged, row.released) == (0, row.price), row
                continue
            assert row.upstream_order_id == str(there[0]["order"]), (row, there)
            assert row.status == UPSTREAM[there[0]["status"]], (row, there, cancel)
            assert row.charged + row.released == row.price, row
            if row.status == "completed":
                assert row.charged == row.price, row
            if row.status == "canceled":
                assert (row.charged, row.released) == (0, row.price), row
            if row.cancel_state == "requested" and not row.cancel_message:
                # The provider took the cancel, and cancels at once (the demo's book): the order is
                # never Completed and charged in full.
                assert row.status in ("partial", "canceled"), (row, there, cancel)

        # The ledger: one hold of the price, the release at most once and what the order says.
        moves: dict[tuple[str, str], tuple[int, int]] = {(r, k): (n, s) for r, k, n, s in ledger}
        for row in rows:
            reference = f"order:{row.id}"
            assert moves[(reference, "hold")] == (1, -row.price), row
            released = moves.get((reference, "release"), (0, 0))
            assert released == ((1, row.released) if row.released else (0, 0)), (row, released)
            assert moves.get((reference, "settle"), (0, 0))[0] == (1 if row.charged else 0), row

        # No money lost or created, nothing held.
        await assert_money_whole(pool, channel, customers, rows, report)


def check_dripfeed(
    row: Row, runs: list[Run], there: list[dict[str, Any]], cancel: Cancel | None, report: str
) -> None:
    """A drip-feed smm sent itself: each run once upstream, as the provider ended it; the order
    ended with its runs, and released exactly the undelivered runs' share of its price."""
    sent = [r.upstream_order_id for r in runs if r.upstream_order_id]
    assert len(sent) == len(set(sent)), (row, runs)
    by_id = {str(o["order"]): o for o in there}
    assert sorted(sent) == sorted(by_id), (row, runs, there, report)  # no run twice, none unknown
    for run in runs:
        if not run.upstream_order_id:
            assert (run.state, run.remains) in (("canceled", run.quantity), ("failed", run.quantity)), (
                row,
                run,
            )
            continue
        upstream = by_id[run.upstream_order_id]
        assert run.state == UPSTREAM[upstream["status"]], (row, run, upstream)
        expected = {"completed": 0, "canceled": run.quantity}.get(run.state, int(upstream["remains"]))
        assert run.remains == expected, (row, run, upstream)
    remains = sum(r.remains if r.remains is not None else r.quantity for r in runs)
    assert row.units == sum(r.quantity for r in runs), (row, runs)
    if remains == 0:
        status = "completed"
    elif remains == row.units:
        status = "failed" if all(r.state == "failed" for r in runs) else "canceled"
    else:
        status = "partial"
    assert row.status == status, (row, runs)
    assert (row.charged, row.released) == (
        row.price - share(row.price, remains, row.units),
        share(row.price, remains, row.units),
    ), (row, runs)
    if cancel is not None and cancel.answered == "ok":
        # Nothing went out after the cancel: only the runs out (or being sent) when it was taken.
        assert len(sent) <= cancel.runs_out, (row, runs, cancel, report)
        assert all(r.state != "scheduled" for r in runs), (row, runs)
