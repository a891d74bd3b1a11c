"""Shared helpers for the benchmarks: a throwaway embedded PostgreSQL + NATS in a temp folder."""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ops.embedded import EmbeddedNats, EmbeddedPostgres, free_port, start_nats, start_postgres
from server.common.migrate import migrate


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
