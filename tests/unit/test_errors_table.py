"""The status->HTTP table, the AIP-193 error body and rich status from a failed call
(grpc-gateway runtime/errors_test.go style)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, cast

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from edge.errors import (
    FALLBACK_BODY,
    HTTP_STATUS,
    code_from_number,
    error_info,
    http_status,
    render_error,
    status_from_rpc_error,
)

C = grpc.StatusCode

# STYLE.md §4, which is grpc-gateway's HTTPStatusFromCode.
TABLE = [
    (C.OK, 200),
    (C.CANCELLED, 499),
    (C.UNKNOWN, 500),
    (C.INVALID_ARGUMENT, 400),
    (C.DEADLINE_EXCEEDED, 504),
    (C.NOT_FOUND, 404),
    (C.ALREADY_EXISTS, 409),
    (C.PERMISSION_DENIED, 403),
    (C.UNAUTHENTICATED, 401),
    (C.RESOURCE_EXHAUSTED, 429),
    (C.FAILED_PRECONDITION, 400),
    (C.ABORTED, 409),
    (C.OUT_OF_RANGE, 400),
    (C.UNIMPLEMENTED, 501),
    (C.INTERNAL, 500),
    (C.UNAVAILABLE, 503),
    (C.DATA_LOSS, 500),
]


@pytest.mark.parametrize(("code", "expected"), TABLE, ids=[code.name for code, _ in TABLE])
def test_http_status(code: grpc.StatusCode, expected: int) -> None:
    assert http_status(code) == expected
    assert HTTP_STATUS[code] == expected
    assert code_from_number(code.value[0]) is code
    body = json.loads(render_error(code, "m"))
    assert body["error"]["code"] == expected
    assert body["error"]["status"] == code.name


def test_table_covers_exactly_every_code() -> None:
    assert len(TABLE) == 17
    assert set(HTTP_STATUS) == set(grpc.StatusCode) == {code for code, _ in TABLE}


@pytest.mark.parametrize("number", [-1, 17, 99, 1 << 31])
def test_unknown_code_numbers_are_unknown_and_500(number: int) -> None:
    assert code_from_number(number) is C.UNKNOWN
    assert http_status(code_from_number(number)) == 500


def test_anything_else_is_500() -> None:
    assert http_status(cast(grpc.StatusCode, object())) == 500


# --- render_error ----------------------------------------------------------------------------------


def _packed(message: Any) -> any_pb2.Any:
    detail = any_pb2.Any()
    detail.Pack(message)
    return detail


def test_render_error_matches_the_style_guide_example() -> None:
    body = render_error(
        C.FAILED_PRECONDITION,
        "Insufficient funds: 9.00 available, 15.00 required.",
        [error_info("INSUFFICIENT_FUNDS", "wallet.smm", {"available": "9.00", "required": "15.00"})],
    )
    assert json.loads(body) == {
        "error": {
            "code": 400,
            "status": "FAILED_PRECONDITION",
            "message": "Insufficient funds: 9.00 available, 15.00 required.",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "INSUFFICIENT_FUNDS",
                    "domain": "wallet.smm",
                    "metadata": {"available": "9.00", "required": "15.00"},
                }
            ],
        }
    }
    assert body.startswith(b'{"error":{')  # compact separators


@pytest.mark.parametrize(
    ("details", "expected"),
    [
        pytest.param(None, [], id="none"),
        pytest.param([], [], id="empty"),
        pytest.param(
            [error_info("NOT_FOUND", "catalog.smm")],
            [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "NOT_FOUND",
                    "domain": "catalog.smm",
                }
            ],
            id="error-info-without-metadata",
        ),
        pytest.param(
            [
                error_info("INVALID_ARGUMENT", "smm", {"field": "rate"}),
                _packed(
                    error_details_pb2.BadRequest(
                        field_violations=[
                            error_details_pb2.BadRequest.FieldViolation(field="rate", description="bad")
                        ]
                    )
                ),
            ],
            [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "INVALID_ARGUMENT",
                    "domain": "smm",
                    "metadata": {"field": "rate"},
                },
                {
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [{"field": "rate", "description": "bad"}],
                },
            ],
            id="error-info-and-bad-request",
        ),
        pytest.param(
            [_packed(error_details_pb2.RetryInfo(retry_delay={"seconds": 3}))],
            [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"}],
            id="retry-info",
        ),
    ],
)
def test_render_error_details(details: list[any_pb2.Any] | None, expected: list[dict[str, Any]]) -> None:
    body = json.loads(render_error(C.INVALID_ARGUMENT, "bad", details))
    assert body["error"]["details"] == expected
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "status", "message", "details"}


def test_render_error_http_code_override() -> None:
    body = json.loads(render_error(C.RESOURCE_EXHAUSTED, "the request body is too large", http_code=413))
    assert body["error"]["code"] == 413
    assert body["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert json.loads(render_error(C.RESOURCE_EXHAUSTED, "slow down"))["error"]["code"] == 429


def test_render_error_keeps_non_ascii_as_utf8() -> None:
    body = render_error(C.NOT_FOUND, "Услуга не найдена")
    assert "Услуга не найдена".encode() in body
    assert json.loads(body)["error"]["message"] == "Услуга не найдена"


@pytest.mark.parametrize(
    ("message", "details"),
    [
        pytest.param(
            "x",
            [any_pb2.Any(type_url="type.googleapis.com/nope.Missing", value=b"\x08\x01")],
            id="unknown-any",
        ),
        pytest.param("x", [any_pb2.Any(type_url="no-slash", value=b"")], id="malformed-type-url"),
        pytest.param("lone surrogate \ud800", None, id="unencodable-message"),
    ],
)
def test_render_error_falls_back_to_a_constant_body(
    caplog: pytest.LogCaptureFixture, message: str, details: list[any_pb2.Any] | None
) -> None:
    with caplog.at_level(logging.ERROR, logger="edge.errors"):
        body = render_error(C.FAILED_PRECONDITION, message, details)
    assert body == FALLBACK_BODY
    assert json.loads(body) == {
        "error": {"code": 500, "status": "INTERNAL", "message": "failed to render the error"}
    }
    assert any("rendering an error body failed" in r.getMessage() for r in caplog.records)


# --- status_from_rpc_error -------------------------------------------------------------------------


@dataclass
class FakeRpcError:
    """The three methods status_from_rpc_error (and grpc_status.rpc_status) read."""

    status_code: grpc.StatusCode
    text: str | None
    trailers: tuple[tuple[str, str | bytes], ...] | None = ()

    def code(self) -> grpc.StatusCode:
        return self.status_code

    def details(self) -> str | None:
        return self.text

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...] | None:
        return self.trailers


def rich(
    code: grpc.StatusCode, message: str, *details: any_pb2.Any, status_number: int | None = None
) -> FakeRpcError:
    status = status_pb2.Status(
        code=code.value[0] if status_number is None else status_number, message=message, details=details
    )
    trailers = (("x-request-id", "r1"), ("grpc-status-details-bin", status.SerializeToString()))
    return FakeRpcError(code, message, trailers)


def call(error: FakeRpcError) -> tuple[grpc.StatusCode, str, list[any_pb2.Any]]:
    return status_from_rpc_error(cast(grpc.aio.AioRpcError, error))


def _unpack_info(detail: any_pb2.Any) -> error_details_pb2.ErrorInfo:
    info = error_details_pb2.ErrorInfo()
    assert detail.Unpack(info)
    return info


def test_rich_status_details_are_kept() -> None:
    funds = error_info("INSUFFICIENT_FUNDS", "wallet.smm", {"available": "9.00"})
    code, message, details = call(rich(C.FAILED_PRECONDITION, "Insufficient funds", funds))
    assert code is C.FAILED_PRECONDITION
    assert message == "Insufficient funds"
    assert details == [funds]


def test_rich_status_keeps_every_detail_in_order() -> None:
    info = error_info("INVALID_ARGUMENT", "smm", {"field": "rate"})
    bad = _packed(error_details_pb2.BadRequest(field_violations=[{"field": "rate", "description": "bad"}]))
    _, _, details = call(rich(C.INVALID_ARGUMENT, "rate: bad", info, bad))
    assert details == [info, bad]
    assert json.loads(render_error(C.INVALID_ARGUMENT, "rate: bad", details))["error"]["details"][1][
        "@type"
    ].endswith("google.rpc.BadRequest")


def test_unavailable_with_details_keeps_the_servers_words() -> None:
    db_down = error_info("DATABASE_UNAVAILABLE", "smm", {"component": "postgres"})
    code, message, details = call(rich(C.UNAVAILABLE, "the database is unavailable", db_down))
    assert code is C.UNAVAILABLE
    assert message == "the database is unavailable"
    assert details == [db_down]


@pytest.mark.parametrize(
    ("error", "message", "reason"),
    [
        pytest.param(
            FakeRpcError(C.UNAVAILABLE, "failed to connect to all addresses; ipv4:10.0.0.1:50051"),
            "the backend is unavailable",
            "BACKEND_UNAVAILABLE",
            id="unavailable",
        ),
        pytest.param(
            FakeRpcError(C.UNAVAILABLE, None, None),
            "the backend is unavailable",
            "BACKEND_UNAVAILABLE",
            id="unavailable-no-trailers",
        ),
        pytest.param(
            FakeRpcError(C.DEADLINE_EXCEEDED, "Deadline Exceeded"),
            "deadline exceeded",
            "BACKEND_DEADLINE_EXCEEDED",
            id="deadline",
        ),
    ],
)
def test_transport_failures_become_backend_errors(error: FakeRpcError, message: str, reason: str) -> None:
    code, text, details = call(error)
    assert code is error.status_code
    assert text == message
    assert "10.0.0.1" not in text
    (detail,) = details
    info = _unpack_info(detail)
    assert (info.reason, info.domain, dict(info.metadata)) == (reason, "edge.smm", {"component": "grpc"})


@pytest.mark.parametrize(
    ("error", "expected_message"),
    [
        pytest.param(FakeRpcError(C.NOT_FOUND, "service 7 not found"), "service 7 not found", id="plain"),
        pytest.param(FakeRpcError(C.NOT_FOUND, None), "not found", id="no-details-text"),
        pytest.param(FakeRpcError(C.PERMISSION_DENIED, ""), "permission denied", id="empty-text"),
        pytest.param(FakeRpcError(C.INTERNAL, "internal error", None), "internal error", id="no-trailers"),
    ],
)
def test_status_without_rich_details(error: FakeRpcError, expected_message: str) -> None:
    code, message, details = call(error)
    assert code is error.status_code
    assert message == expected_message
    assert details == []


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(
            rich(C.NOT_FOUND, "gone", error_info("NOT_FOUND", "smm"), status_number=C.INTERNAL.value[0]),
            id="code-mismatch",
        ),
        pytest.param(
            FakeRpcError(
                C.NOT_FOUND,
                "call text",
                (
                    (
                        "grpc-status-details-bin",
                        status_pb2.Status(
                            code=C.NOT_FOUND.value[0], message="other text", details=[error_info("X", "smm")]
                        ).SerializeToString(),
                    ),
                ),
            ),
            id="message-mismatch",
        ),
    ],
)
def test_inconsistent_rich_status_keeps_the_code_and_drops_details(error: FakeRpcError) -> None:
    code, message, details = call(error)
    assert code is C.NOT_FOUND
    assert message == error.text
    assert details == []


def test_www_authenticate_on_401() -> None:
    from edge.app import error_response  # the one place that adds the header (STYLE.md §4)

    response = error_response(C.UNAUTHENTICATED, "sign in")
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "WWW-Authenticate" not in error_response(C.PERMISSION_DENIED, "no").headers
