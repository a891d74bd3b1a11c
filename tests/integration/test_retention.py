"""Retention: the hourly purge jobs delete operational rows past their retention, in bounded
batches (each its own transaction), and keep what is still needed: pending outbox rows, request
ids inside their window, live credentials, the provider log of an order not finished yet."""

from __future__ import annotations

import grpc
import pytest
from smm.v1 import system_service_pb2 as spb
from smm.v1 import system_service_pb2_grpc as spb_grpc

from core.config import Settings
from server.common.db import Pool
from tests.fix_db import make_settings
from tests.fix_grpc import system_metadata

pytestmark = pytest.mark.integration
HOUR = 3600
BATCH = 3


@pytest.fixture
def settings(db_url: str, nats_url: str, namespace: str) -> Settings:
    return make_settings(
        db_url, nats_url=nats_url, nats_namespace=namespace, relay_poll_s=0.2, retention_batch=BATCH
    )


async def run(channel: grpc.aio.Channel, job: str, period_start: int) -> str:
    stub = spb_grpc.SystemServiceStub(channel)
    done = await stub.RunJob(
        spb.RunJobRequest(job=job, period_start=period_start), metadata=system_metadata()
    )
    assert done.ran_now
    return str(done.result)


async def count(pool: Pool, sql: str) -> int:
    async with pool.connection() as conn:
        row = await (await conn.execute(sql)).fetchone()
    assert row is not None
    return int(row[0])


async def test_outbox_purge_deletes_old_published_rows_and_request_ids_in_batches(
    channel: grpc.aio.Channel, pool: Pool
) -> None:
    async with pool.connection() as conn:
        # 7 published 8 days ago (gone), 2 published 6 days ago, 2 pending 10 days old (kept).
        await conn.execute(
            "INSERT INTO outbox_events (subject, payload, created_at, published_at)"
            " SELECT 'old', '', now() - interval '8 days', now() - interval '8 days' FROM generate_series(1, 7)"
        )
        await conn.execute(
            "INSERT INTO outbox_events (subject, payload, created_at, published_at)"
            " SELECT 'recent', '', now() - interval '6 days', now() - interval '6 days' FROM generate_series(1, 2)"
        )
        await conn.execute(
            "INSERT INTO outbox_events (subject, payload, created_at, published_at)"
            " SELECT 'pending', '', now() - interval '10 days', NULL FROM generate_series(1, 2)"
        )
        # 8 request ids 31 days old (gone), 2 of 29 days (kept: inside their window).
        await conn.execute(
            "INSERT INTO idempotent_requests (rpc, actor, request_id, request_hash, created_at)"
            " SELECT 'R', 'a', 'old-' || n, '', now() - interval '31 days' FROM generate_series(1, 8) n"
        )
        await conn.execute(
            "INSERT INTO idempotent_requests (rpc, actor, request_id, request_hash, created_at)"
            " SELECT 'R', 'a', 'new-' || n, '', now() - interval '29 days' FROM generate_series(1, 2) n"
        )
    result = await run(channel, "outbox-purge", 5 * HOUR)
    # 7 old rows first by id: 3 + 3 + 1, the third batch stopping at the recent
    # ones (the pending ones come after); 8 request ids: 3 + 3 + 2 (a short batch ends it).
    assert "outbox_events 7 (3 batches)" in result, result
    assert "idempotent_requests 8 (3 batches)" in result, result
    subjects = await count(pool, "SELECT count(*) FROM outbox_events WHERE subject = 'old'")
    assert subjects == 0
    assert await count(pool, "SELECT count(*) FROM outbox_events WHERE subject = 'recent'") == 2
    assert await count(pool, "SELECT count(*) FROM outbox_events WHERE subject = 'pending'") == 2
    assert await count(pool, "SELECT count(*) FROM idempotent_requests WHERE request_id LIKE 'old-%'") == 0
    assert await count(pool, "SELECT count(*) FROM idempotent_requests WHERE request_id LIKE 'new-%'") == 2


