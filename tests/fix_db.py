"""PostgreSQL for the tests: one server per session (embedded unless SMM_DATABASE_URL is set),
migrations applied once into a template database, and a fresh database per test cloned from it."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from pydantic import SecretStr

from core.config import Settings
from ops.embedded import EmbeddedPostgres, create_database, free_port, start_postgres
from server.common.db import Pool, open_pool
from server.common.migrate import migrate

INTERNAL_TOKEN = "test-internal-token"


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("SMM_DATABASE_URL")
    if external:
        yield external
        return
    server: EmbeddedPostgres = start_postgres(
        tmp_path_factory.mktemp("pg") / "data", free_port(), durable=False
    )
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def template_db(pg_admin_url: str) -> str:
    name = f"smm_template_{uuid.uuid4().hex[:8]}"
    url = create_database(pg_admin_url, name)
    migrate(url)
    return name


def drop_database(admin_url: str, name: str) -> None:
    # FORCE ends the test's leftover sessions. A role without superuser or pg_signal_backend may
    # not end an autovacuum worker that happens to be in the database (no role of its own); it
    # finishes or yields within moments, so the drop is tried again for a few seconds.
    statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    for attempt in range(50):
        try:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(statement)
            return
        except psycopg.errors.InsufficientPrivilege:
            if attempt == 49:
                raise
            time.sleep(0.1)


@pytest.fixture
def db_url(pg_admin_url: str, template_db: str) -> Iterator[str]:
    name = f"smm_test_{uuid.uuid4().hex[:12]}"
    url = create_database(pg_admin_url, name, template=template_db)
    yield url
    drop_database(pg_admin_url, name)


@pytest.fixture
def empty_db_url(pg_admin_url: str) -> Iterator[str]:
    """A database with no migrations applied."""
    name = f"smm_empty_{uuid.uuid4().hex[:12]}"
    url = create_database(pg_admin_url, name)
    yield url
    drop_database(pg_admin_url, name)


# A fixed 32-byte test key (base64url): tests only, never a deployment.
TEST_ENCRYPTION_KEYS = "test1:dGVzdC1rZXktdGVzdC1rZXktdGVzdC1rZXktMzJieXQ"


def make_settings(db_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": db_url,
        "internal_token": SecretStr(INTERNAL_TOKEN),
        "page_token_secret": SecretStr("test-page-token-secret"),
        "encryption_keys": SecretStr(TEST_ENCRYPTION_KEYS),
        "db_pool_min": 1,
        "db_pool_max": 8,
        # The authorization matrix alone calls the mail-sending routes more often than the
        # production per-minute limits allow; tests/integration/test_rate_limits.py sets them tight.
        "rate_reset_per_ip_per_min": 500,
        "rate_reset_per_account_per_min": 100,
        "var_dir": str(Path(os.environ.get("TMPDIR", "/tmp")) / "smm-test-var"),
        # Tests play "another server copy" by changing providers and circuits in SQL and expect the
        # next call to see it; the cache itself is tested in tests/integration/test_provider_state_cache.py.
        "provider_state_cache_s": 0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(db_url: str, nats_url: str, namespace: str) -> Settings:
    return make_settings(db_url, nats_url=nats_url, nats_namespace=namespace, relay_poll_s=0.2)


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[Pool]:
    opened = await open_pool(settings)
    yield opened
    await asyncio.wait_for(opened.close(), 10)


async def lock_waiters(pool: Pool, count: int, *, unless: asyncio.Future[object] | None = None) -> None:
    """Until at least ``count`` backends of this test's database wait on a lock (a row lock the test
    holds), or ``unless`` has finished (the call it waits for did not queue after all); 10 s at most."""
    async with asyncio.timeout(10):
        while unless is None or not unless.done():
            async with pool.connection() as probe:
                row = await (
                    await probe.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND datname = current_database()"
                    )
                ).fetchone()
            if row is not None and row[0] >= count:
                return
            await asyncio.sleep(0.02)
