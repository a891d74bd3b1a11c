"""docs/ACCESS.md shows the role table as generated from the routes and RPC_ROLES."""

from __future__ import annotations

from pathlib import Path

from ops.role_table import role_table

ROOT = Path(__file__).resolve().parents[2]


def test_access_doc_has_the_current_role_table() -> None:
    table = role_table()
    assert "`POST /api/v1/auth/totp/setup` | `SetupTotp` | - | yes | yes | yes | - |" in table
    assert table in (ROOT / "docs" / "ACCESS.md").read_text(), "run: python -m ops.role_table"
