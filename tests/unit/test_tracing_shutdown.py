"""A process that exports traces exits promptly when the collector is away, and still sends what it
recorded at exit when the collector is there (core/tracing.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Records a full queue of spans (2048: four export batches) and exits; the tracer provider's
# exit hook flushes them to OTEL_EXPORTER_OTLP_ENDPOINT.
PROGRAM = """
from core.tracing import setup_tracing, tracer
assert setup_tracing("smm-exit-test")
spans = tracer("smm.exit-test")
for index in range(2048):
    with spans.start_as_current_span(f"work {index}"):
        pass
"""


def _run(endpoint: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "gen"), os.environ.get("PYTHONPATH", "")]),
    }
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    return done, time.monotonic() - started


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A loopback port bound but not listening: every connection to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def test_a_process_exits_within_seconds_when_the_collector_refuses_connections(refusing_port: int) -> None:
    done, elapsed = _run(f"http://127.0.0.1:{refusing_port}")
    assert done.returncode == 0, done.stderr
    # It took about 29 s: each batch retried for the exporter's 10 s timeout at exit.
    assert elapsed < 10, f"exit took {elapsed:.1f} s"


class _Collector(BaseHTTPRequestHandler):
    posts: list[str] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        _Collector.posts.append(self.path)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_spans_recorded_before_exit_still_reach_a_collector_that_answers() -> None:
    _Collector.posts = []
    server = HTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        done, _ = _run(f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr
    assert set(_Collector.posts) == {"/v1/traces"}
    assert len(_Collector.posts) >= 4  # every batch of the full queue was sent
