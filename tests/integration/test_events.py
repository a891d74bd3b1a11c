"""Outbox -> relay -> JetStream -> worker -> idempotent RPC, end to end on real NATS and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError
from smm.v1 import catalog_service_pb2 as pb
from smm.v1 import catalog_service_pb2_grpc as pb_grpc
from smm.v1 import system_service_pb2 as spb
from smm.v1 import system_service_pb2_grpc as spb_grpc

from core.config import Settings
from core.events import EVENT_ID, MSG_ID, REPLAY_FOR, Durable, Namespace, ensure_durable, ensure_streams
from core.schedule import Job
from server.common.db import Pool
from server.common.relay import Relay
from server.main import ServerHandle
from tests.fix_grpc import system_metadata
from tests.fix_nats import running_worker
from workers.dlq import list_dead_letters, replay
from workers.runner import Consumer, Event, Ok, Outcome, Permanent, Progress, Retry, Runner
from workers.scheduler import Scheduler

pytestmark = pytest.mark.integration


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def event_count(pool: Pool, subject: str) -> int:
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "SELECT coalesce(sum(count), 0) FROM event_counts WHERE subject = %s", (subject,)
            )
        ).fetchone()
    return int(row[0]) if row else 0


async def unpublished(pool: Pool) -> int:
    async with pool.connection() as conn:
        row = await (
            await conn.execute("SELECT count(*) FROM outbox_events WHERE published_at IS NULL")
        ).fetchone()
    return int(row[0]) if row else 0


async def create_category(channel: grpc.aio.Channel, name: str) -> pb.Category:
    stub = pb_grpc.CatalogServiceStub(channel)
    return await stub.CreateCategory(
        pb.CreateCategoryRequest(category=pb.Category(name=name, enabled=True)), metadata=system_metadata()
    )


async def stream_messages(nc: NATS, ns: Namespace, stream: str) -> int:
    info = await nc.jetstream().stream_info(ns.stream(stream))
    return int(info.state.messages)


async def test_relay_publishes_and_the_worker_counts_once(
    channel: grpc.aio.Channel, pool: Pool, worker_settings: Settings, nc: NATS
) -> None:
    ns = Namespace(worker_settings.nats_namespace)
    async with running_worker(worker_settings, "analytics"):
        await create_category(channel, "Instagram")
        subject = "smm.catalog.category.changed"
        await eventually(lambda: _equals(event_count(pool, subject), 1))
        assert await unpublished(pool) == 0
        # The same event published again (a relay crash after publish, before marking): once.
        async with pool.connection() as conn:
            row = await (await conn.execute("SELECT event_id, payload FROM outbox_events")).fetchone()
        assert row is not None
        event_id, payload = str(row[0]), bytes(row[1])
        js = nc.jetstream()
        duplicate = await js.publish(
            ns.subject(subject), payload, headers={MSG_ID: event_id, EVENT_ID: event_id}
        )
        assert duplicate.duplicate is True  # JetStream's window drops it
        # Past the window (a new message id), the RPC's request_id still counts it once.
        await js.publish(
            ns.subject(subject), payload, headers={MSG_ID: event_id + ":late", EVENT_ID: event_id}
        )
        await asyncio.sleep(1.0)
        assert await event_count(pool, subject) == 1
        assert await stream_messages(nc, ns, "CATALOG") == 2


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def test_crash_between_commit_and_publish_republishes_after_restart(
    settings: Settings,
    pool: Pool,
    grpc_server: ServerHandle,
    channel: grpc.aio.Channel,
    nc: NATS,
    worker_settings: Settings,
) -> None:
    # Stop the relay (as if the server died after committing and before publishing).
    await grpc_server.stop_relay()
    await create_category(channel, "YouTube")
    await create_category(channel, "TikTok")
    assert await unpublished(pool) == 2
    ns = Namespace(settings.nats_namespace)
    async with running_worker(worker_settings, "analytics"):
        await asyncio.sleep(0.5)
        assert await event_count(pool, "smm.catalog.category.changed") == 0
        # "Restart": a new relay (as a new server process would run) finds the rows and publishes them.
        restarted = Relay(pool, nc, ns, conninfo=settings.database_url, poll_s=0.2)
        task = asyncio.create_task(restarted.run())
        try:
            await eventually(lambda: _equals(event_count(pool, "smm.catalog.category.changed"), 2))
            assert await unpublished(pool) == 0
        finally:
            restarted.stop()
            await task


async def test_two_relays_never_publish_a_row_twice(
    settings: Settings, pool: Pool, channel: grpc.aio.Channel, nc: NATS, grpc_server: ServerHandle
) -> None:
    await grpc_server.stop_relay()
    for index in range(30):
        await create_category(channel, f"Category {index}")
    ns = Namespace(settings.nats_namespace)
    relays = [Relay(pool, nc, ns, conninfo=settings.database_url, batch=5) for _ in range(2)]
    await ensure_streams(nc.jetstream(), ns)

    async def drain(relay: Relay) -> None:
        while await relay.relay_once():
            pass

    await asyncio.gather(*(drain(r) for r in relays))
    assert sum(r.published for r in relays) == 30
    assert await unpublished(pool) == 0
    assert await stream_messages(nc, ns, "CATALOG") == 30


async def test_retry_then_dead_letter_then_replay(
    settings: Settings, nc: NATS, pool: Pool, channel: grpc.aio.Channel, worker_settings: Settings
) -> None:
    ns = Namespace(settings.nats_namespace)
    attempts: list[int] = []
    healthy = asyncio.Event()

    async def flaky(event: Event, progress: Progress) -> Outcome:
        attempts.append(event.delivery)
        await progress()
        if not healthy.is_set():
            return Retry("upstream down", delay_s=0.05)
        stub = spb_grpc.SystemServiceStub(channel)
        await stub.RecordEvent(
            spb.RecordEventRequest(request_id=event.id, subject=event.subject), metadata=system_metadata()
        )
        return Ok()

    durable = Durable("test-flaky", "CATALOG", "smm.catalog.>", max_deliver=3, backoff_s=(0.05,))
    runner = Runner(nc, ns, [Consumer(durable, flaky)])
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await create_category(channel, "Flaky")
        letters = []

        async def dead_lettered() -> bool:
            letters[:] = await list_dead_letters(nc, ns, durable="test-flaky")
            return len(letters) == 1

        await eventually(dead_lettered)
        assert attempts == [1, 2, 3]
        [letter] = letters
        assert letter.deliveries == 3
        assert "upstream down" in letter.reason
        assert letter.subject == "smm.catalog.category.changed"
        healthy.set()
        await replay(nc, ns, letter)
        await eventually(lambda: _equals(event_count(pool, "smm.catalog.category.changed"), 1))
        assert await list_dead_letters(nc, ns) == []
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_a_replay_re_drives_only_the_durable_that_dead_lettered_it(
    settings: Settings, nc: NATS
) -> None:
    """A replayed dead letter went back on its subject for every durable there: one worker's
    failure re-ran the event in all the others, which had handled it (analytics dead-letters an
    `email.requested`, its replay made the email worker mint and send a second reset link; an
    `order.created` dead-lettered by `email-orders` came back to dispatch). Only the durable named
    in the letter handles the replay; the others settle it untouched."""
    ns = Namespace(settings.nats_namespace)
    js = nc.jetstream()
    await ensure_streams(js, ns)
    handled: list[tuple[str, str, int]] = []
    broken = [True]

    async def healthy(event: Event, progress: Progress) -> Outcome:
        handled.append(("test-healthy", event.id, event.delivery))
        return Ok()

    async def failing(event: Event, progress: Progress) -> Outcome:
        handled.append(("test-failing", event.id, event.delivery))
        return Permanent("upstream refused") if broken[0] else Ok()

    good = Durable("test-healthy", "CATALOG", "smm.catalog.>")
    bad = Durable("test-failing", "CATALOG", "smm.catalog.>")
    runner = Runner(nc, ns, [Consumer(good, healthy), Consumer(bad, failing)])
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await eventually(lambda: _durables_exist(js, ns, good, bad))
        await js.publish(
            ns.subject("smm.catalog.category.changed"), b"", headers={MSG_ID: "r1", EVENT_ID: "r1"}
        )
        letters = []

        async def dead_lettered() -> bool:
            letters[:] = await list_dead_letters(nc, ns)
            return len(letters) == 1

        await eventually(dead_lettered)
        [letter] = letters
        assert letter.durable == "test-failing"
        broken[0] = False
        await replay(nc, ns, letter)
        # Both durables have taken the replayed copy (stream sequence 2) and settled it.
        await eventually(lambda: _settled_up_to(js, ns, bad, 2))
        await eventually(lambda: _settled_up_to(js, ns, good, 2))
        assert sorted(handled) == [
            ("test-failing", "r1", 1),
            ("test-failing", "r1", 1),
            ("test-healthy", "r1", 1),
        ]
        assert await list_dead_letters(nc, ns) == []
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_a_replayed_event_that_fails_again_reaches_the_dead_letter_consumers(
    settings: Settings, nc: NATS
) -> None:
    """A dead letter kept the replayed event's Smm-Replay-For, so every consumer of the dead
    letters (the admins' alerts, the dispatch worker's retry) took it for another durable's replay
    and settled it unhandled: the second failure of a replayed event alerted no one."""
    ns = Namespace(settings.nats_namespace)
    js = nc.jetstream()
    await ensure_streams(js, ns)
    seen: list[str] = []

    async def failing(event: Event, progress: Progress) -> Outcome:
        return Permanent("upstream refused")

    async def watching(event: Event, progress: Progress) -> Outcome:
        seen.append(event.headers[MSG_ID])
        return Ok()

    bad = Durable("test-failing", "CATALOG", "smm.catalog.>")
    watch = Durable("test-dlq-watch", "DLQ", "smm.dlq.test-failing")
    runner = Runner(nc, ns, [Consumer(bad, failing), Consumer(watch, watching)])
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await eventually(lambda: _durables_exist(js, ns, bad, watch))
        await js.publish(
            ns.subject("smm.catalog.category.changed"), b"", headers={MSG_ID: "r2", EVENT_ID: "r2"}
        )
        await eventually(lambda: _length_is(seen, 1))
        [letter] = await list_dead_letters(nc, ns)
        await replay(nc, ns, letter)  # still failing: dead-lettered again
        await eventually(lambda: _length_is(seen, 2))
        assert seen[0].startswith("dlq:test-failing:r2:")
        assert seen[1].startswith("dlq:test-failing:r2:")
        assert seen[1] != seen[0]
        [again] = await list_dead_letters(nc, ns)
        assert REPLAY_FOR not in again.headers
        assert again.durable == "test-failing"
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def _length_is(items: list[str], length: int) -> bool:
    return len(items) == length


async def _durables_exist(js: JetStreamContext, ns: Namespace, *durables: Durable) -> bool:
    try:
        for durable in durables:
            await js.consumer_info(ns.stream(durable.stream), ns.durable(durable.name))
    except NotFoundError:
        return False
    return True


async def _settled_up_to(js: JetStreamContext, ns: Namespace, durable: Durable, sequence: int) -> bool:
    info = await js.consumer_info(ns.stream(durable.stream), ns.durable(durable.name))
    return bool(info.delivered.stream_seq == sequence and info.num_ack_pending == 0 and info.num_pending == 0)


async def test_a_concurrent_consumer_handles_messages_side_by_side_and_drains_on_stop(
    settings: Settings, nc: NATS, channel: grpc.aio.Channel, worker_settings: Settings
) -> None:
    ns = Namespace(settings.nats_namespace)
    active: list[str] = []
    peak = 0
    all_in = asyncio.Event()
    done: list[str] = []

    async def slow(event: Event, progress: Progress) -> Outcome:
        nonlocal peak
        active.append(event.id)
        peak = max(peak, len(active))
        if len(active) == 4:
            all_in.set()
        try:
            async with asyncio.timeout(5):  # one at a time would never get four in here
                await all_in.wait()
        except TimeoutError:
            return Retry("the others never came", delay_s=0.05)
        finally:
            active.remove(event.id)
        done.append(event.id)
        return Ok()

    durable = Durable("test-side-by-side", "CATALOG", "smm.catalog.>")
    runner = Runner(nc, ns, [Consumer(durable, slow, concurrency=4)])
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        for n in range(4):
            await create_category(channel, f"Side by side {n}")
        await asyncio.wait_for(all_in.wait(), 10)
        stop.set()  # the four in hand finish (and are acked) before the runner returns
        await asyncio.wait_for(task, 10)
        assert peak == 4
        assert len(done) == 4
        assert runner.handled == 4
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_two_scheduler_copies_fire_each_period_once(
    settings: Settings, nc: NATS, pool: Pool, worker_settings: Settings
) -> None:
    ns = Namespace(settings.nats_namespace)
    # The next hour: the maintenance worker skips ticks of periods long past (see below).
    hour = (int(time.time()) // 3600 + 1) * 3600
    now = [float(hour)]
    job = Job("outbox-purge", 3600)
    copies = [Scheduler(nc, ns, (job,), clock=lambda: now[0]) for _ in range(2)]
    await ensure_streams(nc.jetstream(), ns)
    async with running_worker(worker_settings, "maintenance"):
        for _ in range(3):
            await asyncio.gather(*(c.tick() for c in copies))
        now[0] += 3600  # the next period
        await asyncio.gather(*(c.tick() for c in copies))
        # A third copy starting late in the same period publishes a duplicate that is dropped.
        late = Scheduler(nc, ns, (job,), clock=lambda: now[0] + 1800)
        await late.tick()
        assert await stream_messages(nc, ns, "SCHEDULE") == 2

        async def two_runs() -> bool:
            async with pool.connection() as conn:
                rows = await (
                    await conn.execute(
                        "SELECT extract(epoch FROM period_start)::bigint FROM job_runs ORDER BY 1"
                    )
                ).fetchall()
            return [r[0] for r in rows] == [hour, hour + 3600]

        await eventually(two_runs)


async def test_ticks_queued_while_maintenance_was_down_run_each_job_once_not_once_per_missed_period(
    settings: Settings, nc: NATS, pool: Pool, worker_settings: Settings
) -> None:
    """The SCHEDULE stream keeps ticks for two days: a maintenance worker back after an outage ran
    every one of them, each hourly job once per hour missed (an alert or a sync per hour), the
    30 s order poll thousands of times. A tick a whole period late is dropped: a later one exists."""
    ns = Namespace(settings.nats_namespace)
    job = Job("outbox-purge", 3600)
    current = job.period_start(time.time())
    await ensure_streams(nc.jetstream(), ns)
    for start in (current - 3 * 3600, current - 2 * 3600, current - 3600, current):
        await Scheduler(nc, ns, (job,), clock=lambda start=start: float(start)).tick()
    assert await stream_messages(nc, ns, "SCHEDULE") == 4

    async def runs() -> list[int]:
        async with pool.connection() as conn:
            rows = await (
                await conn.execute("SELECT extract(epoch FROM period_start)::bigint FROM job_runs ORDER BY 1")
            ).fetchall()
        return [r[0] for r in rows]

    async def caught_up() -> bool:
        return current in await runs()

    async with running_worker(worker_settings, "maintenance"):
        await eventually(caught_up)  # the ticks are handled in order: the current one comes last
    # The previous hour's tick is less than a period late: it still runs.
    assert await runs() == [current - 3600, current]


async def test_run_job_is_once_per_period_and_validated(channel: grpc.aio.Channel) -> None:
    stub = spb_grpc.SystemServiceStub(channel)
    first = await stub.RunJob(
        spb.RunJobRequest(job="outbox-purge", period_start=7200), metadata=system_metadata()
    )
    again = await stub.RunJob(
        spb.RunJobRequest(job="outbox-purge", period_start=7200), metadata=system_metadata()
    )
    assert first.ran_now is True
    assert again.ran_now is False
    assert again.result == first.result
    assert "purged" in first.result
    for bad in (spb.RunJobRequest(job="nope"), spb.RunJobRequest(job="outbox-purge", period_start=7201)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.RunJob(bad, metadata=system_metadata())
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def _run_copies(
    nc: NATS, ns: Namespace, durable: Durable, handler: Callable[[Event, Progress], Awaitable[Outcome]]
) -> tuple[asyncio.Event, list[asyncio.Task[None]]]:
    copies = [Runner(nc, ns, [Consumer(durable, handler)]) for _ in range(2)]
    stop = asyncio.Event()
    return stop, [asyncio.create_task(c.run(stop)) for c in copies]


async def test_two_copies_of_a_sequential_consumer_take_one_message_at_a_time(
    settings: Settings, nc: NATS
) -> None:
    """A sequential consumer used to fetch ten and work through them one by one: the tail's ack
    deadline ran out in hand and JetStream gave those messages to the other copy as well."""
    ns = Namespace(settings.nats_namespace)
    js = nc.jetstream()
    await ensure_streams(js, ns)
    handled: list[str] = []

    async def slow(event: Event, progress: Progress) -> Outcome:
        await asyncio.sleep(0.5)
        handled.append(event.id)
        return Ok()

    durable = Durable("test-one-at-a-time", "CATALOG", "smm.catalog.>", ack_wait_s=2.0)
    for n in range(8):
        await js.publish(
            ns.subject("smm.catalog.service.changed"), b"", headers={MSG_ID: f"s{n}", EVENT_ID: f"s{n}"}
        )
    stop, tasks = await _run_copies(nc, ns, durable, slow)
    try:
        await eventually(lambda: _equals(_len(handled), 8), timeout_s=20)
        await asyncio.sleep(2.5)  # longer than ack_wait: any redelivery would have come in
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 20)
    assert sorted(handled) == [f"s{n}" for n in range(8)]


async def test_a_handler_longer_than_ack_wait_is_not_redelivered_while_it_runs(
    settings: Settings, nc: NATS
) -> None:
    """The runner tells JetStream the message is in progress (every ack_wait/3) while the handler
    runs, so the other copy never gets it mid-flight; the heartbeat stops once it is settled."""
    ns = Namespace(settings.nats_namespace)
    js = nc.jetstream()
    await ensure_streams(js, ns)
    running: set[str] = set()
    overlaps: list[str] = []
    handled: list[str] = []

    async def long(event: Event, progress: Progress) -> Outcome:
        if event.id in running:
            overlaps.append(event.id)
        running.add(event.id)
        try:
            await asyncio.sleep(3.5)  # more than three ack deadlines
        finally:
            running.discard(event.id)
        handled.append(event.id)
        return Ok()

    durable = Durable("test-long-handler", "CATALOG", "smm.catalog.>", ack_wait_s=1.0)
    await js.publish(ns.subject("smm.catalog.service.changed"), b"", headers={MSG_ID: "l1", EVENT_ID: "l1"})
    stop, tasks = await _run_copies(nc, ns, durable, long)
    try:
        await eventually(lambda: _equals(_len(handled), 1), timeout_s=20)
        await asyncio.sleep(2.0)  # twice ack_wait after the ack: a live heartbeat or redelivery shows
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 20)
    assert overlaps == []
    assert handled == ["l1"]
    info = await js.consumer_info(ns.stream("CATALOG"), ns.durable("test-long-handler"))
    assert info.num_ack_pending == 0
    assert info.num_redelivered == 0


async def _len(items: list[str]) -> int:
    return len(items)


async def test_worker_rpcs_refuse_out_of_range_times_by_field(channel: grpc.aio.Channel) -> None:
    stub = spb_grpc.SystemServiceStub(channel)
    calls = {
        "period_start": [
            spb.RunJobRequest(job="outbox-purge", period_start=3600 * 10**12),
            spb.RunJobRequest(job="outbox-purge", period_start=-3600),
        ],
        "occur_time": [
            spb.RecordEventRequest(
                request_id="odd-1", subject="smm.orders.x", occur_time=Timestamp(seconds=10**12)
            ),
            spb.RecordEventRequest(
                request_id="odd-2", subject="smm.orders.x", occur_time=Timestamp(seconds=-(10**12))
            ),
            spb.RecordEventRequest(
                request_id="odd-3", subject="smm.orders.x", occur_time=Timestamp(seconds=0, nanos=-1)
            ),
        ],
    }
    for field, requests in calls.items():
        for request in requests:
            method = stub.RunJob if isinstance(request, spb.RunJobRequest) else stub.RecordEvent
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await method(request, metadata=system_metadata())  # type: ignore[operator]
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
            assert caught.value.details().startswith(f"{field}:"), caught.value.details()
    # In range is still fine: a time in year 9999 is counted on its own day.
    counted = await stub.RecordEvent(
        spb.RecordEventRequest(
            request_id="odd-4", subject="smm.orders.x", occur_time=Timestamp(seconds=253_402_300_799)
        ),
        metadata=system_metadata(),
    )
    assert counted.counted is True


async def _publish(js: JetStreamContext, ns: Namespace, *ids: str) -> None:
    for event_id in ids:
        await js.publish(
            ns.subject("smm.catalog.category.changed"), b"", headers={MSG_ID: event_id, EVENT_ID: event_id}
        )


async def _pending(js: JetStreamContext, ns: Namespace, durable: Durable) -> tuple[int, int]:
    """What the durable has left to deliver, and the stream sequence of its acknowledgement floor."""
    info = await js.consumer_info(ns.stream(durable.stream), ns.durable(durable.name))
    return int(info.num_pending or 0), int(info.ack_floor.stream_seq if info.ack_floor else 0)


async def _take(js: JetStreamContext, ns: Namespace, durable: Durable, count: int) -> list[str]:
    subscription = await js.pull_subscribe_bind(
        durable=ns.durable(durable.name), stream=ns.stream(durable.stream)
    )
    try:
        messages = await subscription.fetch(count, timeout=2.0)
        for message in messages:
            await message.ack_sync()
        return [(message.headers or {})[EVENT_ID] for message in messages]
    finally:
        await subscription.unsubscribe()


async def test_a_new_durable_with_a_window_skips_older_events_and_a_declared_one_keeps_its_place(
    settings: Settings, nc: NATS
) -> None:
    """A durable created on a stream that already holds events takes all of them, unless it is
    declared with a start window (notifications): then only those published within the window.
    Declaring a durable that exists never moves it, whatever its window or settings say now."""
    ns = Namespace(settings.nats_namespace)
    js = nc.jetstream()
    await ensure_streams(js, ns)
    await _publish(js, ns, "old-1", "old-2", "old-3")
    await asyncio.sleep(1.5)
    await _publish(js, ns, "new-1", "new-2")
    everything = Durable("test-all", "CATALOG", "smm.catalog.>")
    recent = Durable("test-recent", "CATALOG", "smm.catalog.>", start_window_s=1.0)
    await ensure_durable(js, ns, everything)
    await ensure_durable(js, ns, recent)
    assert await _pending(js, ns, everything) == (5, 0)
    assert (await _pending(js, ns, recent))[0] == 2
    assert await _take(js, ns, recent, 1) == ["new-1"]

    # Declared again (a restart, another copy, a release that changed its ack wait or its window),
    # later than its window: it stays where it was.
    await asyncio.sleep(1.5)
    for again in (
        recent,
        replace(recent, ack_wait_s=45.0, start_window_s=3600.0),
        replace(recent, start_window_s=None),
    ):
        await ensure_durable(js, ns, again)
        assert await _pending(js, ns, again) == (1, 4)
    assert await _take(js, ns, recent, 5) == ["new-2"]


async def test_a_durable_that_must_be_recreated_resumes_after_what_it_acknowledged(
    settings: Settings, nc: NATS
) -> None:
    """A durable declared with settings NATS cannot change in place (here one an older release
    made with another ack policy) is deleted and created again; it must resume after what it had
    acknowledged, not start over (a week of events again: a second reset link by SMTP, which has
    no idempotency key) nor skip what it had not handled yet."""
    ns = Namespace(settings.nats_namespace)
    js = nc.jetstream()
    await ensure_streams(js, ns)
    durable = Durable("test-recreated", "CATALOG", "smm.catalog.>")
    await js.add_consumer(
        ns.stream("CATALOG"),
        api.ConsumerConfig(
            durable_name=ns.durable(durable.name),
            filter_subject=ns.subject(durable.filter_subject),
            ack_policy=api.AckPolicy.ALL,
            deliver_policy=api.DeliverPolicy.ALL,
        ),
    )
    await _publish(js, ns, "e-1", "e-2", "e-3", "e-4")
    assert await _take(js, ns, durable, 2) == ["e-1", "e-2"]
    await ensure_durable(js, ns, durable)
    info = await js.consumer_info(ns.stream("CATALOG"), ns.durable(durable.name))
    assert info.config.ack_policy == api.AckPolicy.EXPLICIT  # recreated with today's settings
    assert await _take(js, ns, durable, 5) == ["e-3", "e-4"]
