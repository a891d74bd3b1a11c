"""Named queries from a ``queries.sql`` file (aiosql format), run through psycopg.

aiosql parses the file and turns ``:name`` parameters into psycopg's ``%(name)s``; execution
stays plain psycopg so rows come back through ``class_row`` into frozen dataclasses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import aiosql
from psycopg import AsyncConnection
from psycopg.rows import class_row

T = TypeVar("T")


class Queries:
    def __init__(self, path: Path) -> None:
        loaded = aiosql.from_path(path, "psycopg")
        self.path = path
        names = set(loaded.available_queries)
        # aiosql adds a "<name>_cursor" twin for selects; we only need the query text once.
        self._sql: dict[str, str] = {
            name: getattr(loaded, name).sql
            for name in names
            if not (name.endswith("_cursor") and name.removesuffix("_cursor") in names)
        }

    @property
    def names(self) -> list[str]:
        return sorted(self._sql)

    def sql(self, name: str) -> str:
        return self._sql[name]

    async def one(self, conn: AsyncConnection[Any], name: str, row: type[T], /, **params: Any) -> T | None:
        async with conn.cursor(row_factory=class_row(row)) as cur:
            await cur.execute(self._sql[name], params)
            return await cur.fetchone()

    async def all(self, conn: AsyncConnection[Any], name: str, row: type[T], /, **params: Any) -> list[T]:
        async with conn.cursor(row_factory=class_row(row)) as cur:
            await cur.execute(self._sql[name], params)
            return await cur.fetchall()

    async def scalar(self, conn: AsyncConnection[Any], name: str, /, **params: Any) -> Any:
        async with conn.cursor() as cur:
            await cur.execute(self._sql[name], params)
            found = await cur.fetchone()
            return None if found is None else found[0]

    async def execute_many(self, conn: AsyncConnection[Any], name: str, rows: list[dict[str, Any]]) -> None:
        """One statement for many parameter sets, pipelined by psycopg (one round trip per batch)."""
        if rows:
            async with conn.cursor() as cur:
                await cur.executemany(self._sql[name], rows)

    async def execute(self, conn: AsyncConnection[Any], name: str, /, **params: Any) -> int:
        async with conn.cursor() as cur:
            await cur.execute(self._sql[name], params)
            return cur.rowcount


def load(module_file: str) -> Queries:
    """The queries.sql next to the calling repo module."""
    return Queries(Path(module_file).with_name("queries.sql"))
