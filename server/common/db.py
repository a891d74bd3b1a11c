"""The PostgreSQL pool and the mapping of database failures to domain errors."""

from __future__ import annotations

import logging
import time
import weakref
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


IDLE_CHECK_S = 5.0


async def open_pool(settings: Settings, *, conninfo: str | None = None) -> Pool:
    """The process's pool. Connections are in autocommit: a lone statement is its own transaction
    (one round trip, where an implicit BEGIN and the COMMIT at check-in made three), and every unit
    of work of more than one statement says so with ``conn.transaction()``."""
    pool: Pool = AsyncConnectionPool(
        conninfo or settings.database_url,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        timeout=settings.db_pool_timeout_s,
        open=False,
        check=_check_if_idle,
        kwargs={"application_name": settings.service_name, "autocommit": True},
        name="smm",
    )
    await pool.open(wait=True, timeout=settings.db_pool_timeout_s * 3)
    return pool


# When each pooled connection was last handed out (weak: the pool drops connections it closes).
_handed_out: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], float] = weakref.WeakKeyDictionary()


async def _check_if_idle(conn: psycopg.AsyncConnection[Any]) -> None:
    """The pool's check on check-out: a round trip only for a connection not handed out for a
    while (the server or the network may have dropped it meanwhile). A busy pool hands its
    connections out unchecked (psycopg_pool discards one that comes back broken, and the failed
    call maps to UNAVAILABLE); checking every check-out cost one more round trip per unit of work
    (issue #6)."""
    now = time.monotonic()
    last = _handed_out.get(conn)
    _handed_out[conn] = now
    if last is None or now - last > IDLE_CHECK_S:
        await AsyncConnectionPool.check_connection(conn)


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
