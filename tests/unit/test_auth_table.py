"""The role table covers exactly the RPCs that exist, and every queries.sql parses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge.descriptors import full_method_name, methods
from server.common.auth import (
    API_KEY_REFUSED,
    EVERYONE,
    PEOPLE,
    RPC_ROLES,
    Principal,
    Role,
    allowed_roles,
    api_key_refusal,
)
from server.common.errors import PermissionDenied
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


# Of the user's own account RPCs, only these reads are for API keys too; every other one (a new
# one included) must be decided: added here, or to API_KEY_REFUSED.
API_KEY_ACCOUNT_READS = {"/smm.v1.AccountsService/GetMe", "/smm.v1.AccountsService/GetProfile"}
# What an API client (and the reseller endpoint, edge/reseller.py) calls with a key.
API_CLIENT_RPCS = [
    *sorted(API_KEY_ACCOUNT_READS),
    "/smm.v1.CatalogService/ListCategories",
    "/smm.v1.CatalogService/ListServices",
    "/smm.v1.CatalogService/GetService",
    "/smm.v1.WalletService/GetBalance",
    "/smm.v1.WalletService/ListTransactions",
    *(rpc for rpc in ALL_RPCS if rpc.startswith("/smm.v1.OrdersService/") and Role.USER in RPC_ROLES[rpc]),
]


def _as(who: Principal, rpc: str) -> frozenset[Role]:
    """The two rules the authorization interceptor applies: the roles, then the key refusal."""
    refusal = api_key_refusal(who, rpc)
    if refusal is not None and who.role in allowed_roles(rpc):
        raise refusal
    return allowed_roles(rpc)


@pytest.mark.parametrize("rpc", sorted(API_KEY_REFUSED))
@pytest.mark.parametrize("role", [Role.USER, Role.SUPPORT, Role.ADMIN])
def test_an_api_key_is_refused_account_management(rpc: str, role: Role) -> None:
    assert rpc in RPC_ROLES, f"{rpc} is in API_KEY_REFUSED but not in RPC_ROLES"
    assert RPC_ROLES[rpc] <= PEOPLE, f"{rpc}: only people's own RPCs are refused to their keys"
    with pytest.raises(PermissionDenied) as refused:
        _as(Principal(role, user_id=7, api_key_id=3), rpc)
    assert refused.value.reason == "API_KEY_NOT_ALLOWED"
    assert "session" in refused.value.message
    assert refused.value.metadata == {"method": rpc}
    # The same person with a session may, and so may the table's readers (docs, tests, tools).
    assert _as(Principal(role, user_id=7, session_id=5), rpc) == RPC_ROLES[rpc]
    assert allowed_roles(rpc) == RPC_ROLES[rpc]
    assert api_key_refusal(Principal(role, user_id=7, session_id=5), rpc) is None


def test_keys_may_not_mint_keys_manage_sessions_or_take_the_account_over() -> None:
    names = {rpc.rsplit("/", 1)[1] for rpc in API_KEY_REFUSED}
    assert {
        "CreateApiKey", "RotateApiKey", "RevokeApiKey", "ListApiKeys", "GetApiKeyUsage",
        "ListSessions", "RevokeSession", "Logout",
        "SetupTotp", "EnableTotp", "DisableTotp", "RegenerateRecoveryCodes",
        "ChangePassword", "ChangeEmail", "SendVerificationEmail",
        "SetPhone", "VerifyPhone", "RemovePhone", "UpdateProfile",
    } <= names  # fmt: skip


def test_every_own_account_rpc_is_decided_for_api_keys() -> None:
    own = {
        rpc
        for rpc, roles in RPC_ROLES.items()
        if rpc.startswith("/smm.v1.AccountsService/") and Role.USER in roles and roles != EVERYONE
    }
    undecided = own - API_KEY_REFUSED - API_KEY_ACCOUNT_READS
    assert not undecided, (
        f"decide whether API keys may call {sorted(undecided)} (server.common.auth.API_KEY_REFUSED)"
    )
    assert not API_KEY_REFUSED & API_KEY_ACCOUNT_READS


@pytest.mark.parametrize("rpc", API_CLIENT_RPCS)
def test_an_api_key_keeps_what_an_api_client_needs(rpc: str) -> None:
    assert rpc in RPC_ROLES
    assert rpc not in API_KEY_REFUSED
    assert _as(Principal(Role.USER, user_id=7, api_key_id=3), rpc) == RPC_ROLES[rpc]


@pytest.mark.parametrize("path", QUERY_FILES, ids=lambda p: str(p.relative_to(SERVER)))
def test_queries_sql_parses(path: Path) -> None:
    queries = Queries(path)
    assert queries.names, f"{path} has no named query"
    for name in queries.names:
        assert QUERY_NAME.fullmatch(name), f"{path}: query {name!r} is not verb_object"
        assert queries.sql(name).strip(), f"{path}: query {name!r} is empty"
