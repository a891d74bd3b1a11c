"""Refills smm cannot follow: one a provider took without an id, and one whose status word smm
cannot read. Both end or surface instead of being shown done at once or asked about every tick."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from smm.v1 import events_pb2
from smm.v1 import orders_service_pb2 as opb
from smm.v1 import system_service_pb2 as spb
from smm.v1 import system_service_pb2_grpc as spb_grpc

from core.config import Settings
from server.common.db import Pool
from server.main import ServerHandle
from server.providers.adapters import standard
from server.providers.adapters.base import RefillState
from server.providers.adapters.parse import UnrecognisedWord, parse_refill
from tests.fix_demo import DemoHandle
from tests.fix_grpc import system_metadata
from tests.fix_nats import running_worker
from tests.fix_shop import Shop, stuck_events
from tests.integration.test_accounts import bearer
from tests.integration.test_admin_users import admin_token
from tests.integration.test_edge_http import assert_error
from tests.integration.test_events import eventually
from tests.integration.test_staff_order_tools import _violation
from tests.mailbox import wait_for_subject

pytestmark = pytest.mark.integration


@pytest.fixture
async def mail_dir(tmp_path: Path, worker_settings: Settings) -> AsyncIterator[Path]:
    """The email worker, writing its mail into a folder."""
    folder = tmp_path / "mail"
    async with running_worker(worker_settings.model_copy(update={"mail_dir": str(folder)}), "email"):
        yield folder


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


def _end_route(order_id: object, refill_id: object) -> str:
    return f"/api/v1/admin/orders/{order_id}/refills/{refill_id}/end"


async def _refill_row(pool: Pool, refill_id: object) -> tuple[str, str]:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT status, message FROM order_refills WHERE id = %s", (int(str(refill_id)),)
        )
        row = await cursor.fetchone()
    assert row is not None
    return row[0], row[1]


async def _order_audit(shop: Shop, order_id: object) -> list[dict[str, Any]]:
    listed = await shop.http.get(
        "/api/v1/admin/audit", params={"target": f"order:{order_id}"}, headers=shop.admin
    )
    assert listed.status_code == 200, listed.text
    events: list[dict[str, Any]] = listed.json()["events"]
    return events


async def test_staff_end_a_refill_the_provider_never_finishes_and_its_customer_may_ask_again(
    shop: Shop, pool: Pool, grpc_server: ServerHandle, settings: object
) -> None:
    """A provider answering "Pending" for ever (or words smm cannot read) kept the order's one open
    refill open for ever: its customer could never ask for another, and staff had no tool."""
    user = await shop.user("dan@example.com", "5.00")
    order = await shop.completed_order(user, "https://x.com/forever")
    refill = await _refill(shop, user, order)
    assert refill["status"] == "pending"
    balance = await shop.balance(user)
    route = _end_route(order["id"], refill["id"])

    support = bearer(await admin_token(shop.http, grpc_server, settings, role="support"))
    refused = await shop.http.post(route, json={"status": "completed", "reason": "r"}, headers=support)
    assert_error(refused, 403, "PERMISSION_DENIED")  # support reads; only admins end refills
    no_reason = await shop.http.post(route, json={"status": "completed", "reason": " "}, headers=shop.admin)
    assert _violation(no_reason, "reason") == "is required (at most 500 characters)"
    wrong = await shop.http.post(route, json={"status": "pending", "reason": "r"}, headers=shop.admin)
    assert _violation(wrong, "status") == "must be completed or rejected"
    assert await _refill_row(pool, refill["id"]) == ("pending", refill.get("message", "") or "")
    assert await _order_audit(shop, order["id"]) == []

    ended = await shop.http.post(
        route, json={"status": "completed", "reason": "the provider confirmed it by mail"}, headers=shop.admin
    )
    assert ended.status_code == 200, ended.text
    [shown] = ended.json()["refills"]  # the order as staff see it
    assert shown["status"] == "completed"
    assert shown["message"] == "ended by staff: the provider confirmed it by mail"
    assert await _completed_events(pool) == [int(refill["id"])]  # the customer's usual mail
    staff = await shop.staff_order(order["id"])
    assert staff["timeline"][-1]["note"] == (
        f"refill {refill['id']} completed by staff: the provider confirmed it by mail"
    )
    assert staff["status"] == "ORDER_STATUS_COMPLETED"
    [audited] = await _order_audit(shop, order["id"])
    assert audited["action"] == "order.refill_ended"
    assert audited["after"]["refill_id"] == str(refill["id"])
    assert audited["after"]["refill_status"] == "completed"
    assert audited["before"]["refill_status"] == "pending"
    assert audited["after"]["reason"] == "the provider confirmed it by mail"
    assert (await shop.verify()).ok  # refills move no money
    assert await shop.balance(user) == balance

    again = await shop.http.post(route, json={"status": "rejected", "reason": "oops"}, headers=shop.admin)
    assert_error(again, 400, "FAILED_PRECONDITION", "REFILL_ALREADY_ENDED")
    assert await _refill_row(pool, refill["id"]) == (
        "completed",
        "ended by staff: the provider confirmed it by mail",
    )
    assert await _completed_events(pool) == [int(refill["id"])]  # once
    assert len(await _order_audit(shop, order["id"])) == 1

    second = await _refill(shop, user, order)  # no open refill holds the order any more
    assert second["status"] == "pending"


async def test_staff_reject_a_refill_without_the_customers_mail_and_only_on_its_own_order(
    shop: Shop, pool: Pool
) -> None:
    user = await shop.user("eve@example.com", "5.00")
    order = await shop.completed_order(user, "https://x.com/reject-me")
    other = await shop.completed_order(user, "https://x.com/other")
    refill = await _refill(shop, user, order)
    body = {"status": "rejected", "reason": "the provider stopped refilling this service"}

    for route in (
        _end_route(other["id"], refill["id"]),  # a refill of another order
        _end_route(order["id"], 999_999),
        _end_route(999_999, refill["id"]),
    ):
        missing = await shop.http.post(route, json=body, headers=shop.admin)
        assert_error(missing, 404, "NOT_FOUND", "REFILL_NOT_FOUND")
    assert (await _refill_row(pool, refill["id"]))[0] == "pending"

    async with pool.connection() as conn:  # the provider answers In progress meanwhile
        await conn.execute(
            "UPDATE order_refills SET status = 'in_progress' WHERE id = %s", (int(refill["id"]),)
        )
    ended = await shop.http.post(_end_route(order["id"], refill["id"]), json=body, headers=shop.admin)
    assert ended.status_code == 200, ended.text
    assert await _refill_row(pool, refill["id"]) == (
        "rejected",
        "ended by staff: the provider stopped refilling this service",
    )
    assert await _completed_events(pool) == []  # a rejected refill sends no mail
    [audited] = await _order_audit(shop, order["id"])
    assert (audited["before"]["refill_status"], audited["after"]["refill_status"]) == (
        "in_progress",
        "rejected",
    )
    seen = await shop.http.get(f"/api/v1/dashboard/orders/{order['id']}", headers=user)
    assert seen.json()["refills"][0]["status"] == "rejected"
    assert "message" not in seen.json()["refills"][0] or not seen.json()["refills"][0]["message"]


async def test_a_refill_still_being_asked_of_its_provider_is_not_ended_by_staff(
    shop: Shop, pool: Pool
) -> None:
    """The reservation taken before the provider is asked: its answer, stored next, would undo staff's end."""
    user = await shop.user("fay@example.com", "5.00")
    order = await shop.completed_order(user, "https://x.com/asking")
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "INSERT INTO order_refills (order_id, user_id, provider_id, status, upstream_refill_id, message,"
            " next_poll_time) SELECT id, user_id, provider_id, 'pending', '', 'asking the provider',"
            " now() + interval '10 minutes' FROM orders WHERE id = %s RETURNING id",
            (int(order["id"]),),
        )
        row = await cursor.fetchone()
    assert row is not None
    out = await shop.http.post(
        _end_route(order["id"], row[0]), json={"status": "rejected", "reason": "r"}, headers=shop.admin
    )
    assert_error(out, 400, "FAILED_PRECONDITION", "REFILL_REQUEST_OUT")
    assert await _refill_row(pool, row[0]) == ("pending", "asking the provider")