async def test_retention_purge_deletes_old_operational_rows_and_keeps_what_is_still_needed(
    channel: grpc.aio.Channel, pool: Pool
) -> None:
    async with pool.connection() as conn:
        user = await (
            await conn.execute(
                "INSERT INTO users (email, password_hash) VALUES ('r@example.com', 'x') RETURNING id"
            )
        ).fetchone()
        assert user is not None
        uid = user[0]
        category = await (
            await conn.execute("INSERT INTO categories (name) VALUES ('c') RETURNING id")
        ).fetchone()
        assert category is not None
        service = await (
            await conn.execute(
                "INSERT INTO services (category_id, name, type, rate_micros) VALUES (%s, 's', 'DEFAULT', 1)"
                " RETURNING id",
                (category[0],),
            )
        ).fetchone()
        assert service is not None
        provider = await (
            await conn.execute(
                "INSERT INTO providers (name, api_url, api_key_ciphertext, currency)"
                " VALUES ('p', 'https://p.example', 'k', 'USD') RETURNING id"
            )
        ).fetchone()
        assert provider is not None
        orders = {}
        for status in ("completed", "in_progress", "needs_review"):
            row = await (
                await conn.execute(
                    "INSERT INTO orders (user_id, service_id, link, quantity, billable, rate_micros, price_micros,"
                    " status) VALUES (%s, %s, 'https://x', 1, 1, 0, 0, %s) RETURNING id",
                    (uid, service[0], status),
                )
            ).fetchone()
            assert row is not None
            orders[status] = row[0]
        done, running, review = orders["completed"], orders["in_progress"], orders["needs_review"]

        async def exchanges(order_ids: list[int], age: str, n: int, action: str) -> None:
            await conn.execute(
                "INSERT INTO provider_exchanges (provider_id, order_ids, action, outcome, create_time)"
                " SELECT %s, %s, %s, 'ok', now() - %s::interval FROM generate_series(1, %s)",
                (provider[0], order_ids, action, age, n),
            )

        # 91 days old: 5 of a finished order and 2 without an order go; one of a running order
        # (with a finished one) and one of an order in review stay; 2 recent ones stay.
        await exchanges([done], "91 days", 5, "old")
        await exchanges([], "91 days", 2, "old")
        await exchanges([done, running], "91 days", 1, "open")
        await exchanges([review], "91 days", 1, "open")
        await exchanges([done], "89 days", 2, "recent")
        for table, to in (("email_messages", "to_address"), ("sms_messages", "to_number")):
            await conn.execute(
                f"INSERT INTO {table} (event_id, user_id, {to}, template, create_time)"  # noqa: S608
                " SELECT 'e' || n, %s, 'x', 't', now() - interval '91 days' FROM generate_series(1, 4) n",
                (uid,),
            )
            await conn.execute(
                f"INSERT INTO {table} (event_id, user_id, {to}, template, create_time)"  # noqa: S608
                " SELECT 'f' || n, %s, 'x', 't', now() - interval '80 days' FROM generate_series(1, 1) n",
                (uid,),
            )
        # Credentials: 4 expired 8 days ago go; expired yesterday or live stay.
        for age, n in (("8 days", 4), ("1 day", 1), ("-30 days", 1)):
            await conn.execute(
                "INSERT INTO sessions (user_id, token_hash, expire_time)"
                " SELECT %s, gen_random_uuid()::text::bytea, now() - %s::interval FROM generate_series(1, %s)",
                (uid, age, n),
            )
            await conn.execute(
                "INSERT INTO account_tokens (user_id, purpose, token_hash, expire_time)"
                " SELECT %s, 'reset_password', gen_random_uuid()::text::bytea, now() - %s::interval"
                " FROM generate_series(1, %s)",
                (uid, age, n),
            )
            await conn.execute(
                "INSERT INTO phone_codes (user_id, phone, code_hash, expire_time)"
                " SELECT %s, '+15550001111', '', now() - %s::interval FROM generate_series(1, %s)",
                (uid, age, n),
            )
        key = await (
            await conn.execute(
                "INSERT INTO api_keys (user_id, name, prefix, token_hash) VALUES (%s, 'k', 'p', 'h') RETURNING id",
                (uid,),
            )
        ).fetchone()
        assert key is not None
        await conn.execute(
            "INSERT INTO api_key_usage_days (api_key_id, day, calls)"
            " SELECT %s, current_date - d, 1 FROM generate_series(0, 404) d",
            (key[0],),
        )
        # job_runs: 31 to 40 days old go (10), 29 days old stays.
        await conn.execute(
            "INSERT INTO job_runs (job, period_start)"
            " SELECT 'order-poll', date_trunc('minute', now()) - make_interval(days => d) FROM generate_series(29, 40) d"
            " WHERE d <> 30"
        )

    result = await run(channel, "retention-purge", ((2**31) // HOUR) * HOUR)
    assert "provider_exchanges 7 (" in result, result
    assert "sessions 4 (2 batches)" in result, result
    assert "job_runs 10 (" in result, result

    async def left(sql: str) -> int:
        return await count(pool, sql)

    assert await left("SELECT count(*) FROM provider_exchanges WHERE action = 'old'") == 0
    assert await left("SELECT count(*) FROM provider_exchanges WHERE action = 'open'") == 2
    assert await left("SELECT count(*) FROM provider_exchanges WHERE action = 'recent'") == 2
    assert await left("SELECT count(*) FROM email_messages") == 1
    assert await left("SELECT count(*) FROM sms_messages") == 1
    assert await left("SELECT count(*) FROM sessions") == 2
    assert await left("SELECT count(*) FROM account_tokens") == 2
    assert await left("SELECT count(*) FROM phone_codes") == 2
    assert await left("SELECT count(*) FROM api_key_usage_days") == 401
    assert await left("SELECT count(*) FROM job_runs WHERE job = 'order-poll'") == 1
