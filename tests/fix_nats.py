"""NATS JetStream for the tests: one server per session (embedded unless SMM_NATS_URL is set) and
a unique namespace per test, so streams, subjects and durables never cross tests."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
from nats.aio.client import Client as NATS

from core.config import Settings
from core.events import connect
from ops.embedded import EmbeddedNats, free_port, start_nats
from workers.main import run_worker


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("SMM_NATS_URL")
    if external:
        yield external
        return
    server: EmbeddedNats = start_nats(tmp_path_factory.mktemp("nats"), free_port())
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def nc(settings: Settings) -> AsyncIterator[NATS]:
    client = await connect(settings.nats_url, name="tests")
    yield client
    await client.close()


@asynccontextmanager
async def running_worker(settings: Settings, name: str) -> AsyncIterator[asyncio.Task[None]]:
    """A worker process's main loop, run as a task in the test's event loop."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(settings, name, stop), name=f"worker-{name}")
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
