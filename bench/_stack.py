"""Shared helpers for the benchmarks: a throwaway embedded PostgreSQL + NATS in a temp folder."""

from __future__ import annotations

import contextlib
import logging
import secrets
import shutil
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from core.config import Settings
from ops.embedded import EmbeddedNats, EmbeddedPostgres, free_port, start_nats, start_postgres
from server.common.migrate import migrate
from server.common.secretbox import new_key_config


@dataclass(frozen=True)
class Stack:
    root: Path
    pg: EmbeddedPostgres
    nats: EmbeddedNats

    @property
    def database_url(self) -> str:
        return self.pg.url

    @property
    def nats_url(self) -> str:
        return self.nats.url


def bench_settings(stack: Stack, **overrides: Any) -> Settings:
    """Settings for a throwaway stack with fresh values for every secret a server needs."""
    values: dict[str, Any] = {
        "database_url": stack.database_url,
        "nats_url": stack.nats_url,
        "internal_token": SecretStr(secrets.token_urlsafe(24)),
        "page_token_secret": SecretStr(secrets.token_urlsafe(24)),
        "encryption_keys": SecretStr(new_key_config("bench")),
        "var_dir": str(stack.root / "var"),
        "log_level": "WARNING",
    }
    return Settings(**{**values, **overrides})


def secret_env(settings: Settings) -> dict[str, str]:
    """The secrets of ``settings`` as the environment variables child processes read."""
    return {
        "SMM_INTERNAL_TOKEN": settings.internal_token.get_secret_value(),
        "SMM_PAGE_TOKEN_SECRET": settings.page_token_secret.get_secret_value(),
        "SMM_ENCRYPTION_KEYS": settings.encryption_keys.get_secret_value(),
    }


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def throwaway_stack(prefix: str) -> Iterator[Stack]:
    """Durable embedded PostgreSQL + NATS in a temp folder, migrated; everything removed on exit."""
    logging.basicConfig(level=logging.WARNING)
    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop the servers.
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    # Even when started with SIGINT ignored (a background job of a script), Ctrl-C/SIGINT stops us.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    root = Path(tempfile.mkdtemp(prefix=f"smm-bench-{prefix}-"))
    pg: EmbeddedPostgres | None = None
    nats: EmbeddedNats | None = None
    try:
        pg = start_postgres(root / "pg", free_port(), durable=True)
        nats = start_nats(root / "nats", free_port())
        migrate(pg.url)
        yield Stack(root, pg, nats)
    finally:
        # A second Ctrl-C must not leave PostgreSQL running.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if nats is not None:
                nats.stop()
            if pg is not None:
                pg.stop()
        finally:
            signal.signal(signal.SIGINT, previous)
            shutil.rmtree(root, ignore_errors=True)
