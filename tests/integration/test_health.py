"""Health turns 503 naming PostgreSQL when it stops, and recovers when it returns."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from ops.embedded import create_database, free_port, start_postgres
from server.common.db import open_pool
from server.common.migrate import migrate
from server.main import create_server
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
