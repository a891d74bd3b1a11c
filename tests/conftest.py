"""Session-wide set-up: real PostgreSQL (and NATS) started once, tracing into memory."""

from __future__ import annotations

import pytest
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from core.tracing import setup_tracing

pytest_plugins = [
    "tests.fix_db",
    "tests.fix_nats",
    "tests.fix_grpc",
    "tests.fix_edge",
    "tests.fix_demo",
    "tests.fix_shop",
    "tests.fakes.smtp_server",
    "tests.fakes.resend_api",
    "tests.fakes.twilio_api",
]

SPANS = InMemorySpanExporter()
setup_tracing("smm-tests", exporter=SPANS)
PsycopgInstrumentor().instrument(enable_commenter=False)  # as `smm serve grpc` does


@pytest.fixture
def spans() -> InMemorySpanExporter:
    SPANS.clear()
    return SPANS
