"""The gRPC server in-process on a free port, and channels to it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from core.config import Settings
from core.events import connect
from server.common.db import Pool
from server.main import ServerHandle, create_server
from tests.fix_db import INTERNAL_TOKEN


def system_metadata(tool: str = "tests") -> tuple[tuple[str, str], ...]:
    return (("x-smm-internal-token", INTERNAL_TOKEN), ("x-smm-actor", f"system:{tool}"))


def anonymous_metadata() -> tuple[tuple[str, str], ...]:
    return (("x-smm-internal-token", INTERNAL_TOKEN),)


@pytest.fixture
async def grpc_server(settings: Settings, pool: Pool) -> AsyncIterator[ServerHandle]:
    """The server with its outbox relay, as ``smm serve grpc`` runs it."""
    nc = await connect(settings.nats_url, name="tests-grpc")
    handle = await create_server(settings, pool, address="127.0.0.1:0", nc=nc)
    yield handle
    await asyncio.wait_for(handle.stop(None), 10)
    await asyncio.wait_for(nc.close(), 10)


@pytest.fixture
def worker_settings(settings: Settings, grpc_server: ServerHandle) -> Settings:
    return settings.model_copy(update={"grpc_target": f"127.0.0.1:{grpc_server.port}"})


@pytest.fixture
async def channel(grpc_server: ServerHandle) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_server.port}") as opened:
        yield opened
