"""A NATS outage is reported in a few lines, not a traceback per reconnect attempt per process."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from core.events import connect
from ops.embedded import free_port, start_nats

pytestmark = pytest.mark.integration


async def test_a_nats_outage_logs_one_line_per_kind_of_failure_without_tracebacks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With NATS gone, nats-py's default error callback logged "nats: encountered error" at ERROR
    with a whole traceback on every reconnect attempt (once a second, in every process): 324
    lines in 30 s of a `make run`, burying what else went wrong and paging whoever alerts on
    ERROR. The outage is a warning, once per kind of failure until it changes."""
    port = free_port()
    server = start_nats(tmp_path / "nats", port)
    back = asyncio.Event()

    async def reconnected() -> None:  # the caller's own callback (the edge turns its cache on)
        back.set()

    client = await connect(server.url, name="outage-test", reconnected_cb=reconnected)
    try:
        caplog.set_level(logging.DEBUG)
        server.stop()
        await asyncio.sleep(4.5)  # four or five reconnect attempts, each refused
        nats_records = [r for r in caplog.records if r.name.startswith(("nats", "core.events"))]
        assert [r for r in nats_records if r.exc_info or r.levelno >= logging.ERROR] == []
        warnings = [r for r in nats_records if r.levelno == logging.WARNING]
        assert 1 <= len(warnings) <= 2, [r.getMessage() for r in warnings]
        assert any("NATS" in r.getMessage() for r in warnings)

        server = start_nats(tmp_path / "nats", port)
        await asyncio.wait_for(back.wait(), timeout=10)
        assert client.is_connected
    finally:
        await client.close()
        server.stop()
