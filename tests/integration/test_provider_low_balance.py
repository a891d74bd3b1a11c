"""A provider's low-balance mark: the balance is recorded at every connection test and sync, and a
fall below the mark alerts the admins once per fall (sql/0031, docs/PROVIDERS.md)."""

from __future__ import annotations

from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf.json_format import MessageToDict
from smm.v1 import events_pb2
from smm.v1 import notifications_service_pb2 as npb
from smm.v1 import notifications_service_pb2_grpc as npb_grpc

from core.config import Settings
from server.common.db import Pool
from server.notifications import logic as notifications_logic
from server.providers import logic as providers_logic
from tests.fix_grpc import system_metadata
from tests.fix_nats import running_worker
from tests.fix_shop import Shop
from tests.integration.test_providers import add_provider, run_sync
from tests.mailbox import wait_for_subject

pytestmark = pytest.mark.integration
LOW = "smm.providers.alert.low_balance"


def test_the_providers_and_the_notifications_services_name_one_subject() -> None:
    # Each service names the subject itself (one service never imports another).
    assert providers_logic.PROVIDER_BALANCE_LOW == notifications_logic.PROVIDER_BALANCE_LOW == LOW


async def low_alerts(pool: Pool) -> list[events_pb2.ProviderBalanceLow]:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT payload FROM outbox_events WHERE subject = %s ORDER BY id", (LOW,)
        )
        return [events_pb2.ProviderBalanceLow.FromString(bytes(p)) for (p,) in await cursor.fetchall()]


async def set_mark(shop: Shop, provider_id: str, mark: object) -> httpx.Response:
    return await shop.http.patch(
        f"/api/v1/admin/providers/{provider_id}", json={"lowBalance": mark}, headers=shop.admin
    )


async def test_a_fall_below_the_mark_alerts_once_until_the_balance_is_back(
    shop: Shop, pool: Pool, channel: grpc.aio.Channel
) -> None:
    pid = shop.provider_id  # type: ignore[attr-defined]

    async def test_connection() -> dict[str, str]:
        tested = await shop.http.post(f"/api/v1/admin/providers/{pid}/test", json={}, headers=shop.admin)
        assert tested.status_code == 200, tested.text
        return dict(tested.json())

    async def shown_balance() -> str:
        return str(
            (await shop.http.get(f"/api/v1/admin/providers/{pid}", headers=shop.admin)).json()["balance"]
        )

    shown = (await shop.http.get(f"/api/v1/admin/providers/{pid}", headers=shop.admin)).json()
    assert shown["lowBalance"] == "0.00"  # off until staff set it
    set_ = await set_mark(shop, pid, "50.00")
    assert set_.status_code == 200, set_.text
    assert set_.json()["lowBalance"] == "50.00"

    assert (await test_connection())["balance"] == "1000.00"
    assert await low_alerts(pool) == []

    await shop.demo.set_balance("20.5")  # type: ignore[attr-defined]
    assert (await test_connection())["balance"] == "20.50"
    [alert] = await low_alerts(pool)
    assert (alert.provider_id, alert.balance, alert.low_balance, alert.currency) == (
        int(pid),
        "20.50",
        "50.00",
        "USD",
    )
    assert alert.provider_name

    # Still low: a second test and an hourly sync record the balance, and say nothing more.
    await shop.demo.set_balance("10")  # type: ignore[attr-defined]
    await test_connection()
    await run_sync(channel, pid)
    await shop.demo.set_balance("9")  # type: ignore[attr-defined]
    await run_sync(channel, pid)
    assert await shown_balance() == "9.00"  # the sync recorded it
    assert len(await low_alerts(pool)) == 1

    # Back above the mark (seen by a sync), then down again: a new fall, a new alert.
    await shop.demo.set_balance("60")  # type: ignore[attr-defined]
    await run_sync(channel, pid)
    assert len(await low_alerts(pool)) == 1
    await shop.demo.set_balance("5")  # type: ignore[attr-defined]
    await run_sync(channel, pid)
    alerts = await low_alerts(pool)
    assert [a.balance for a in alerts] == ["20.50", "5.00"]

    # A changed mark is judged afresh: at or above it, nothing; below it, a new alert, also while
    # the balance stays below the old one (staff moved the mark: they hear where it stands).
    assert (await set_mark(shop, pid, "4.00")).status_code == 200
    await test_connection()
    assert len(await low_alerts(pool)) == 2
    assert (await set_mark(shop, pid, "6")).status_code == 200
    await test_connection()
    assert (await set_mark(shop, pid, "8")).status_code == 200
    await test_connection()
    await test_connection()
    marks = [(a.balance, a.low_balance) for a in await low_alerts(pool)]
    assert marks[2:] == [("5.00", "6.00"), ("5.00", "8.00")]

    # "0" turns it off: nothing is low against no mark.
    assert (await set_mark(shop, pid, "0")).status_code == 200
    await shop.demo.set_balance("0")  # type: ignore[attr-defined]
    await test_connection()
    assert len(await low_alerts(pool)) == 4


