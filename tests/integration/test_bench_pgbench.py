"""The benchmark's pgbench script replays the server's own order statement: it is built from the
queries the server runs, so a change to their parameters must show here, not in a failed
`make bench` (a new column of the order statement broke it once). The reference write that
calibrates the machine (bench/reference/) must do what ENVIRONMENT.md describes, or its figure
compares nothing."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from ops.embedded import postgres_bin_dir
from server.common.db import Pool
from tests.fix_shop import Shop

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "bench"


async def _count_orders(pool: Pool) -> int:
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT count(*) FROM orders")).fetchone()
    assert row is not None
    return int(row[0])


async def _pgbench(script: Path, db_url: str, *, transactions: int) -> None:
    """One client running ``script`` ``transactions`` times; pgbench's output in the failure."""
    argv = [str(postgres_bin_dir() / "pgbench"), "-n", "-t", str(transactions), "-c", "1", "-f", str(script)]
    done = await asyncio.to_thread(
        subprocess.run, [*argv, db_url], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


async def test_the_pgbench_script_places_orders_as_the_server_does(
    shop: Shop, pool: Pool, db_url: str, tmp_path: Path
) -> None:
    ann = await shop.user("ann@example.com", "50.00")
    placed = await shop.order(ann, serviceId=shop.service_id("2"), link="https://x.com/b", quantity=1000)
    assert placed.status_code == 200, placed.text
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT user_id FROM orders")).fetchone()
    assert row is not None
    user_id = int(row[0])

    sys.path.insert(0, str(BENCH))
    try:
        from orders import order_transaction_script
    finally:
        sys.path.remove(str(BENCH))
    text, statements = order_transaction_script(db_url, user_id, user_id)
    assert statements >= 2
    script = tmp_path / "order.sql"
    script.write_text(text)
    await _pgbench(script, db_url, transactions=3)
    assert await _count_orders(pool) == 4
    assert (await shop.verify()).ok


async def test_the_reference_write_holds_and_places_as_environment_md_describes(db_url: str) -> None:
    reference = BENCH / "reference"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute((reference / "schema.sql").read_text().encode())
    await _pgbench(reference / "order.pgbench.sql", db_url, transactions=3)
    with psycopg.connect(db_url, autocommit=True) as conn:
        orders, entries, total, held = conn.execute(
            "SELECT (SELECT count(*) FROM bench_reference.orders),"
            " (SELECT count(*) FROM bench_reference.ledger),"
            " (SELECT sum(amount) FROM bench_reference.ledger),"
            " (SELECT sum(held) FROM bench_reference.wallets)"
        ).fetchone() or (None, None, None, None)
        conn.execute("DROP SCHEMA bench_reference CASCADE")
    assert (orders, entries, total, held) == (3, 6, 0, 3 * 1521)
