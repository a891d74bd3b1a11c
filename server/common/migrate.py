"""Forward-only plain-SQL migrations from ``sql/NNNN_<verb>_<object>.sql``.

Each pending file runs in its own transaction (unless its first line is
``-- smm:no-transaction``), under an advisory lock so that concurrent starts apply it once, and
is recorded in ``schema_migrations`` with a SHA-256 checksum. A changed applied file stops the
run: shipped migrations are never edited.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x5D3_0001  # any constant shared by every copy of smm
NO_TRANSACTION = "-- smm:no-transaction"

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text        PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""
SELECT_APPLIED = "SELECT version, name, checksum FROM schema_migrations ORDER BY version"
INSERT_APPLIED = "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)"


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def discover(directory: Path = SQL_DIR) -> list[Migration]:
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name} is not named NNNN_<verb>_<object>.sql")
        found.append(Migration(match.group(1), match.group(2), path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migrations share a version number")
    return found


def migrate(url: str, directory: Path = SQL_DIR) -> list[str]:
    """Apply pending migrations; return the versions applied now."""
    migrations = discover(directory)
    applied_now: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(CREATE_TABLE)
            applied = {row[0]: row for row in conn.execute(SELECT_APPLIED).fetchall()}
            _check_unchanged(migrations, applied)
            for migration in migrations:
                if migration.version in applied:
                    continue
                _apply(conn, migration)
                applied_now.append(migration.version)
                log.info("applied migration %s_%s", migration.version, migration.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now


def _check_unchanged(migrations: list[Migration], applied: dict[str, tuple[str, str, str]]) -> None:
    known = {m.version: m for m in migrations}
    for version, (_, name, checksum) in applied.items():
        migration = known.get(version)
        if migration is None:
            raise MigrationError(f"applied migration {version}_{name} is missing from {SQL_DIR}")
        if migration.checksum != checksum:
            raise MigrationError(
                f"applied migration {migration.path.name} has changed since it was applied; "
                "shipped migrations are never edited: add a new one instead"
            )


def _apply(conn: psycopg.Connection[tuple[object, ...]], migration: Migration) -> None:
    text = migration.text
    statement = sql.SQL(text)  # type: ignore[arg-type]  # trusted file from the repository
    record = (migration.version, migration.name, migration.checksum)
    try:
        if text.startswith(NO_TRANSACTION):
            conn.execute(statement)
            conn.execute(INSERT_APPLIED, record)
        else:
            with conn.transaction():
                conn.execute(statement)
                conn.execute(INSERT_APPLIED, record)
    except psycopg.Error as exc:
        raise MigrationError(f"migration {migration.path.name} failed: {exc}") from exc
