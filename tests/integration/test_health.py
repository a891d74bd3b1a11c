"""Health turns 503 naming PostgreSQL when it stops, and recovers when it returns."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from core.events import Namespace, connect
from ops.embedded import create_database, free_port, start_nats, start_postgres
from server.common.db import Pool, open_pool
from server.common.health import CHECK_TIMEOUT_S, Check
from server.common.migrate import migrate
from server.common.relay import Relay
from server.main import create_server, nats_check
from tests.fix_db import make_settings
from tests.fix_edge import start_edge
from tests.integration.test_events import eventually

pytestmark = pytest.mark.integration


async def test_health_names_postgres_when_it_is_down(tmp_path: Path) -> None:
    postgres = start_postgres(tmp_path / "pg", free_port(), durable=False)
    try:
        url = create_database(postgres.url, "smm")
        migrate(url)
        settings = make_settings(url, db_pool_timeout_s=1.0)
        pool = await open_pool(settings)
        handle = await create_server(settings, pool, address="127.0.0.1:0")
        edge = await start_edge(settings.model_copy(update={"grpc_target": f"127.0.0.1:{handle.port}"}))
        try:
            async with httpx.AsyncClient(base_url=edge.base_url, timeout=10) as http:
                assert (await http.get("/api/v1/public/health")).status_code == 200
                postgres.stop()
                response = await http.get("/api/v1/public/health")
                assert response.status_code == 503
                error = response.json()["error"]
                assert error["status"] == "UNAVAILABLE"
                assert "postgres" in error["message"]
                [info] = [d for d in error["details"] if d["reason"] == "DEPENDENCY_DOWN"]
                assert info["metadata"]["down"] == "postgres"
                assert info["metadata"]["postgres"] == "down"
                # Any other read also fails cleanly, never a 500.
                services = await http.get("/api/v1/public/services")
                assert services.status_code == 503
                restarted = start_postgres(tmp_path / "pg", postgres.port, durable=False)
                assert restarted.port == postgres.port
                await pool.check()

                async def healthy() -> bool:
                    return (await http.get("/api/v1/public/health")).status_code == 200

                # The pool reconnects with back-off, so recovery takes a moment.
                await eventually(healthy, 20)
        finally:
            await edge.stop()
            await handle.stop(None)
            await pool.close()
    finally:
        postgres.stop()


async def test_health_when_the_grpc_server_is_gone(tmp_path: Path, settings: object) -> None:
    edge = await start_edge(settings.model_copy(update={"grpc_target": f"127.0.0.1:{free_port()}"}))  # type: ignore[attr-defined]
    try:
        async with httpx.AsyncClient(base_url=edge.base_url, timeout=10) as http:
            response = await http.get("/api/v1/public/health")
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["details"][0]["reason"] == "BACKEND_UNAVAILABLE"
    finally:
        await edge.stop()


async def test_health_names_a_nats_that_stopped_answering(tmp_path: Path, pool: Pool) -> None:
    """The check asked only whether the connection was open. A NATS that hangs (or a network that
    drops its packets) keeps the socket open, so health said NATS was up for minutes while nothing
    was published; a round trip to NATS is asked now."""
    nats_server = start_nats(tmp_path / "nats", free_port())
    nc = await connect(nats_server.url, name="health-test")
    relay = Relay(pool, nc, Namespace("health"), conninfo="")
    check = nats_check(relay)
    try:
        await check()  # up
        os.kill(nats_server.process.pid, signal.SIGSTOP)
        # kill() returns before the other core has stopped the process: a PING written at once
        # could still be answered. The check is asked once the process is stopped ("T").

        async def stopped() -> bool:
            return _stopped(nats_server.process.pid)

        await eventually(stopped)
        with pytest.raises(Exception):  # noqa: B017, PT011 - any failure means down
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                await check()
        os.kill(nats_server.process.pid, signal.SIGCONT)
        await eventually(check_passes(check))
    finally:
        os.kill(nats_server.process.pid, signal.SIGCONT)
        await nc.close()
        nats_server.stop()


def _stopped(pid: int) -> bool:
    # /proc/<pid>/stat: "pid (comm) state ..."; the command may hold spaces, the state follows ")".
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def check_passes(check: Check) -> Callable[[], Awaitable[bool]]:
    async def passes() -> bool:
        try:
            await check()
        except Exception:
            return False
        return True

    return passes
