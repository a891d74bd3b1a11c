"""The wheel-backed PostgreSQL and NATS servers start, answer, get reused and stop."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from ops.embedded import (
    EmbeddedPostgres,
    PortInUse,
    create_database,
    free_port,
    remembered_port,
    start_nats,
    start_postgres,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = start_postgres(tmp_path_factory.mktemp("pg") / "data", free_port(), durable=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def occupied_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def _select_one(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("select 1").fetchone()
    assert row is not None
    value: int = row[0]
    return value


def test_postgres_answers(pg: EmbeddedPostgres) -> None:
    assert pg.is_running()
    assert pg.url == f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
    assert _select_one(pg.url) == 1


def test_create_database(pg: EmbeddedPostgres) -> None:
    url = create_database(pg.url, "plain-db")
    assert url == f"postgresql://postgres@127.0.0.1:{pg.port}/plain-db"
    with psycopg.connect(url) as conn:
        row = conn.execute("select current_database()").fetchone()
    assert row == ("plain-db",)


def test_create_database_from_template(pg: EmbeddedPostgres) -> None:
    template_url = create_database(pg.url, "tmpl")
    with psycopg.connect(template_url) as conn:
        conn.execute("create table marker (v int)")
        conn.execute("insert into marker values (42)")
    # The connection above is closed, so PostgreSQL lets the template be copied.
    copy_url = create_database(pg.url, "from_tmpl", template="tmpl")
    with psycopg.connect(copy_url) as conn:
        row = conn.execute("select v from marker").fetchone()
    assert row == (42,)


def test_start_again_reuses_then_stop_is_idempotent(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = start_postgres(data_dir, free_port(), durable=False)
    try:
        # A different port is asked for; the running server wins rather than a second cluster failing.
        second = start_postgres(data_dir, free_port(), durable=False)
        assert second.port == first.port
        assert _select_one(second.url) == 1
    finally:
        first.stop()
    assert not first.is_running()
    first.stop()
    second.stop()


def test_postgres_port_in_use(tmp_path: Path, occupied_port: int) -> None:
    with pytest.raises(PortInUse, match=rf"port {occupied_port}\b.*SMM_PG_PORT"):
        start_postgres(tmp_path / "data", occupied_port, durable=False)
    # The check runs before initdb, so nothing was written.
    assert not (tmp_path / "data").exists()


def test_nats_start_info_stop(tmp_path: Path) -> None:
    nats = start_nats(tmp_path / "nats", free_port(), max_mem="16MB", max_file="64MB")
    try:
        assert nats.is_running()
        assert nats.url == f"nats://127.0.0.1:{nats.port}"
        with socket.create_connection(("127.0.0.1", nats.port), timeout=2) as conn:
            info_line = conn.makefile("rb").readline()
        assert info_line.startswith(b"INFO ")
        info = json.loads(info_line[len(b"INFO ") :])
        assert info["jetstream"] is True
    finally:
        nats.stop()
    assert not nats.is_running()
    nats.stop()


def test_nats_rejects_a_size_it_could_not_parse(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_mem"):
        start_nats(tmp_path / "nats", free_port(), max_mem="1.5GB")


def test_nats_port_in_use(tmp_path: Path, occupied_port: int) -> None:
    with pytest.raises(PortInUse, match=rf"port {occupied_port}\b.*SMM_NATS_PORT"):
        start_nats(tmp_path / "nats", occupied_port)


def test_remembered_port_persists_and_env_overrides(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    pg_port = remembered_port(var_dir, "postgres", None)
    nats_port = remembered_port(var_dir, "nats", "")
    assert pg_port != nats_port
    assert json.loads((var_dir / "ports.json").read_text()) == {"postgres": pg_port, "nats": nats_port}
    assert remembered_port(var_dir, "postgres", None) == pg_port

    assert remembered_port(var_dir, "postgres", "15432") == 15432
    # The override is not written back: dropping the variable returns to the remembered port.
    assert remembered_port(var_dir, "postgres", None) == pg_port

    # Another checkout keeps its own file, so it never inherits (and collides on) these ports.
    other_var = tmp_path / "other-clone" / "var"
    other_port = remembered_port(other_var, "postgres", None)
    assert json.loads((other_var / "ports.json").read_text()) == {"postgres": other_port}
    assert remembered_port(var_dir, "postgres", None) == pg_port

    with pytest.raises(ValueError, match="not a port"):
        remembered_port(var_dir, "postgres", "abc")
