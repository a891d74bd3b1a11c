"""The gRPC server in-process on a free port, and channels to it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from core.config import Settings
from server.common.db import Pool
from server.main import ServerHandle, create_server
from tests.fix_db import INTERNAL_TOKEN


def system_metadata(tool: str = "tests") -> tuple[tuple[str, str], ...]:
    return (("x-smm-internal-token", INTERNAL_TOKEN), ("x-smm-actor", f"system:{tool}"))


def anonymous_metadata() -> tuple[tuple[str, str], ...]:
    return (("x-smm-internal-token", INTERNAL_TOKEN),)


@pytest.fixture
async def grpc_server(settings: Settings, pool: Pool) -> AsyncIterator[ServerHandle]:
    handle = await create_server(settings, pool, address="127.0.0.1:0")
    yield handle
    await handle.stop(None)


@pytest.fixture
async def channel(grpc_server: ServerHandle) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_server.port}") as opened:
        yield opened
