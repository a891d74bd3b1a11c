"""Migrations: applied once in order, recorded with checksums, a changed file refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest

from ops.cli import main as smm_main
from server.common.migrate import SQL_DIR, MigrationError, discover, migrate

pytestmark = pytest.mark.integration


def migrate_before(db_url: str, tmp_path: Path, first_new: str) -> None:
    """A database as an older release left it: every migration before ``first_new`` applied."""
    before = tmp_path / "sql"
    before.mkdir()
    for path in SQL_DIR.glob("*.sql"):
        if path.name < first_new:
            shutil.copy(path, before)
    migrate(db_url, before)


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


def test_category_names_differing_only_in_case_are_refused_by_the_database(db_url: str) -> None:
    """Only exactly equal names were unique: a write past the application's check (two staff at
    once, an old client) stored "Instagram Likes" beside "instagram likes"."""
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO categories (name) VALUES ('Instagram Likes')")
        with pytest.raises(psycopg.errors.UniqueViolation) as caught:
            conn.execute("INSERT INTO categories (name) VALUES ('instagram likes')")
        assert caught.value.diag.constraint_name == "categories_name_lower_key"


def test_an_upgrade_keeps_working_with_categories_differing_only_in_case(
    empty_db_url: str, tmp_path: Path
) -> None:
    """A panel that already has such twins must still upgrade: the unique index is added only once
    staff have merged them (docs/DEPLOYMENT.md), and the application refuses new ones meanwhile."""
    migrate_before(empty_db_url, tmp_path, "0027")
    with psycopg.connect(empty_db_url) as conn:
        conn.execute("INSERT INTO categories (name) VALUES ('Instagram Likes'), ('instagram likes')")
    assert "0027" in migrate(empty_db_url)
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("SELECT to_regclass('categories_name_lower_key')").fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM categories").fetchone() == (2,)


def test_an_upgrade_stores_addresses_in_nfc_but_leaves_two_spellings_of_one_to_staff(
    empty_db_url: str, tmp_path: Path
) -> None:
    migrate_before(empty_db_url, tmp_path, "0030")
    lone, twin, composed_twin = "rene\u0301@example.com", "zoe\u0308@example.com", "zo\u00eb@example.com"
    with psycopg.connect(empty_db_url) as conn:
        conn.execute(
            "INSERT INTO users (email, password_hash, pending_email) VALUES (%s, 'x', %s), (%s, 'x', ''), (%s, 'x', '')",
            (lone, "noe\u0308@example.com", twin, composed_twin),
        )
    assert "0030" in migrate(empty_db_url)
    with psycopg.connect(empty_db_url) as conn:
        rows = conn.execute("SELECT email, pending_email FROM users ORDER BY id").fetchall()
    assert rows == [
        ("ren\u00e9@example.com", "no\u00eb@example.com"),
        (twin, ""),  # two accounts hold two spellings of one address: staff decide
        (composed_twin, ""),
    ]
