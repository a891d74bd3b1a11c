"""Session-wide set-up: real PostgreSQL (and NATS) started once, tracing into memory."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher, profiles
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from core.tracing import setup_tracing
from server.accounts import passwords

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
# Real Argon2id at its cheapest: the production cost (0.15-0.3 s of CPU a hash) on every
# registration and sign-in was a large share of the suite's time. Servers the tests start as
# processes keep the production parameters.
passwords.use_hasher(PasswordHasher.from_parameters(profiles.CHEAPEST))


@pytest.fixture
def spans() -> InMemorySpanExporter:
    SPANS.clear()
    return SPANS


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long tests (marked slow, or given a longer timeout) run first: xdist hands out the rest as
    processes free up, so no process is left running one long test alone at the end."""
    items.sort(key=lambda item: not _long(item))  # a stable sort: the order within each part stays


def _long(item: pytest.Item) -> bool:
    timeout = item.get_closest_marker("timeout")
    return item.get_closest_marker("slow") is not None or (
        timeout is not None and bool(timeout.args) and timeout.args[0] > 120
    )