@pytest.mark.parametrize(
    ("mark", "message"),
    [
        ("-1", "must not be negative"),
        ("12.5.0", "must be a decimal string"),
        ("1e3", "must be a decimal string"),
        ("1000000000.01", "is too large"),
        (25, "must be a string"),
    ],
)
async def test_a_mark_that_is_not_an_amount_is_refused_by_field(
    shop: Shop, mark: object, message: str
) -> None:
    refused = await set_mark(shop, shop.provider_id, mark)  # type: ignore[attr-defined]
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert any(
        v["field"] == "provider.low_balance" and message in v["description"]
        for d in error["details"]
        for v in d.get("fieldViolations", [])
    ), error


async def test_the_alert_is_planned_once_for_every_admin(shop: Shop, channel: grpc.aio.Channel) -> None:
    low = events_pb2.ProviderBalanceLow(
        provider_id=7, provider_name="Upstream A", balance="3.20", low_balance="25.00", currency="EUR"
    )
    notifications = npb_grpc.NotificationsServiceStub(channel)
    planned = await notifications.PlanNotifications(
        npb.PlanNotificationsRequest(request_id="low-1", subject=LOW, payload=low.SerializeToString()),
        metadata=system_metadata(),
    )
    [message] = planned.messages
    assert message.template == "admin_alert"
    context = MessageToDict(message.context)
    assert context["title"] == "A provider's balance is low"
    assert context["lines"][0] == "Provider 7 (Upstream A): 3.20 EUR left, below the 25.00 EUR set for it"
    # Planned once per event: the redelivery finds what was planned.
    again = await notifications.PlanNotifications(
        npb.PlanNotificationsRequest(request_id="low-1", subject=LOW, payload=low.SerializeToString()),
        metadata=system_metadata(),
    )
    assert [m.message_id for m in again.messages] == [message.message_id]


async def test_the_email_worker_mails_the_alert_to_the_admins(
    shop: Shop, worker_settings: Settings, tmp_path: Path
) -> None:
    pid = shop.provider_id  # type: ignore[attr-defined]
    folder = tmp_path / "mail"
    async with running_worker(worker_settings.model_copy(update={"mail_dir": str(folder)}), "email"):
        assert (await set_mark(shop, pid, "100")).status_code == 200
        await shop.demo.set_balance("12.34")  # type: ignore[attr-defined]
        tested = await shop.http.post(f"/api/v1/admin/providers/{pid}/test", json={}, headers=shop.admin)
        assert tested.status_code == 200, tested.text
        mail = await wait_for_subject(folder, "admin-staff@example.com", "A provider's balance is low")
    assert "12.34 USD left, below the 100.00 USD set for it" in mail.text


async def test_a_provider_created_with_a_mark_alerts_at_its_first_test(shop: Shop, pool: Pool) -> None:
    created = await add_provider(shop.http, shop.admin, shop.demo, name="Second", lowBalance="1500.5")  # type: ignore[attr-defined]
    assert created["lowBalance"] == "1500.50"
    tested = await shop.http.post(
        f"/api/v1/admin/providers/{created['id']}/test", json={}, headers=shop.admin
    )
    assert tested.status_code == 200, tested.text
    [alert] = await low_alerts(pool)
    assert (alert.provider_id, alert.provider_name, alert.balance) == (
        int(created["id"]),
        "Second",
        "1000.00",
    )
