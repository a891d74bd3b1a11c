"""The PostgreSQL pool and the mapping of database failures to domain errors."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from core.config import Settings
from server.common.errors import Aborted, DomainError, Internal, Unavailable

log = logging.getLogger(__name__)

Pool = AsyncConnectionPool[psycopg.AsyncConnection[Any]]


async def open_pool(settings: Settings, *, conninfo: str | None = None) -> Pool:
    pool: Pool = AsyncConnectionPool(
        conninfo or settings.database_url,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        timeout=settings.db_pool_timeout_s,
        open=False,
        check=AsyncConnectionPool.check_connection,
        kwargs={"application_name": settings.service_name},
        name="smm",
    )
    await pool.open(wait=True, timeout=settings.db_pool_timeout_s * 3)
    return pool


@contextmanager
def map_db_errors(constraints: Mapping[str, Callable[[], DomainError]] | None = None) -> Iterator[None]:
    """Turn psycopg failures into DomainErrors, as httpx's ``map_httpcore_exceptions`` does.

    ``constraints`` maps a constraint name to a factory of the error its violation means.
    """
    try:
        yield
    except DomainError:
        raise
    except (pg_errors.SerializationFailure, pg_errors.DeadlockDetected) as exc:
        raise Aborted("the operation conflicted with another one; retry it", reason="CONFLICT_RETRY") from exc
    except pg_errors.IntegrityError as exc:
        name = exc.diag.constraint_name or ""
        if constraints and name in constraints:
            raise constraints[name]() from exc
        log.exception("unmapped integrity error on constraint %s", name)
        raise Internal() from exc
    except (PoolTimeout, psycopg.OperationalError) as exc:
        raise Unavailable("the database is unavailable", reason="DATABASE_UNAVAILABLE") from exc