@pytest.mark.parametrize("answer", ["latency", "html"])
async def test_the_poller_never_reopens_a_refill_staff_ended_while_it_asked_the_provider(
    shop: Shop, pool: Pool, demo_provider: DemoHandle, answer: str
) -> None:
    """The poller read the open refill, asked the provider, and wrote its answer whatever the refill
    had become meanwhile: a staff-ended refill was open again (and its order blocked again). An
    answer it cannot read, an hour after the last one it could, put "cannot be read" on the order's
    timeline under staff's end."""
    user = await shop.user("gus@example.com", "5.00")
    order = await shop.completed_order(user, "https://x.com/race")
    refill = await _refill(shop, user, order)
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE order_refills SET next_poll_time = now(), update_time = now() - interval '2 hours'"
            " WHERE id = %s",
            (int(refill["id"]),),
        )
    # An unreadable page is asked again (3 tries in all): each try gets one.
    await demo_provider.fault(
        answer, count=1 if answer == "latency" else 3, actions=["refill_status"], delay_s=1.5
    )
    polling = asyncio.create_task(_poll(shop))

    async def asked() -> bool:  # the poller's question is at the provider
        return await demo_provider.requests("refill_status") > 0

    await eventually(asked, timeout_s=5)
    ended = await shop.http.post(
        _end_route(order["id"], refill["id"]),
        json={"status": "rejected", "reason": "stuck upstream for weeks"},
        headers=shop.admin,
    )
    assert ended.status_code == 200, ended.text
    await polling  # the provider's "Pending" (or an unreadable page) arrives after staff ended it
    assert await _refill_row(pool, refill["id"]) == ("rejected", "ended by staff: stuck upstream for weeks")
    assert await _completed_events(pool) == []
    timeline = (await shop.http.get(f"/api/v1/admin/orders/{order['id']}", headers=shop.admin)).json()[
        "timeline"
    ]
    assert timeline[-1]["note"] == f"refill {refill['id']} rejected by staff: stuck upstream for weeks", (
        timeline
    )


