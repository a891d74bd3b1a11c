"""The `smm` operator commands run for real (a subprocess, as cron or a shell script runs them):
the exit code says whether it worked, a failure is one line on stderr (never a traceback), and
no secret (a password, the internal token, a DSN's password) is printed."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from smm.v1 import accounts_service_pb2 as pb
from smm.v1 import accounts_service_pb2_grpc as pb_grpc

from ops.cli import _parser
from ops.embedded import free_port, nats_server_binary
from server.main import ServerHandle
from tests.fix_db import INTERNAL_TOKEN
from tests.fix_grpc import anonymous_metadata
from workers.main import NAMES

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Sup3r-secret-pass!"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMM_")}
    env["SMM_VAR_DIR"] = str(tmp_path / "var")  # no dev-secrets.json of a local `make run`
    env.update(extra)
    return env


async def _smm(*args: str, env: dict[str, str], stdin: bytes = b"") -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ops.cli", *args,
        cwd=ROOT, env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _one_line_failure(code: int, err: str) -> None:
    assert code != 0
    assert "Traceback" not in err, err[-800:]
    assert len(err.strip().splitlines()) == 1, err[-800:]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://smm:Hunter2-db-pass@[::1/smm",  # an unclosed IPv6 bracket: urlsplit raised too
        "postgresql//smm:Hunter2-db-pass@127.0.0.1/smm",  # a typo in the scheme: libpq quotes it all
        "smm:Hunter2-db-pass@127.0.0.1/smm",  # no scheme at all
    ],
)
async def test_migrate_with_a_malformed_url_prints_neither_password_nor_traceback(
    url: str, tmp_path: Path
) -> None:
    code, out, err = await _smm("migrate", env=_env(tmp_path, SMM_DATABASE_URL=url))
    _one_line_failure(code, err)
    assert "Hunter2-db-pass" not in out + err, err
    assert err.startswith("migrate: "), err


async def test_dlq_replay_refuses_a_sequence_that_cannot_exist(nats_url: str, tmp_path: Path) -> None:
    env = _env(tmp_path, SMM_NATS_URL=nats_url, SMM_NATS_NAMESPACE="clitest")
    for bad in ("0", "-3", str(2**64)):
        code, _, err = await _smm("dlq", "replay", bad, env=env)
        assert code == 2, err[-800:]
        assert "Traceback" not in err, err[-800:]
        assert "sequence" in err.splitlines()[-1], err


async def test_dlq_against_a_nats_without_jetstream_is_one_line(tmp_path: Path) -> None:
    """SMM_NATS_URL pointing at a plain NATS (JetStream off, or another account): the JetStream API
    does not answer, which the tool let out as a traceback."""
    port = free_port()
    plain = await asyncio.create_subprocess_exec(
        str(nats_server_binary()), "-a", "127.0.0.1", "-p", str(port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        env = _env(tmp_path, SMM_NATS_URL=f"nats://127.0.0.1:{port}")
        for args in (["list"], ["replay"], ["replay", "3"]):
            for _ in range(50):  # until the server listens
                code, _, err = await _smm("dlq", *args, env=env)
                if "cannot reach" not in err:
                    break
                await asyncio.sleep(0.1)
            _one_line_failure(code, err)
            assert "JetStream" in err, err
    finally:
        plain.terminate()
        await asyncio.wait_for(plain.wait(), 10)


async def test_create_user_reads_the_password_from_stdin(grpc_server: ServerHandle, tmp_path: Path) -> None:
    """`--password P` is readable by every local user (ps, /proc/PID/cmdline) and lands in shell
    history; without it the password comes from stdin (or a prompt on a terminal)."""
    env = _env(tmp_path, SMM_GRPC_TARGET=f"127.0.0.1:{grpc_server.port}", SMM_INTERNAL_TOKEN=INTERNAL_TOKEN)
    args = ("admin", "create-user", "--email", "ops@example.com", "--role", "admin")
    code, out, err = await _smm(*args, env=env, stdin=f"{PASSWORD}\n".encode())
    assert code == 0, err[-800:]
    assert "created user" in out
    assert PASSWORD not in out + err
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_server.port}") as channel:
        stub = pb_grpc.AccountsServiceStub(channel)
        login = pb.LoginRequest(email="ops@example.com", password=PASSWORD)
        assert (await stub.Login(login, metadata=anonymous_metadata())).token
    code, _, err = await _smm(*args, env=env, stdin=b"")  # nothing piped: refused before any call
    _one_line_failure(code, err)
    assert "password" in err


def _commands(parser: argparse.ArgumentParser, path: str = "smm") -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


def test_every_option_and_argument_has_help() -> None:
    """`smm COMMAND --help` is where an operator learns what to pass (which workers exist, what
    `serve` takes, how create-user's password is read)."""
    bare = [f"{path} {action.dest}" for path, action in _commands(_parser()) if not action.help]
    assert bare == []
    worker_help = next(a.help for path, a in _commands(_parser()) if path == "smm worker")
    assert [name for name in NAMES if name not in str(worker_help)] == []


def _leaves(parser: argparse.ArgumentParser, path: str = "smm") -> Iterator[str]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path
    for action in subs:
        for name, sub in action.choices.items():
            yield from _leaves(sub, f"{path} {name}")


def test_readme_names_every_operator_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    leaves = sorted(_leaves(_parser()))
    assert [path for path in leaves if f"`{path}" not in readme] == []


async def test_serve_grpc_without_its_database_says_so_in_one_line(tmp_path: Path) -> None:
    """With PostgreSQL unreachable the gRPC server ended with psycopg_pool's PoolTimeout traceback
    after about 15 s; an operator reads one line saying what is wrong, without the URL."""
    closed = free_port()  # nothing listens there
    env = _env(
        tmp_path,
        SMM_DATABASE_URL=f"postgresql://smm:Hunter2-db-pass@127.0.0.1:{closed}/smm",
        SMM_DB_POOL_TIMEOUT_S="0.3",
        SMM_GRPC_ADDR=f"127.0.0.1:{free_port()}",
        # The secrets are checked first (test_ops_hardening): this is about the database.
        SMM_INTERNAL_TOKEN="t",
        SMM_PAGE_TOKEN_SECRET="p",
        SMM_ENCRYPTION_KEYS="k1:" + "A" * 43 + "=",
    )
    code, out, err = await _smm("serve", "grpc", env=env)
    assert code == 1, err[-800:]
    assert "Traceback" not in err, err[-800:]
    assert "Hunter2-db-pass" not in out + err, err[-800:]
    assert err.strip().splitlines()[-1] == (
        "gRPC server: PostgreSQL (SMM_DATABASE_URL) accepted no connection within 0.9 s;"
        " is it running and reachable?"
    ), err[-800:]


async def test_a_pool_maximum_below_its_minimum_is_named_as_the_operator_wrote_it(tmp_path: Path) -> None:
    """A check across two settings has no single field: the line read `SMM_: Value error, ...`."""
    env = _env(tmp_path, SMM_DB_POOL_MIN="3", SMM_DB_POOL_MAX="1")
    code, _, err = await _smm("ledger", "verify", env=env)
    assert code == 2, err[-800:]
    _one_line_failure(code, err)
    assert not err.startswith("SMM_:"), err
    assert err.strip() == "SMM_DB_POOL_MAX (1) is below SMM_DB_POOL_MIN (3)", err


async def test_migrate_against_a_closed_port_is_one_line(tmp_path: Path) -> None:
    """libpq's refusal is two lines ("... Connection refused" and a tab-indented hint)."""
    url = f"postgresql://smm:Hunter2-db-pass@127.0.0.1:{free_port()}/smm"
    code, out, err = await _smm("migrate", env=_env(tmp_path, SMM_DATABASE_URL=url))
    _one_line_failure(code, err)
    assert "Hunter2-db-pass" not in out + err, err
    assert err.startswith("migrate: PostgreSQL: "), err
    assert "Connection refused Is the server running" in err, err


def test_create_user_says_when_the_two_typed_passwords_differ(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """At the prompt a typo in the second password was reported as `no password`."""
    from ops import admin, cli

    typed = iter(["first long password", "second long password"])
    monkeypatch.setattr(admin.getpass, "getpass", lambda prompt="": next(typed))
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setenv("SMM_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("SMM_INTERNAL_TOKEN", "unused")
    code = cli.main(["admin", "create-user", "--email", "ops@example.com"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip() == "smm admin: the two passwords differ (nothing was created)", err
