"""The edge over real HTTP: transcoding, the error body for every kind of bad request, docs."""

from __future__ import annotations

import grpc
import httpx
import pytest
from smm.v1 import catalog_service_pb2 as pb
from smm.v1 import catalog_service_pb2_grpc as pb_grpc

from tests.fix_grpc import system_metadata
from tests.integration.test_catalog_grpc import make_catalog

pytestmark = pytest.mark.integration


def assert_error(response: httpx.Response, http_code: int, status: str, reason: str | None = None) -> dict:
    assert response.status_code == http_code, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == http_code
    assert error["status"] == status
    assert isinstance(error["message"], str)
    assert error["message"]
    if reason is not None:
        reasons = [d.get("reason") for d in error["details"]]
        assert reason in reasons, error
    return error


async def test_public_catalog_through_the_edge(http: httpx.AsyncClient, channel: grpc.aio.Channel) -> None:
    _, service = await make_catalog(pb_grpc.CatalogServiceStub(channel))
    response = await http.get("/api/v1/public/services")
    assert response.status_code == 200
    body = response.json()
    assert body["nextPageToken"] == ""
    [item] = body["services"]
    assert item["id"] == str(service.id)  # proto3 JSON: int64 as a string
    assert item["rate"] == "0.90"
    assert item["type"] == "SERVICE_TYPE_DEFAULT"
    assert item["minQuantity"] == "50"
    assert item["refill"] is True
    assert item["dripfeed"] is False
    one = await http.get(f"/api/v1/public/services/{service.id}")
    assert one.json()["name"] == "Followers"
    assert one.headers["x-request-id"]
    assert one.headers["x-content-type-options"] == "nosniff"
    filtered = await http.get("/api/v1/public/services", params={"categoryId": "999", "pageSize": "5"})
    assert filtered.json()["services"] == []


async def test_request_id_is_echoed(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/v1/public/categories", headers={"X-Request-Id": "abc-123"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "abc-123"


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "http_code", "status", "reason"),
    [
        ("GET", "/api/v1/nope", {}, 404, "NOT_FOUND", "ROUTE_NOT_FOUND"),
        ("DELETE", "/api/v1/public/services", {}, 501, "UNIMPLEMENTED", "METHOD_NOT_ALLOWED"),
        ("GET", "/api/v1/public/services/abc", {}, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"),
        ("GET", "/api/v1/public/services", {"params": {"pageSize": "ten"}}, 400, "INVALID_ARGUMENT", None),
        ("GET", "/api/v1/public/services/12345", {}, 404, "NOT_FOUND", "SERVICE_NOT_FOUND"),
        ("POST", "/api/v1/admin/categories", {"content": b"{not json"}, 400, "INVALID_ARGUMENT", None),
        ("POST", "/api/v1/admin/categories", {"json": {"sortOrder": "high"}}, 400, "INVALID_ARGUMENT", None),
        ("POST", "/api/v1/admin/categories", {"json": ["a"]}, 400, "INVALID_ARGUMENT", None),
        ("POST", "/api/v1/admin/categories", {"json": {"name": "X"}}, 401, "UNAUTHENTICATED", "SIGN_IN_REQUIRED"),
        (
            "POST", "/api/v1/admin/categories", {"json": {"name": "X"}, "headers": {"Authorization": "Bearer nope"}},
            401, "UNAUTHENTICATED", "INVALID_CREDENTIAL",
        ),
        (
            "POST", "/api/v1/admin/categories", {"json": {"name": "X"}, "headers": {"Authorization": "Basic x"}},
            401, "UNAUTHENTICATED", "BAD_AUTHORIZATION_HEADER",
        ),
        ("GET", "/api/v1/public/services", {"params": {"pageToken": "forged"}}, 400, "INVALID_ARGUMENT", None),
    ],
)  # fmt: skip
async def test_bad_requests_get_the_standard_error_body(
    http: httpx.AsyncClient,
    method: str,
    path: str,
    kwargs: dict,
    http_code: int,
    status: str,
    reason: str | None,
) -> None:
    response = await http.request(method, path, **kwargs)
    error = assert_error(response, http_code, status, reason)
    if http_code == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert error["details"] is not None


async def test_oversized_body_is_413(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/v1/admin/categories", content=b"x" * (1_048_576 + 10))
    assert_error(response, 413, "RESOURCE_EXHAUSTED", "BODY_TOO_LARGE")


async def test_unicode_headers_do_not_break_the_call(http: httpx.AsyncClient) -> None:
    response = await http.get(
        "/api/v1/public/categories", headers={"User-Agent": "bot/1.0 \u00e9t\u00e9".encode()}
    )
    assert response.status_code == 200


async def test_openapi_and_swagger_ui(http: httpx.AsyncClient) -> None:
    spec = (await http.get("/api/v1/openapi.json")).json()
    assert spec["openapi"].startswith("3.1")
    assert "/api/v1/public/services" in spec["paths"]
    page = await http.get("/api/v1/docs")
    assert page.status_code == 200
    assert "swagger-ui-bundle.js" in page.text
    asset = await http.get("/api/v1/docs/assets/swagger-ui-bundle.js")
    assert asset.status_code == 200
    assert len(asset.content) > 100_000
    init = await http.get("/api/v1/docs/assets/init.js")
    assert init.status_code == 200
    assert "/api/v1/openapi.json" in init.text


async def test_health_is_up(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/v1/public/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "up"
    assert {c["name"]: c["status"] for c in body["components"]} == {"postgres": "up", "nats": "up"}


async def test_admin_write_with_system_grpc_then_patch_over_http_is_refused(
    http: httpx.AsyncClient, channel: grpc.aio.Channel
) -> None:
    stub = pb_grpc.CatalogServiceStub(channel)
    category = await stub.CreateCategory(
        pb.CreateCategoryRequest(category=pb.Category(name="YouTube")), metadata=system_metadata()
    )
    response = await http.patch(f"/api/v1/admin/categories/{category.id}", json={"name": "YT"})
    assert_error(response, 401, "UNAUTHENTICATED", "SIGN_IN_REQUIRED")


async def test_cors_allows_only_configured_origins(settings: object, grpc_server: object) -> None:
    from tests.fix_edge import start_edge

    edge = await start_edge(
        settings.model_copy(  # type: ignore[attr-defined]
            update={"cors_origins": "https://panel.example", "grpc_target": f"127.0.0.1:{grpc_server.port}"}  # type: ignore[attr-defined]
        )
    )
    try:
        async with httpx.AsyncClient(base_url=edge.base_url) as http:
            preflight = await http.options(
                "/api/v1/auth/login",
                headers={"Origin": "https://panel.example", "Access-Control-Request-Method": "POST"},
            )
            assert preflight.status_code == 204
            assert preflight.headers["access-control-allow-origin"] == "https://panel.example"
            assert preflight.headers["access-control-allow-methods"] == "POST"
            assert "authorization" in preflight.headers["access-control-allow-headers"]
            stranger = await http.options("/api/v1/auth/login", headers={"Origin": "https://evil.example"})
            assert "access-control-allow-origin" not in stranger.headers
            read = await http.get("/api/v1/public/categories", headers={"Origin": "https://panel.example"})
            assert read.headers["access-control-allow-origin"] == "https://panel.example"
            assert "X-Request-Id" in read.headers["access-control-expose-headers"]
    finally:
        await edge.stop()
