"""Outbox relay throughput: committed outbox rows -> JetStream acks, one relay and two in parallel.

In-process against a throwaway durable embedded PostgreSQL and NATS. Prints numbers only.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from _stack import bench_settings, throwaway_stack  # bench/ is sys.path[0] when run as a script
from nats.aio.client import Client as NATS

from core.events import Namespace, connect
from server.common.db import Pool, open_pool
from server.common.relay import Relay

N = 20_000
BATCH = 200
SUBJECT = "smm.catalog.service.changed"
INSERT = """
INSERT INTO outbox_events (subject, payload)
SELECT %(subject)s, convert_to('{"service_id":' || g || ',"bench":true}', 'UTF8')
FROM generate_series(1, %(n)s) AS g
"""


async def _insert(pool: Pool, n: int) -> None:
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(INSERT, {"subject": SUBJECT, "n": n})


async def _drain(relay: Relay) -> int:
    moved = 0
    while True:
        got = await relay.relay_once()
        if got == 0:
            return moved
        moved += got


async def _pending(pool: Pool) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM outbox_events WHERE published_at IS NULL")
        row = await cur.fetchone()
        return int(row[0]) if row else -1


async def _mode(pool: Pool, relays: list[Relay], label: str) -> tuple[str, int, float]:
    await _insert(pool, N)  # committed when this returns: the clock starts at commit
    started = time.perf_counter()
    counts = await asyncio.gather(*(_drain(r) for r in relays))
    elapsed = time.perf_counter() - started
    moved = sum(counts)
    left = await _pending(pool)
    split = " + ".join(str(c) for c in counts)
    print(f"  {label:<24} {moved:>7} events in {elapsed:6.2f} s  = {moved / elapsed:>8,.0f} events/s", end="")
    print(f"   (per relay: {split}; left pending: {left})", flush=True)
    return label, moved, elapsed


async def main() -> None:
    with throwaway_stack("relay") as stack:
        settings = bench_settings(stack)
        pool = await open_pool(settings)
        clients: list[NATS] = []
        try:
            ns = Namespace("bench")
            for i in range(2):
                clients.append(await connect(stack.nats_url, name=f"bench-relay-{i}"))
            relays = [Relay(pool, nc, ns, conninfo=stack.database_url, batch=BATCH) for nc in clients]
            for relay in relays:
                await relay.relay_once()  # creates the streams; nothing pending yet
            print(
                f"outbox relay: N={N} rows per mode, batch={BATCH}, durable PostgreSQL, JetStream file store"
            )
            await _mode(pool, relays[:1], "1 relay")
            await _mode(pool, relays, "2 relays (SKIP LOCKED)")
        finally:
            for nc in clients:
                await nc.close()
            await pool.close()


if __name__ == "__main__":
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
