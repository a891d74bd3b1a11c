"""A worker's RPCs carry the event's id as their request id (``x-request-id``), so the server's
log lines and audit records of the work an event caused carry the same id as the event."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import grpc
import pytest
from nats.aio.client import Client as NATS
from smm.v1 import events_pb2

from core.config import Settings
from core.events import EVENT_ID, MSG_ID, Namespace, ensure_streams
from core.logs import request_id_var
from server.common import idempotency
from server.common.db import Pool
from server.common.interceptors import current_request
from server.system.logic import SystemLogic
from tests.fix_nats import running_worker
from tests.integration.test_events import create_category, eventually

pytestmark = pytest.mark.integration


async def _seen_until(seen: list[Any], count: int) -> None:
    async def reached() -> bool:
        return len(seen) >= count

    await eventually(reached)  # else the worker's RPC never reached the server


async def test_a_worker_rpc_reaches_the_server_with_the_events_id_as_request_id(
    channel: grpc.aio.Channel,
    pool: Pool,
    worker_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[str, str, str]] = []
    record_event = SystemLogic.record_event

    async def recording(
        self: SystemLogic, key: idempotency.RequestKey, subject: str, occurred: datetime | None
    ) -> bool:
        # What the server's log lines (request_id_var) and audit records (current_request) carry.
        seen.append((key.request_id, request_id_var.get(), current_request.get().request_id))
        return await record_event(self, key, subject, occurred)

    monkeypatch.setattr(SystemLogic, "record_event", recording)
    async with running_worker(worker_settings, "analytics"):
        await create_category(channel, "Instagram")
        await _seen_until(seen, 1)
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT event_id FROM outbox_events")).fetchone()
    assert row is not None
    event_id = str(row[0])
    assert seen[0] == (event_id, event_id, event_id)


async def test_a_tick_whose_id_is_no_request_id_is_sent_under_a_safe_spelling(
    pool: Pool, worker_settings: Settings, nc: NATS, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    run_job = SystemLogic.run_job

    async def recording(self: SystemLogic, name: str, period_start: int) -> Any:
        seen.append(request_id_var.get())
        return await run_job(self, name, period_start)

    monkeypatch.setattr(SystemLogic, "run_job", recording)
    ns = Namespace(worker_settings.nats_namespace)
    js = nc.jetstream()
    await ensure_streams(js, ns)
    start = int(time.time()) // 30 * 30
    tick_id = f"order-poll:{start}"  # the scheduler's message id: ':' is not allowed in request ids
    payload = events_pb2.ScheduleTick(job="order-poll", period_start=start).SerializeToString()
    await js.publish(
        ns.subject("smm.schedule.order-poll"), payload, headers={MSG_ID: tick_id, EVENT_ID: tick_id}
    )
    async with running_worker(worker_settings, "maintenance"):
        await _seen_until(seen, 1)
    assert seen[0] == f"order-poll.{start}"
