"""Migrations: applied once in order, recorded with checksums, a changed file refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest

from ops.cli import main as smm_main
from server.common.migrate import SQL_DIR, MigrationError, discover, migrate

pytestmark = pytest.mark.integration


def test_applies_every_migration_once(empty_db_url: str) -> None:
    versions = [m.version for m in discover()]
    assert migrate(empty_db_url) == versions
    assert migrate(empty_db_url) == []  # the second run finds nothing to do
    with psycopg.connect(empty_db_url) as conn:
        rows = conn.execute("SELECT version, checksum FROM schema_migrations ORDER BY version").fetchall()
    assert [r[0] for r in rows] == versions
    assert all(len(r[1]) == 64 for r in rows)


def test_a_changed_applied_file_is_refused(empty_db_url: str, tmp_path: Path) -> None:
    copy = tmp_path / "sql"
    shutil.copytree(SQL_DIR, copy)
    migrate(empty_db_url, copy)
    first = sorted(copy.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited after shipping\n")
    with pytest.raises(MigrationError, match="has changed"):
        migrate(empty_db_url, copy)


def test_a_failing_migration_rolls_back_and_is_not_recorded(empty_db_url: str, tmp_path: Path) -> None:
    copy = tmp_path / "sql"
    shutil.copytree(SQL_DIR, copy)
    (copy / "9999_create_broken.sql").write_text("CREATE TABLE half_done (id int);\nSELECT * FROM nowhere;\n")
    with pytest.raises(MigrationError, match="9999_create_broken"):
        migrate(empty_db_url, copy)
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("SELECT to_regclass('half_done')").fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM schema_migrations WHERE version = '9999'").fetchone() == (
            0,
        )


def test_badly_named_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "create_things.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN"):
        discover(tmp_path)


def test_smm_migrate_command(
    empty_db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SMM_DATABASE_URL", empty_db_url)
    assert smm_main(["migrate"]) == 0
    assert "applied" in capsys.readouterr().out
    assert smm_main(["migrate"]) == 0
    assert "applied 0 migration(s)" in capsys.readouterr().out
