"""A bounded schemathesis run over the OpenAPI document: no generated request gets a 5xx.

Schemathesis drives the edge over real HTTP from a worker thread (its client is synchronous),
while the edge and the gRPC server keep serving on the test's event loop.

The first run has no credentials, so most routes stop at 401/403; the second signs in as an
admin (who may call every route) so that generated input reaches the transcoder's and the
server's validation.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import grpc
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from smm.v1 import catalog_service_pb2_grpc as pb_grpc

from core.config import Settings
from server.main import ServerHandle
from tests.fix_edge import RunningEdge
from tests.integration.test_accounts import bearer
from tests.integration.test_admin_users import admin_token
from tests.integration.test_catalog_grpc import make_catalog

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MAX_EXAMPLES = 150
AUTHENTICATED_EXAMPLES = 1000
# Calls that would end the fuzzing admin's own session or change its credentials mid-run.
SESSION_ENDING = [
    "AccountsService_Logout",
    "AccountsService_ChangePassword",
    "AccountsService_ChangeEmail",
    "AccountsService_RevokeSession",
    "AccountsService_EnableTotp",
]
# int64 is a JSON string in proto3; without this, schemathesis sends any text and nearly every
# id stops at the transcoder. Small ids hit real rows; the rest probe int64's edges and beyond.
schemathesis.openapi.format(
    "int64",
    st.one_of(st.integers(0, 12), st.integers(-(2**63), 2**63 - 1), st.integers(2**63, 2**65)).map(str),
)


def _cases(schema: Any) -> st.SearchStrategy[schemathesis.Case]:
    """Valid and invalid requests for every operation of the schema."""
    return st.one_of(
        [
            schema.as_strategy(generation_mode=mode)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        ]
    )


def _deterministic(examples: int) -> Any:
    """The same cases on every run: a fuzz failure in CI reproduces locally."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


def fuzz(base_url: str) -> int:
    schema = schemathesis.openapi.from_url(f"{base_url}/api/v1/openapi.json")
    calls = 0

    @_deterministic(MAX_EXAMPLES)
    @given(case=_cases(schema))
    def check(case: schemathesis.Case) -> None:
        nonlocal calls
        response = case.call(base_url=base_url, timeout=10)
        calls += 1
        assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code}"
        case.validate_response(response, checks=[not_a_server_error])

    check()
    return calls


def authenticated_fuzz(base_url: str, headers: dict[str, str], own_id: str) -> int:
    schema = schemathesis.openapi.from_dict(_dotless(httpx.get(f"{base_url}/api/v1/openapi.json").json()))
    schema.config.base_url = base_url
    schema = schema.exclude(operation_id=SESSION_ENDING)
    calls = 0

    @_deterministic(AUTHENTICATED_EXAMPLES)
    @given(case=_cases(schema))
    def check(case: schemathesis.Case) -> None:
        nonlocal calls
        if case.path.startswith("/api/v1/admin/users/"):  # never suspend, demote or delete oneself
            for name, value in (case.path_parameters or {}).items():
                if str(value) == own_id:
                    case.path_parameters[name] = "999999999"  # type: ignore[index]
        case.headers = {**(case.headers or {}), **headers}  # negative cases may drop or garble it
        response = case.call(base_url=base_url, timeout=10)
        calls += 1
        where = f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
        assert response.status_code < 500, where
        if case.path != "/api/v1/auth/login":  # a wrong password is 401 there
            assert response.status_code != 401, f"the admin's session ended: {where}"
        if response.status_code >= 400:
            error = response.json()["error"]
            assert error["code"] == response.status_code, where
            assert isinstance(error["message"], str), where

    check()
    return calls


def _dotless(document: dict[str, Any]) -> dict[str, Any]:
    """``{user.id}`` is a valid OpenAPI path template (grpc-gateway writes them), but schemathesis
    fills templates with ``str.format``, which reads the dot as an attribute and drops the
    operation as an invalid schema; renamed (the request path is the same) so the five PATCH
    routes are fuzzed too."""
    paths = {}
    for path, item in document["paths"].items():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path":
                    parameter["name"] = parameter["name"].replace(".", "__")
        paths[re.sub(r"\{[^}]*\}", lambda m: m.group(0).replace(".", "__"), path)] = item
    return {**document, "paths": paths}


# Up to about 65 s in make test on an ordinary day: the suite's 120 s guards against hangs, not a slow day.
@pytest.mark.timeout(600)
async def test_no_generated_request_gets_a_5xx(edge: RunningEdge, channel: grpc.aio.Channel) -> None:
    await make_catalog(pb_grpc.CatalogServiceStub(channel))
    calls = await asyncio.to_thread(fuzz, edge.base_url)
    assert calls >= MAX_EXAMPLES // 2


@pytest.fixture(name="settings")
def _settings_without_rate_limits(settings: Settings) -> Settings:
    # A thousand calls in a few seconds from one address and one account: not a 429 test.
    return settings.model_copy(update={"rate_per_ip_per_min": 100_000, "rate_per_user_per_min": 100_000})


# Up to about 65 s in make test on an ordinary day: the suite's 120 s guards against hangs, not a slow day.
@pytest.mark.timeout(600)
async def test_no_generated_request_gets_a_5xx_signed_in_as_admin(
    edge: RunningEdge,
    channel: grpc.aio.Channel,
    http: httpx.AsyncClient,
    grpc_server: ServerHandle,
    settings: Settings,
) -> None:
    await make_catalog(pb_grpc.CatalogServiceStub(channel))
    admin = bearer(await admin_token(http, grpc_server, settings))
    own_id = str((await http.get("/api/v1/auth/me", headers=admin)).json()["id"])
    calls = await asyncio.to_thread(authenticated_fuzz, edge.base_url, admin, own_id)
    assert calls >= AUTHENTICATED_EXAMPLES // 2
    assert (await http.get("/api/v1/auth/me", headers=admin)).status_code == 200
