"""A warning at start-up when PostgreSQL may lose transactions it reported committed.

With ``synchronous_commit = off`` a committed order is visible to the relay before it is on
disk: a database crash can then lose the order and its hold after dispatch placed it upstream,
and the provider delivers what smm has no record of. ``fsync`` or ``full_page_writes`` off can
lose or corrupt more. The server still starts (a throwaway cluster, as the test suite's, may
want speed), but says so where operators look (docs/DEPLOYMENT.md, PostgreSQL settings)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from server.common.db import Pool

log = logging.getLogger(__name__)

# Each of these "off" gives up durability; synchronous_commit's other values (local, remote_*)
# all wait for the local disk.
DURABILITY_SETTINGS = ("fsync", "full_page_writes", "synchronous_commit")

READ_DURABILITY_SETTINGS = "SELECT name, setting FROM pg_settings WHERE name = ANY(%(names)s)"


def not_durable(settings: Mapping[str, str]) -> list[str]:
    """The durability settings that are off, in DURABILITY_SETTINGS's order."""
    return [name for name in DURABILITY_SETTINGS if settings.get(name) == "off"]


async def warn_if_not_durable(pool: Pool) -> list[str]:
    """Read the server's settings once and log a warning naming those that are off."""
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(READ_DURABILITY_SETTINGS, {"names": list(DURABILITY_SETTINGS)})
        ).fetchall()
    off = not_durable({str(name): str(setting) for name, setting in rows})
    if off:
        log.warning(
            "PostgreSQL runs with %s off: a crash can lose orders and ledger entries it reported"
            " committed (docs/DEPLOYMENT.md, PostgreSQL settings)",
            ", ".join(off),
        )
    return off