async def test_refills_open_past_the_stuck_age_are_reported_to_staff_once(
    shop: Shop, pool: Pool, mail_dir: Path
) -> None:
    user = await shop.user("hal@example.com", "5.00")
    order = await shop.completed_order(user, "https://x.com/stuck-refill")
    refill = await _refill(shop, user, order)
    young = await _refill(shop, user, await shop.completed_order(user, "https://x.com/young-refill"))
    system = spb_grpc.SystemServiceStub(shop.channel)

    async def tick(period: int) -> None:
        await system.RunJob(
            spb.RunJobRequest(job="order-poll", period_start=period), metadata=system_metadata()
        )

    await tick(30 * 60_000_000)
    assert await _stuck_refill_alerts(pool) == []
    # One the provider took without an id ends by itself after a day: not staff's to chase.
    untracked = await _refill(shop, user, await shop.completed_order(user, "https://x.com/untracked"))
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE order_refills SET create_time = now() - interval '25 hours' WHERE id = %s",
            (int(refill["id"]),),
        )
        await conn.execute(
            "UPDATE order_refills SET create_time = now() - interval '25 hours', status = 'in_progress',"
            " upstream_refill_id = '', next_poll_time = now() + interval '1 hour' WHERE id = %s",
            (int(untracked["id"]),),
        )
    await tick(30 * 60_000_000 + 30)
    assert await _stuck_refill_alerts(pool) == [[(int(refill["id"]), int(order["id"]))]]
    alert = await wait_for_subject(mail_dir, "admin-staff@example.com", "Alert: Refills are stuck")
    assert f"Refill {refill['id']} of order {order['id']}" in alert.text
    assert f"Refill {young['id']}" not in alert.text
    await tick(30 * 60_000_000 + 60)
    assert len(await _stuck_refill_alerts(pool)) == 1  # once per refill


async def _stuck_refill_alerts(pool: Pool) -> list[list[tuple[int, int]]]:
    return [[(r.refill_id, r.order_id) for r in a.refills] for a in await stuck_events(pool) if a.refills]
