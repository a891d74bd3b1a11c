"""The gRPC server warns at start-up when PostgreSQL may lose what it reported committed (the test
suite's throwaway cluster runs with fsync, full_page_writes and synchronous_commit off)."""

from __future__ import annotations

import logging

import pytest

from server.common.db import Pool
from server.common.durability import not_durable, warn_if_not_durable

pytestmark = pytest.mark.integration


async def test_the_test_cluster_is_named_not_durable_in_a_warning(
    pool: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="server.common.durability")
    assert await warn_if_not_durable(pool) == ["fsync", "full_page_writes", "synchronous_commit"]
    [record] = [r for r in caplog.records if r.name == "server.common.durability"]
    assert record.levelno == logging.WARNING
    assert "fsync, full_page_writes, synchronous_commit off" in record.getMessage()


@pytest.mark.parametrize(
    ("settings", "off"),
    [
        ({"fsync": "on", "full_page_writes": "on", "synchronous_commit": "on"}, []),
        # local and remote_* still wait for the local disk
        ({"fsync": "on", "full_page_writes": "on", "synchronous_commit": "local"}, []),
        ({"fsync": "on", "full_page_writes": "on", "synchronous_commit": "remote_apply"}, []),
        ({"fsync": "on", "full_page_writes": "on", "synchronous_commit": "off"}, ["synchronous_commit"]),
        ({"fsync": "off", "full_page_writes": "on", "synchronous_commit": "on"}, ["fsync"]),
    ],
)
def test_only_settings_that_are_off_are_named(settings: dict[str, str], off: list[str]) -> None:
    assert not_durable(settings) == off
