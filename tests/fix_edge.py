"""The edge served over real HTTP on loopback, pointed at the in-process gRPC server."""

from __future__ import annotations

import asyncio
import itertools
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from core.config import Settings
from edge.app import EdgeApp, create_app
from ops.embedded import free_port
from server.main import ServerHandle

_names = itertools.count()
# One TLS context for the tests' HTTP clients: httpx loads the CA bundle into a new one for every
# client otherwise (about 60 ms, for clients that only speak plain HTTP on loopback).
TEST_TLS = ssl.create_default_context()


@dataclass
class RunningEdge:
    app: EdgeApp
    base_url: str
    server: Any

    async def stop(self) -> None:
        await self.server.close()
        await self.server.wait_closed()
        await self.server.after_stop()


async def start_edge(settings: Settings) -> RunningEdge:
    app = create_app(settings, name=f"smm-edge-test-{next(_names)}")
    # Sanic's touch-up rewrites its HTTP classes once per process; with many apps per test
    # session the second rewrite fails, so tests run without it (it only prunes signal calls).
    app.config.TOUCHUP = False
    port = free_port()
    server = await app.create_server(
        host="127.0.0.1", port=port, return_asyncio_server=True, access_log=False, debug=False
    )
    assert server is not None
    await server.startup()
    await server.before_start()
    await server.after_start()
    if settings.nats_url:  # the cache turns on once the edge has subscribed (or NATS is down)
        for _ in range(60):
            if app.ctx.cache.enabled:
                break
            await asyncio.sleep(0.05)
    return RunningEdge(app, f"http://127.0.0.1:{port}", server)


@pytest.fixture
async def edge(settings: Settings, grpc_server: ServerHandle) -> AsyncIterator[RunningEdge]:
    running = await start_edge(settings.model_copy(update={"grpc_target": f"127.0.0.1:{grpc_server.port}"}))
    yield running
    await running.stop()


@pytest.fixture
async def http(edge: RunningEdge) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=edge.base_url, timeout=10, verify=TEST_TLS) as client:
        yield client


@asynccontextmanager
async def silent_backend(settings: Settings, **update: Any) -> AsyncIterator[RunningEdge]:
    """An edge whose gRPC backend accepts connections and never answers: every call waits for
    its own deadline."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    backend = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = backend.sockets[0].getsockname()[1]
    edge = await start_edge(
        settings.model_copy(update={"grpc_target": f"127.0.0.1:{port}", "nats_url": "", **update})
    )
    try:
        yield edge
    finally:
        await edge.stop()
        for writer in held:
            writer.close()
        backend.close()
        await backend.wait_closed()
