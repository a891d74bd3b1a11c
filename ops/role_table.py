"""The role table of docs/ACCESS.md, generated from the routes and ``RPC_ROLES``
(``python -m ops.role_table``); a unit test keeps the document equal to it."""

from __future__ import annotations

from edge.routes import compile_routes
from server.common.auth import Role, allowed_roles

COLUMNS = (Role.ANONYMOUS, Role.USER, Role.SUPPORT, Role.ADMIN, Role.SYSTEM)


def role_table() -> str:
    lines = [
        "| route | RPC | " + " | ".join(role.value for role in COLUMNS) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    for route in compile_routes():
        roles = allowed_roles(route.rpc)
        marks = " | ".join("yes" if role in roles else "-" for role in COLUMNS)
        lines.append(
            f"| `{route.http_method} {route.template}` | `{route.rpc.rsplit('/', 1)[1]}` | {marks} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(role_table(), end="")
