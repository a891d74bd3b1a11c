"""The benchmark scripts start: `--help` answers without a stack, and the shared settings carry
every secret a server copy refuses to start without (a missing one broke `make bench` once)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from server.common.secretbox import SecretBox

BENCH = Path(__file__).resolve().parents[2] / "bench"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if not p.name.startswith("_"))


def test_every_benchmark_is_listed_in_run_all() -> None:
    run_all = (BENCH / "run_all.py").read_text()
    assert set(SCRIPTS) - {"run_all.py"} == {s for s in SCRIPTS if f'"{s}"' in run_all}


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_answers_without_starting_anything(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:")
    assert "smm-bench" not in done.stdout + done.stderr  # no throwaway stack was made


def test_bench_settings_hold_every_server_secret(tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCH))
    try:
        from _stack import bench_settings, secret_env
    finally:
        sys.path.remove(str(BENCH))
    stack = SimpleNamespace(database_url="postgresql://x/db", nats_url="nats://127.0.0.1:1", root=tmp_path)
    settings = bench_settings(stack, nats_namespace="bench")  # type: ignore[arg-type]
    env = secret_env(settings)
    assert set(env) == {"SMM_INTERNAL_TOKEN", "SMM_PAGE_TOKEN_SECRET", "SMM_ENCRYPTION_KEYS"}
    assert all(len(value) >= 32 for value in env.values())
    SecretBox.from_config(env["SMM_ENCRYPTION_KEYS"])  # raises on an empty or malformed key list
    assert settings.nats_namespace == "bench"
    assert settings.var_dir == str(tmp_path / "var")
    assert bench_settings(stack).internal_token != settings.internal_token  # type: ignore[arg-type]
