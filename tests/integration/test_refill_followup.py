"""Refills smm cannot follow: one a provider took without an id, and one whose status word smm
cannot read. Both end or surface instead of being shown done at once or asked about every tick."""

from __future__ import annotations

from typing import Any

import pytest
from smm.v1 import events_pb2
from smm.v1 import orders_service_pb2 as opb

from server.common.db import Pool
from server.providers.adapters import standard
from server.providers.adapters.base import RefillState
from server.providers.adapters.parse import UnrecognisedWord, parse_refill
from tests.fix_grpc import system_metadata
from tests.fix_shop import Shop

pytestmark = pytest.mark.integration


async def _refill(shop: Shop, user: dict[str, str], order: dict[str, Any]) -> dict[str, Any]:
    asked = await shop.http.post(f"/api/v1/dashboard/orders/{order['id']}/refill", json={}, headers=user)
    assert asked.status_code == 200, asked.text
    refill: dict[str, Any] = asked.json()
    return refill


async def _completed_events(pool: Pool) -> list[int]:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT payload FROM outbox_events WHERE subject = 'smm.orders.refill.completed' ORDER BY id"
        )
        return [events_pb2.RefillCompleted.FromString(r[0]).refill_id for r in await cursor.fetchall()]


async def _poll(shop: Shop) -> None:
    await shop.orders.PollOrders(opb.PollOrdersRequest(), metadata=system_metadata())


async def test_a_refill_taken_without_an_id_is_not_shown_done_and_ends_with_its_email(
    shop: Shop, pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A provider answering ``{"status": "success", "message": ...}`` (PROTOCOL.md 3.4) leaves no id
    to follow. The refill was shown "Completed" at once, though nothing was known to be done, and
    its customer never got the mail a refill that ends sends (no ``smm.orders.refill.completed``)."""
    user = await shop.user("ann@example.com", "5.00")
    order = await shop.completed_order(user, "https://x.com/no-id")
    monkeypatch.setattr(
        standard, "parse_refill", lambda data: parse_refill({"status": "success", "message": "queued"})
    )
    refill = await _refill(shop, user, order)
    monkeypatch.undo()
    assert refill["status"] == "in_progress"  # the provider took it: what smm knows, and no more
    staff = await shop.staff_order(order["id"])
    assert "without an id" in staff["refills"][0]["message"]
    assert "without an id" in staff["timeline"][-1]["note"]
    assert set(await _completed_events(pool)) == set()
    again = await shop.http.post(f"/api/v1/dashboard/orders/{order['id']}/refill", json={}, headers=user)
    assert again.status_code == 400  # the provider is still on it

    await _poll(shop)  # not yet: the provider's time for it has not passed
    assert set(await _completed_events(pool)) == set()
    async with pool.connection() as conn:
        await conn.execute("UPDATE order_refills SET next_poll_time = now() WHERE id = %s", (refill["id"],))
    await _poll(shop)
    assert await _completed_events(pool) == [int(refill["id"])]  # the mail of every ended refill
    ended = (await shop.staff_order(order["id"]))["refills"][0]
    assert ended["status"] == "completed"
    assert "without an id" in ended["message"]
    await _poll(shop)
    assert await _completed_events(pool) == [int(refill["id"])]  # once


def _unreadable(data: object) -> object:
    raise UnrecognisedWord("refill_status: unrecognised state 'Refilling'")


async def test_a_refill_whose_status_cannot_be_read_is_asked_less_often_and_surfaces_once(
    shop: Shop, pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A status word smm cannot read left the refill as it was, asked about again every 30 s (60 s
    in the single form) however old it was, for ever, with nothing for staff to see."""
    user = await shop.user("bob@example.com", "5.00")
    order = await shop.completed_order(user, "https://x.com/odd-word")
    refill = await _refill(shop, user, order)
    async with pool.connection() as conn:  # two days old, no readable answer for two hours
        await conn.execute(
            "UPDATE order_refills SET create_time = now() - interval '2 days',"
            " update_time = now() - interval '2 hours', next_poll_time = now() WHERE id = %s",
            (refill["id"],),
        )
    monkeypatch.setattr(standard, "parse_refill_status", _unreadable)
    await _poll(shop)
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT status, next_poll_time - now() > interval '20 minutes' FROM order_refills WHERE id = %s",
            (refill["id"],),
        )
        assert await cursor.fetchone() == ("pending", True)  # as an order of its age: 30 min
        await conn.execute("UPDATE order_refills SET next_poll_time = now() WHERE id = %s", (refill["id"],))
    await _poll(shop)
    staff = await shop.staff_order(order["id"])
    notes = [e["note"] for e in staff["timeline"] if "cannot be read" in e.get("note", "")]
    assert len(notes) == 1, staff["timeline"]  # once, not on every look
    assert "Refilling" in notes[0]
    assert "cannot be read" in staff["refills"][0]["message"]

    monkeypatch.undo()  # the provider speaks plainly again: the note on the refill goes
    async with pool.connection() as conn:
        # An odd word is an answer: not retried, and no failure for the provider's circuit (it once
        # opened it, and every call to the provider, new orders included, was refused).
        cursor = await conn.execute("SELECT circuit_phase, circuit_failures FROM provider_health")
        assert await cursor.fetchall() == [("closed", 0)]
        await conn.execute("UPDATE order_refills SET next_poll_time = now() WHERE id = %s", (refill["id"],))
    await _poll(shop)
    assert "cannot be read" not in (await shop.staff_order(order["id"]))["refills"][0].get("message", "")


async def test_a_refill_left_out_of_a_list_answer_is_asked_as_an_order_of_its_age(
    shop: Shop, pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asked about several refills, a provider whose entry for one cannot be read (left out of the
    answer) had that refill asked about again in 30 s, on every tick, however old it was."""
    user = await shop.user("cat@example.com", "5.00")
    refills = [
        await _refill(shop, user, await shop.completed_order(user, f"https://x.com/list{n}")) for n in (1, 2)
    ]
    ids = [int(r["id"]) for r in refills]
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE order_refills SET create_time = now() - interval '2 days', next_poll_time = now()"
            " WHERE id = ANY(%s)",
            (ids,),
        )
    monkeypatch.setattr(
        standard,
        "parse_refill_statuses",
        lambda data, asked: {asked[0]: RefillState.IN_PROGRESS},  # the second one's entry unreadable
    )
    await _poll(shop)
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT bool_and(next_poll_time - now() > interval '20 minutes') FROM order_refills"
            " WHERE id = ANY(%s)",
            (ids,),
        )
        assert await cursor.fetchone() == (True,)
