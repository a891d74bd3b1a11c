"""System-level event behaviour: edge caches, a NATS outage, and traces across processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import httpx
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from smm.v1 import catalog_service_pb2 as pb
from smm.v1 import catalog_service_pb2_grpc as pb_grpc

from core.config import Settings
from core.events import EVENT_ID, MSG_ID, Durable, Namespace, connect, ensure_streams
from ops.embedded import free_port, start_nats
from server.common.db import Pool
from server.main import ServerHandle, create_server
from tests.fix_edge import start_edge
from tests.fix_grpc import system_metadata
from tests.fix_nats import running_worker
from tests.fix_shop import Shop
from tests.integration.test_events import create_category, event_count, eventually, unpublished
from tests.integration.test_reseller import reseller_key
from workers.runner import Consumer, Event, Ok, Outcome, Progress, Runner

pytestmark = pytest.mark.integration


async def test_two_edge_copies_drop_their_cached_catalog_after_one_change(
    settings: Settings, grpc_server: ServerHandle, channel: grpc.aio.Channel, pool: Pool
) -> None:
    stub = pb_grpc.CatalogServiceStub(channel)
    category = await create_category(channel, "Instagram")
    # Let the category's own event pass first, so it cannot empty the caches mid-test.
    await eventually(lambda: _is(unpublished(pool), 0))
    await asyncio.sleep(0.3)
    edge_settings = settings.model_copy(update={"grpc_target": f"127.0.0.1:{grpc_server.port}"})
    edges = [await start_edge(edge_settings) for _ in range(2)]
    try:
        clients = [httpx.AsyncClient(base_url=e.base_url, timeout=10) for e in edges]
        for client in clients:
            assert (await client.get("/api/v1/public/services")).json()["services"] == []
            assert (await client.get("/api/v1/public/services")).json()["services"] == []
        assert all(e.app.ctx.cache.hits >= 1 for e in edges)  # the second read came from the cache
        await stub.CreateService(
            pb.CreateServiceRequest(
                service=pb.Service(
                    name="Likes",
                    type=pb.SERVICE_TYPE_DEFAULT,
                    category_id=category.id,
                    rate="2",
                    min_quantity=10,
                    max_quantity=1000,
                    enabled=True,
                )
            ),
            metadata=system_metadata(),
        )

        async def both_see_it() -> bool:
            bodies = [(await c.get("/api/v1/public/services")).json() for c in clients]
            return all(len(b["services"]) == 1 for b in bodies)

        await eventually(both_see_it, 5)
        assert all(e.app.ctx.cache.invalidations >= 1 for e in edges)
        for client in clients:
            await client.aclose()
    finally:
        for running in edges:
            await running.stop()


@pytest.mark.slow
async def test_writes_survive_a_nats_outage_and_every_event_arrives(
    tmp_path: Path, settings: Settings, pool: Pool
) -> None:
    nats = start_nats(tmp_path / "nats", free_port())
    local = settings.model_copy(update={"nats_url": nats.url})
    nc = await connect(local.nats_url, name="outage-grpc")
    handle = await create_server(local, pool, address="127.0.0.1:0", nc=nc)
    worker_settings = local.model_copy(update={"grpc_target": f"127.0.0.1:{handle.port}"})
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel,
            running_worker(worker_settings, "analytics"),
        ):
            await create_category(channel, "Before")
            subject = "smm.catalog.category.changed"
            await eventually(lambda: _is(event_count(pool, subject), 1))
            nats.stop()
            for name in ("During 1", "During 2", "During 3"):
                await create_category(channel, name)  # writes keep succeeding
            assert await unpublished(pool) == 3
            edge = await start_edge(worker_settings)
            try:
                async with httpx.AsyncClient(base_url=edge.base_url, timeout=10) as http:
                    health = await http.get("/api/v1/public/health")
                assert health.status_code == 503
                assert health.json()["error"]["details"][0]["metadata"]["down"] == "nats"
            finally:
                await edge.stop()
            await asyncio.sleep(10)
            nats = start_nats(tmp_path / "nats", nats.port)
            await eventually(lambda: _is(event_count(pool, subject), 4), 30)
            assert await unpublished(pool) == 0
    finally:
        await handle.stop(None)
        await nc.close()
        nats.stop()


async def _is(value: object, expected: int) -> bool:
    return await value == expected  # type: ignore[misc]


async def test_one_trace_spans_edge_server_relay_and_worker(
    spans: InMemorySpanExporter,
    grpc_server: ServerHandle,
    worker_settings: Settings,
    pool: Pool,
    http: httpx.AsyncClient,
) -> None:
    # HTTP -> edge -> gRPC server: the edge's span parents the server's.
    await http.get("/api/v1/public/categories")
    finished = spans.get_finished_spans()
    [edge_span] = [s for s in finished if s.name == "GET /api/v1/public/categories"]
    server_spans = [
        s
        for s in finished
        if s.name == "/smm.v1.CatalogService/ListCategories" and s.kind == trace.SpanKind.SERVER
    ]
    assert server_spans
    assert server_spans[0].context.trace_id == edge_span.context.trace_id

    # A write -> outbox row -> relay publish -> worker -> its RPC: one trace.
    spans.clear()
    tracer = trace.get_tracer("tests")
    async with (
        grpc.aio.insecure_channel(
            f"127.0.0.1:{grpc_server.port}", interceptors=aio_client_interceptors()
        ) as traced,
        running_worker(worker_settings, "analytics"),
    ):
        with tracer.start_as_current_span("admin action") as root:
            await create_category(traced, "Traced")
        await eventually(lambda: _is(event_count(pool, "smm.catalog.category.changed"), 1))
    trace_id = root.get_span_context().trace_id
    in_trace = [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]
    names = {s.name for s in in_trace}
    statements = " ".join(str(s.attributes.get("db.statement", "")) for s in in_trace if s.attributes)
    assert "INSERT INTO outbox_events" in statements  # the SQL of the write, outbox row included
    assert "/smm.v1.CatalogService/CreateCategory" in names
    assert "publish smm.catalog.category.changed" in names
    assert "process smm.catalog.category.changed" in names
    assert "/smm.v1.SystemService/RecordEvent" in names


async def test_a_nats_outage_while_acking_leaves_the_worker_running_and_loses_nothing(
    tmp_path: Path,
) -> None:
    """The ack of a handled message cannot reach NATS while it is down: the runner logs it and
    carries on (it used to raise out of the consumer loop and the TaskGroup ended the whole worker).
    Once NATS is back, the message is settled one of two legal ways, depending on timing: the client
    flushes the ack it buffered while reconnecting, or JetStream redelivers the message and the same
    runner handles it again. Either way nothing stays pending and new messages are handled."""
    nats = start_nats(tmp_path / "nats", free_port())
    nc = await connect(nats.url, name="tests-ack-outage")
    ns = Namespace("ackoutage")
    js = nc.jetstream()
    await ensure_streams(js, ns)
    handled: list[tuple[str, int]] = []
    in_handler = asyncio.Event()
    release = asyncio.Event()

    async def handler(event: Event, progress: Progress) -> Outcome:
        handled.append((event.id, event.delivery))
        in_handler.set()
        await release.wait()
        return Ok()

    durable = Durable("test-ack-outage", "CATALOG", "smm.catalog.>", ack_wait_s=2.0)
    subject = ns.subject("smm.catalog.service.changed")
    await js.publish(subject, b"", headers={MSG_ID: "o1", EVENT_ID: "o1"})
    stop = asyncio.Event()
    task = asyncio.create_task(Runner(nc, ns, [Consumer(durable, handler)]).run(stop))
    try:
        await asyncio.wait_for(in_handler.wait(), 10)
        nats.stop()  # NATS goes away while the message is in hand
        await asyncio.sleep(0.5)
        release.set()  # the handler finishes; the ack cannot reach NATS
        await asyncio.sleep(4)
        assert not task.done(), task.exception() if task.done() else None
        assert handled == [("o1", 1)]
        nats = start_nats(tmp_path / "nats", nats.port)
        await eventually(lambda: _is(_connected(nc), True), 30)
        await js.publish(subject, b"", headers={MSG_ID: "o2", EVENT_ID: "o2"})
        await eventually(lambda: _is(_settled(js, ns, durable), True), 30)
        assert not task.done()
        first = [delivery for event_id, delivery in handled if event_id == "o1"]
        assert first in ([1], [1, 2])  # acked by the flushed buffer, or redelivered once
        assert [delivery for event_id, delivery in handled if event_id == "o2"] == [1]
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 20)
        await nc.close()
        nats.stop()


async def _connected(nc: NATS) -> bool:
    return bool(nc.is_connected)


async def _settled(js: JetStreamContext, ns: Namespace, durable: Durable) -> bool:
    """Both messages delivered and acknowledged: nothing waits, nothing is in hand."""
    info = await js.consumer_info(ns.stream(durable.stream), ns.durable(durable.name))
    return bool(info.num_pending == 0 and info.num_ack_pending == 0 and info.ack_floor.stream_seq == 2)


async def test_a_worker_declares_its_durable_again_when_nats_comes_back_without_its_store(
    tmp_path: Path,
) -> None:
    """docs/DEPLOYMENT.md: a lost NATS store loses nothing, unpublished rows are re-published. The
    relay declares the streams again after any failure, but a running worker declared its durable
    only at start: against the new, empty store every fetch failed (no responders) for ever, and no
    event was handled until someone restarted every worker."""
    nats = start_nats(tmp_path / "nats", free_port())
    nc = await connect(nats.url, name="tests-lost-store")
    ns = Namespace("loststore")
    js = nc.jetstream()
    await ensure_streams(js, ns)
    handled: list[str] = []

    async def handler(event: Event, progress: Progress) -> Outcome:
        handled.append(event.id)
        return Ok()

    durable = Durable("test-lost-store", "CATALOG", "smm.catalog.>")
    subject = ns.subject("smm.catalog.service.changed")
    stop = asyncio.Event()
    task = asyncio.create_task(Runner(nc, ns, [Consumer(durable, handler)]).run(stop))
    try:
        await js.publish(subject, b"", headers={MSG_ID: "before", EVENT_ID: "before"})
        await eventually(lambda: _is(_count(handled), 1))
        nats.stop()
        nats = start_nats(tmp_path / "nats-new-volume", nats.port)  # same address, empty store
        await eventually(lambda: _is(_connected(nc), True), 30)
        await eventually(lambda: _declared(js, ns), 30)  # as the relay does once it can publish again
        await js.publish(subject, b"", headers={MSG_ID: "after", EVENT_ID: "after"})
        await eventually(lambda: _is(_count(handled), 2), 15)
        assert handled == ["before", "after"]
        assert not task.done()
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 20)
        await nc.close()
        nats.stop()


async def _declared(js: JetStreamContext, ns: Namespace) -> bool:
    try:
        await ensure_streams(js, ns)
    except Exception:  # JetStream still starting on the new server
        return False
    return True


async def _count(items: list[str]) -> int:
    return len(items)


async def test_a_reseller_call_is_one_trace_under_the_callers_context(
    shop: Shop, spans: InMemorySpanExporter
) -> None:
    """The reseller endpoint is traced as the JSON API is: one SERVER span for the HTTP request,
    under the caller's W3C ``traceparent``, carrying the request id the response names, with every
    RPC of the action (a cancel of two orders is two) beneath it, and the API key nowhere."""
    key, _ = await reseller_key(shop, "ann@example.com", "5.00")
    spans.clear()
    caller_trace, caller_span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    response = await shop.http.post(
        "/api/v1/reseller",
        data={"key": key, "action": "cancel", "orders": "998,999"},
        headers={"traceparent": f"00-{caller_trace}-{caller_span}-01"},
    )
    assert response.status_code == 200, response.text
    finished = spans.get_finished_spans()
    edge_spans = [
        s for s in finished if s.name == "POST /api/v1/reseller" and s.kind == trace.SpanKind.SERVER
    ]
    assert len(edge_spans) == 1, [s.name for s in finished]
    [edge_span] = edge_spans
    assert f"{edge_span.context.trace_id:032x}" == caller_trace
    assert edge_span.parent is not None
    assert f"{edge_span.parent.span_id:016x}" == caller_span
    assert edge_span.attributes is not None
    assert edge_span.attributes["smm.request_id"] == response.headers["x-request-id"]
    cancels = [
        s
        for s in finished
        if s.name == "/smm.v1.OrdersService/CancelOrder" and s.kind == trace.SpanKind.SERVER
    ]
    assert len(cancels) == 2
    assert all(s.context.trace_id == edge_span.context.trace_id for s in cancels)
    for span in finished:
        for value in (span.attributes or {}).values():
            assert key not in str(value), span.name
