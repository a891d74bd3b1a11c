"""The reseller ``add`` under lost answers: an attempt that ends without telling whether it placed
the order (a deadline, a dropped connection) is tried again under the same idempotency key, so the
client gets the one order's id and is charged once, whether or not the first attempt committed.
And the price ``services`` shows: the caller's own (their discount applied), which ``add`` charges."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from server.common.db import Pool
from server.orders.logic import OrdersLogic, Placement
from server.orders.repo import OrderRow
from tests.fix_edge import RunningEdge
from tests.fix_shop import Shop
from tests.integration.test_reseller import call, reseller_key

pytestmark = pytest.mark.integration


class Attempts:
    """Counts the server's CreateOrder placements; the first one's answer can be made late."""

    def __init__(self, late_first_answer_s: float = 0.0) -> None:
        self.count = 0
        self.late_first_answer_s = late_first_answer_s
        self.retried = asyncio.Event()


@pytest.fixture
def attempts(monkeypatch: pytest.MonkeyPatch) -> Attempts:
    seen = Attempts()
    place = OrdersLogic.place

    async def counted(self: OrdersLogic, placement: Placement) -> OrderRow:
        seen.count += 1
        first = seen.count == 1
        if seen.count == 2:
            seen.retried.set()
        row = await place(self, placement)
        if first and seen.late_first_answer_s:
            await asyncio.sleep(seen.late_first_answer_s)  # committed; the answer is late
        return row

    monkeypatch.setattr(OrdersLogic, "place", counted)
    return seen


def add_deadline(edge: RunningEdge, seconds: float) -> None:
    edge.app.ctx.settings = edge.app.ctx.settings.model_copy(update={"reseller_add_timeout_s": seconds})


async def placed(pool: Pool, link: str) -> list[tuple[Any, ...]]:
    """(order id, price) of each order for the link, and the holds made for them."""
    async with pool.connection() as conn:
        orders = await (
            await conn.execute("SELECT id, price_micros FROM orders WHERE link = %s ORDER BY id", (link,))
        ).fetchall()
        holds = await (
            await conn.execute(
                "SELECT reference, amount_micros FROM ledger_transactions"
                " WHERE kind = 'hold' AND reference = ANY(%s)",
                ([f"order:{o[0]}" for o in orders],),
            )
        ).fetchall()
    return [*orders, *holds]


async def test_an_add_whose_answer_is_lost_after_it_committed_answers_that_order(
    shop: Shop, edge: RunningEdge, pool: Pool, attempts: Attempts
) -> None:
    key, user = await reseller_key(shop, "ann@example.com", "5.00")
    add_deadline(edge, 1.0)
    attempts.late_first_answer_s = 3.0  # past the edge's deadline, after the order committed
    link = "https://x.com/lost-answer"
    added = await call(shop.http, key, action="add", service=shop.service_id("2"), link=link, quantity=1000)
    [(order_id, price), (reference, held)] = await placed(pool, link)
    assert added == {"order": order_id}
    assert attempts.count == 2
    assert (reference, held, price) == (f"order:{order_id}", -325_000, 325_000)
    assert await shop.balance(user) == ("4.675", "0.325")
    assert (await shop.verify()).ok


async def test_a_retry_that_finds_the_first_attempt_still_running_gives_one_order(
    shop: Shop, edge: RunningEdge, pool: Pool, attempts: Attempts
) -> None:
    """The first attempt waits on the wallet (a lock held here) past the edge's deadline; the retry
    comes while it may still run. Whichever commits, the other answers its order."""
    key, user = await reseller_key(shop, "bob@example.com", "5.00")
    add_deadline(edge, 1.0)
    link = "https://x.com/in-flight"
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(
            "SELECT 1 FROM wallets w JOIN users u ON u.id = w.user_id WHERE u.email = %s FOR UPDATE OF w",
            ("bob@example.com",),
        )
        adding = asyncio.create_task(
            call(shop.http, key, action="add", service=shop.service_id("2"), link=link, quantity=1000)
        )
        retried = asyncio.create_task(attempts.retried.wait())
        await asyncio.wait([adding, retried], timeout=5, return_when=asyncio.FIRST_COMPLETED)
        retried.cancel()
        await asyncio.sleep(0.1)  # the retry reaches the lock too
    added = await adding
    assert "order" in added, added
    [(order_id, _), (reference, held)] = await placed(pool, link)
    assert added == {"order": order_id}
    assert attempts.count == 2
    assert (reference, held) == (f"order:{order_id}", -325_000)
    assert await shop.balance(user) == ("4.675", "0.325")
    assert (await shop.verify()).ok


async def test_an_add_honours_the_clients_idempotency_key(shop: Shop, pool: Pool) -> None:
    key, user = await reseller_key(shop, "cy@example.com", "5.00")
    link = "https://x.com/keyed"
    form = {"key": key, "action": "add", "service": shop.service_id("2"), "link": link, "quantity": "1000"}
    headers = {"Idempotency-Key": "reseller-client-key-1"}
    first, second = [
        (await shop.http.post("/api/v1/reseller", data=form, headers=headers)).json() for _ in "12"
    ]
    assert first == second
    [(order_id, _), _hold] = await placed(pool, link)
    assert first == {"order": order_id}
    other = await shop.http.post("/api/v1/reseller", data={**form, "quantity": "2000"}, headers=headers)
    assert other.json() == {"error": "this Idempotency-Key was already used for a different order"}
    # Without the header every request is an order of its own, as the protocol has it.
    again = [
        await call(shop.http, key, action="add", service=form["service"], link=f"{link}/{n}", quantity=1000)
        for n in range(2)
    ]
    assert again[0] != again[1]
    assert await shop.balance(user) == ("4.025", "0.975")


async def test_services_shows_the_callers_own_rate_and_add_charges_it(shop: Shop, pool: Pool) -> None:
    likes, followers = shop.service_id("2"), shop.service_id("1")
    key, user = await reseller_key(shop, "dee@example.com", "5.00")
    plain_key, _ = await reseller_key(shop, "eve@example.com", "5.00")
    async with pool.connection() as conn:
        found = await (await conn.execute("SELECT id FROM users WHERE email = 'dee@example.com'")).fetchone()
    assert found is not None
    discounted = await shop.http.patch(
        f"/api/v1/admin/users/{found[0]}", json={"discountPercent": "33.33"}, headers=shop.admin
    )
    assert discounted.status_code == 200, discounted.text

    def rates(listed: list[dict[str, Any]]) -> dict[str, str]:
        return {str(s["service"]): s["rate"] for s in listed if str(s["service"]) in (likes, followers)}

    # 0.325 x 0.6667 = 0.2166775 (half up: 0.216678); 1.17 x 0.6667 = 0.780039.
    assert rates(await call(shop.http, key, action="services")) == {likes: "0.216678", followers: "0.780039"}
    assert rates(await call(shop.http, plain_key, action="services")) == {likes: "0.325", followers: "1.17"}
    public = (await shop.http.get(f"/api/v1/public/services/{likes}")).json()
    assert (public["rate"], public["callerRate"]) == ("0.325", "0.325")
    mine = (await shop.http.get(f"/api/v1/public/services/{likes}", headers=user)).json()
    assert (mine["rate"], mine["callerRate"]) == ("0.325", "0.216678")

    added = await call(
        shop.http, key, action="add", service=likes, link="https://x.com/priced", quantity=1000
    )
    status = await call(shop.http, key, action="status", order=added["order"])
    assert status["charge"] == "0.216678"
    assert await shop.balance(user) == ("4.783322", "0.216678")
