"""The role table covers exactly the RPCs that exist, and every queries.sql parses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge.descriptors import full_method_name, methods
from server.common.auth import EVERYONE, RPC_ROLES, Role, allowed_roles
from server.common.sqlfile import Queries

SERVER = Path(__file__).resolve().parents[2] / "server"
QUERY_FILES = sorted(SERVER.glob("**/queries.sql"))
QUERY_NAME = re.compile(r"^[a-z]+(_[a-z0-9]+)+$")
ALL_RPCS = sorted(full_method_name(m) for m in methods())


def test_there_are_rpcs_and_query_files() -> None:
    assert ALL_RPCS
    assert QUERY_FILES


@pytest.mark.parametrize("rpc", ALL_RPCS)
def test_every_rpc_declares_its_roles(rpc: str) -> None:
    assert rpc in RPC_ROLES, f"{rpc} is missing from server.common.auth.RPC_ROLES (it would be refused)"
    roles = RPC_ROLES[rpc]
    assert roles, f"{rpc} allows no role at all"
    assert roles <= EVERYONE
    assert allowed_roles(rpc) == roles


@pytest.mark.parametrize("rpc", sorted(RPC_ROLES))
def test_no_stale_role_entries(rpc: str) -> None:
    assert rpc in ALL_RPCS, f"{rpc} is in RPC_ROLES but no smm.v1 service has it"
    assert re.fullmatch(r"/smm\.v1\.[A-Z][A-Za-z]*Service/[A-Z][A-Za-z]*", rpc)


def test_role_table_and_services_agree_exactly() -> None:
    assert set(RPC_ROLES) == set(ALL_RPCS)


@pytest.mark.parametrize("rpc", ["/smm.v1.NoSuchService/Nothing", "", "/grpc.health.v1.Health/Check"])
def test_unknown_rpcs_allow_nobody(rpc: str) -> None:
    assert allowed_roles(rpc) == frozenset()


def test_writes_are_never_anonymous() -> None:
    for rpc, roles in RPC_ROLES.items():
        method = rpc.rsplit("/", 1)[1]
        if method.startswith(("Create", "Update", "Delete")):
            assert Role.ANONYMOUS not in roles, rpc


@pytest.mark.parametrize("path", QUERY_FILES, ids=lambda p: str(p.relative_to(SERVER)))
def test_queries_sql_parses(path: Path) -> None:
    queries = Queries(path)
    assert queries.names, f"{path} has no named query"
    for name in queries.names:
        assert QUERY_NAME.fullmatch(name), f"{path}: query {name!r} is not verb_object"
        assert queries.sql(name).strip(), f"{path}: query {name!r} is empty"
