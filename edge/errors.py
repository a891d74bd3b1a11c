"""gRPC status -> HTTP status, and the one renderer of every /api/v1 error body (AIP-193).

The table is grpc-gateway's ``HTTPStatusFromCode``. Every error the edge sends, whether it came
from the gRPC server or from the edge itself (no route, wrong method, bad JSON, body or headers
too large), goes through ``render_error`` so clients see one shape::

    {"error": {"code": 400, "status": "FAILED_PRECONDITION", "message": "...", "details": [...]}}
"""

from __future__ import annotations

import json
import logging
from typing import Any

import grpc
from google.protobuf import any_pb2, json_format
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

log = logging.getLogger(__name__)

# Imported so that ErrorInfo / BadRequest / RetryInfo are in the descriptor pool for Any -> JSON.
_DETAIL_TYPES = (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest, error_details_pb2.RetryInfo)

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}

FALLBACK_BODY = b'{"error":{"code":500,"status":"INTERNAL","message":"failed to render the error"}}'

_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def http_status(code: grpc.StatusCode) -> int:
    return HTTP_STATUS.get(code, 500)


def code_from_number(number: int) -> grpc.StatusCode:
    return _BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


def error_info(reason: str, domain: str, metadata: dict[str, str] | None = None) -> any_pb2.Any:
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=metadata or {}))
    return detail


def render_error(
    code: grpc.StatusCode,
    message: str,
    details: list[any_pb2.Any] | None = None,
    *,
    http_code: int | None = None,
) -> bytes:
    """The AIP-193 body for a status; never raises (falls back to a constant body).

    ``http_code`` overrides the table where HTTP has a more precise word (413 for a body over
    the limit, 431 for a request line and headers over theirs, both RESOURCE_EXHAUSTED in gRPC
    terms; 408 DEADLINE_EXCEEDED for a request not received in time; 417 INVALID_ARGUMENT for an
    ``Expect`` other than ``100-continue``)."""
    try:
        body: dict[str, Any] = {
            "code": http_code or http_status(code),
            "status": code.name,
            "message": message,
            "details": [json_format.MessageToDict(d) for d in details or []],
        }
        return json.dumps({"error": body}, separators=(",", ":"), ensure_ascii=False).encode()
    except Exception:  # a malformed detail must not turn into an unformatted 500
        log.exception("rendering an error body failed")
        return FALLBACK_BODY


def status_from_rpc_error(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str, list[any_pb2.Any]]:
    """Code, message and rich details (google.rpc.Status in the trailers) of a failed call."""
    code = error.code()
    message = error.details() or code.name.lower().replace("_", " ")
    details: list[any_pb2.Any] = []
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except ValueError:  # the details disagree with the call's code: keep the code, drop the details
        status = None
    if isinstance(status, status_pb2.Status):
        message = status.message or message
        details = list(status.details)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) and not details:
        # The server never answered: say so without leaking transport internals.
        message = "the backend is unavailable" if code == grpc.StatusCode.UNAVAILABLE else "deadline exceeded"
        details = [error_info(f"BACKEND_{code.name}", "edge.smm", {"component": "grpc"})]
    return code, message, details
