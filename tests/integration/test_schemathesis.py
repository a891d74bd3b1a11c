"""A bounded schemathesis run over the OpenAPI document: no generated request gets a 5xx.

Schemathesis drives the edge over real HTTP from a worker thread (its client is synchronous),
while the edge and the gRPC server keep serving on the test's event loop.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from smm.v1 import catalog_service_pb2_grpc as pb_grpc

from tests.fix_edge import RunningEdge
from tests.integration.test_catalog_grpc import make_catalog

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MAX_EXAMPLES = 150


def fuzz(base_url: str) -> int:
    schema = schemathesis.openapi.from_url(f"{base_url}/api/v1/openapi.json")
    strategies = [
        schema.as_strategy(generation_mode=mode)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    ]
    calls = 0

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of(strategies))
    def check(case: schemathesis.Case) -> None:
        nonlocal calls
        response = case.call(base_url=base_url, timeout=10)
        calls += 1
        assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code}"
        case.validate_response(response, checks=[not_a_server_error])

    check()
    return calls


async def test_no_generated_request_gets_a_5xx(edge: RunningEdge, channel: grpc.aio.Channel) -> None:
    await make_catalog(pb_grpc.CatalogServiceStub(channel))
    calls = await asyncio.to_thread(fuzz, edge.base_url)
    assert calls >= MAX_EXAMPLES // 2
