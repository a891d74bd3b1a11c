"""docs/ACCESS.md shows the role table as generated from the routes and RPC_ROLES, and the routes
API keys may not call as generated from the routes and API_KEY_REFUSED."""

from __future__ import annotations

from pathlib import Path

from edge.routes import compile_routes
from ops.role_table import role_table
from server.common.auth import API_KEY_REFUSED

ROOT = Path(__file__).resolve().parents[2]


def api_key_refused_table() -> str:
    lines = ["| route | RPC |", "|---|---|"]
    for route in compile_routes():
        if route.rpc in API_KEY_REFUSED:
            lines.append(f"| `{route.http_method} {route.template}` | `{route.rpc.rsplit('/', 1)[1]}` |")
    return "\n".join(lines) + "\n"


def test_access_doc_has_the_current_role_table() -> None:
    table = role_table()
    assert "`POST /api/v1/auth/totp/setup` | `SetupTotp` | - | yes | yes | yes | - |" in table
    assert table in (ROOT / "docs" / "ACCESS.md").read_text(), "run: python -m ops.role_table"


def test_access_doc_lists_the_routes_api_keys_may_not_call() -> None:
    table = api_key_refused_table()
    assert "| `POST /api/v1/dashboard/api-keys` | `CreateApiKey` |" in table
    assert "| `POST /api/v1/auth/totp/setup` | `SetupTotp` |" in table
    assert "`GET /api/v1/auth/me`" not in table
    assert table in (ROOT / "docs" / "ACCESS.md").read_text(), f"put this table in docs/ACCESS.md:\n{table}"


def test_every_rpc_refused_to_api_keys_has_a_route_in_the_doc() -> None:
    routed = {route.rpc for route in compile_routes()}
    assert routed >= API_KEY_REFUSED, sorted(API_KEY_REFUSED - routed)
