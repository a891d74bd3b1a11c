"""The operator's tools with bad input or missing servers: one clear line, never a traceback, and
never a secret (a NATS token, a database password libpq quotes back) in what they print."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.config import load_settings
from ops.cli import main as smm_main
from ops.dev import redact_url, run_dev
from ops.embedded import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMM_")}
    env.update(extra)
    return env


def _smm(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_redact_url_hides_a_nats_token() -> None:
    # nats.py treats the user part of nats://TOKEN@host as the auth token; `smm dev` prints
    # redact_url(SMM_NATS_URL) in its "is up" banner.
    shown = redact_url("nats://s3cr3t-nats-token@nats.internal:4222")
    assert "s3cr3t-nats-token" not in shown


def test_smm_migrate_unreachable_database_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SMM_DATABASE_URL", f"postgresql://smm:pw@127.0.0.1:{free_port()}/smm")
    code = smm_main(["migrate"])  # raises psycopg.OperationalError instead
    assert code == 1
    assert "migrate:" in capsys.readouterr().err


def test_smm_dev_does_not_print_the_database_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A password with a stray '%' (not percent-encoded) is an easy operator mistake.
    settings = load_settings(
        database_url="postgresql://smm:hunter2%zz@127.0.0.1:5432/smm",
        nats_url="nats://127.0.0.1:4222",
        var_dir=str(tmp_path / "var"),
        grpc_addr=f"127.0.0.1:{free_port()}",
        edge_addr=f"127.0.0.1:{free_port()}",
        demo_provider_addr="",
    )
    code = run_dev(settings)
    err = capsys.readouterr().err
    assert code == 1
    assert "hunter2" not in err, err


def test_smm_migrate_does_not_echo_the_database_password(monkeypatch: pytest.MonkeyPatch) -> None:
    env = _clean_env(SMM_DATABASE_URL="postgresql://smm:hunter2%zz@127.0.0.1:5432/smm")
    result = _smm(["migrate"], env, timeout=60)
    assert "hunter2" not in result.stderr, result.stderr[-400:]


@pytest.mark.parametrize(
    ("args", "env_var", "value"),
    [
        (["migrate"], "SMM_DB_POOL_MAX", "abc"),
        (["serve", "edge"], "SMM_TRUSTED_PROXIES", "not-a-cidr"),
        (["serve", "edge"], "SMM_LOG_LEVEL", "loud"),
        (["serve", "edge"], "SMM_EDGE_ADDR", "127.0.0.1:70000"),  # was bind()'s traceback
        (["serve", "grpc"], "SMM_GRPC_ADDR", "127.0.0.1:99999"),  # listened on a random port
    ],
)
def test_a_bad_setting_is_one_clear_line(args: list[str], env_var: str, value: str) -> None:
    env = _clean_env(
        SMM_EDGE_ADDR=f"127.0.0.1:{free_port()}",
        SMM_GRPC_TARGET=f"127.0.0.1:{free_port()}",
        SMM_DATABASE_URL=f"postgresql://smm@127.0.0.1:{free_port()}/smm",
        SMM_INTERNAL_TOKEN="t",
        SMM_PAGE_TOKEN_SECRET="p",
    )
    env[env_var] = value
    result = _smm(args, env, timeout=60)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-600:]
    assert env_var in result.stderr, result.stderr[-600:]


@pytest.mark.parametrize(
    ("unset", "env_var", "value"),
    [
        ("", "SMM_ENCRYPTION_KEYS", ""),
        ("", "SMM_ENCRYPTION_KEYS", "k1:not-base64!"),
        ("SMM_INTERNAL_TOKEN", "SMM_INTERNAL_TOKEN", ""),
        ("SMM_PAGE_TOKEN_SECRET", "SMM_PAGE_TOKEN_SECRET", ""),
    ],
)
def test_the_grpc_server_without_a_secret_says_which_in_one_line(
    unset: str, env_var: str, value: str
) -> None:
    """A missing or malformed secret ended `smm serve grpc` in a traceback (SecretBoxError,
    ValueError) after the database was opened; it is one line naming the setting, before."""
    env = _clean_env(
        SMM_GRPC_ADDR=f"127.0.0.1:{free_port()}",
        SMM_DATABASE_URL=f"postgresql://smm@127.0.0.1:{free_port()}/smm",  # never reached
        SMM_DB_POOL_TIMEOUT_S="0.2",
        SMM_INTERNAL_TOKEN="t",
        SMM_PAGE_TOKEN_SECRET="p",
        SMM_ENCRYPTION_KEYS="k1:" + "A" * 43 + "=",
    )
    env.pop(unset, None)
    env[env_var] = value
    result = _smm(["serve", "grpc"], env, timeout=60)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-600:]
    lines = [line for line in result.stderr.splitlines() if env_var in line]
    assert lines, result.stderr[-600:]
    assert "PostgreSQL" not in result.stderr  # refused before the database was tried


def test_smm_dlq_list_with_nats_down_fails_fast() -> None:
    env = _clean_env(SMM_NATS_URL=f"nats://127.0.0.1:{free_port()}")
    try:
        result = _smm(["dlq", "list"], env, timeout=20)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`smm dlq list` still running after 20 s; stderr so far: {str(exc.stderr)[:300]}")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr


def test_a_worker_waiting_for_nats_stops_on_sigterm(tmp_path: Path) -> None:
    """The first NATS connection retries for as long as NATS is away; SIGTERM only sets the stop
    event, which the worker did not watch until it was connected: it waited for NATS for ever."""
    env = _clean_env(SMM_NATS_URL=f"nats://127.0.0.1:{free_port()}", SMM_LOG_LEVEL="info")
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log_file:
        worker = subprocess.Popen(
            [sys.executable, "-m", "ops.cli", "worker", "analytics"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    try:
        # Retrying the connection (logged per attempt) means the signal handlers are installed.
        deadline = time.monotonic() + 60
        while "NATS unreachable" not in log_path.read_text() and time.monotonic() < deadline:
            assert worker.poll() is None, log_path.read_text()[-600:]
            time.sleep(0.1)
        assert "NATS unreachable" in log_path.read_text()
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail("the worker was still running 15 s after SIGTERM")
        stderr = log_path.read_text()
        assert worker.returncode == 0, stderr[-600:]
        assert "stopped before NATS could be reached" in stderr
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_every_setting_is_documented() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    docs = readme + "".join(p.read_text(encoding="utf-8") for p in (ROOT / "docs").glob("*.md"))
    from core.config import Settings

    missing = [
        f"SMM_{name.upper()}"
        for name in Settings.model_fields
        if not re.search(rf"SMM_{name.upper()}\b", docs)
    ]
    assert missing == []
