"""Operator commands that act through the gRPC API as ``system:<tool>``, as internal tools do."""

from __future__ import annotations

import getpass
import secrets
import sys

import grpc
from smm.v1 import accounts_service_pb2 as pb
from smm.v1 import accounts_service_pb2_grpc as pb_grpc

from core.config import Settings
from ops.grpc_client import internal_metadata

SEED_ADMIN_EMAIL = "admin@smm.local"


class PasswordsDiffer(ValueError):
    """The two passwords typed at the prompt are not the same."""


def read_password() -> str:
    """The password for ``create-user`` without ``--password``: asked for twice on a terminal, else
    the first line of stdin (``printf '%s\\n' "$PW" | smm admin create-user ...``). "" when none;
    PasswordsDiffer when the two typed differ."""
    if sys.stdin.isatty():
        try:
            first = getpass.getpass("password: ")
            again = getpass.getpass("password again: ")
        except (EOFError, KeyboardInterrupt):
            return ""
        if first != again:
            raise PasswordsDiffer
        return first
    return sys.stdin.readline().rstrip("\r\n")


async def create_user(
    target: str, settings: Settings, *, email: str, password: str, role: str, name: str = ""
) -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.AccountsServiceStub(channel)
        user = await stub.CreateUser(
            pb.CreateUserRequest(email=email, password=password, role=role, name=name),
            metadata=internal_metadata(settings, "admin-cli"),
            timeout=settings.rpc_timeout_s,
        )
    return int(user.id)


async def seed_admin(target: str, settings: Settings) -> str | None:
    """Create the first admin with a random password; return the password, or None if it exists.

    The password is returned to be shown once on the operator's terminal, never logged."""
    password = secrets.token_urlsafe(18)
    try:
        await create_user(
            target, settings, email=SEED_ADMIN_EMAIL, password=password, role="admin", name="Admin"
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.ALREADY_EXISTS:
            return None
        raise
    return password
