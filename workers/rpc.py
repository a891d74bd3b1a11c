"""The gRPC channel a worker calls the server through, as ``system:worker-<name>``; every call
carries the request id of the event in hand (``x-request-id``, set by ``workers/runner.py``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from core import tracing
from core.config import Settings
from core.logs import request_id_var

REQUEST_ID_KEY = "x-request-id"


@dataclass(frozen=True)
class RpcContext:
    channel: grpc.aio.Channel
    metadata: tuple[tuple[str, str], ...]
    timeout_s: float


class RequestIdInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Sends the request id of the work in hand (``request_id_var``: the event's, while the runner
    handles one) as ``x-request-id``, so the server logs and audits the call under the event's id
    instead of minting a fresh one per call."""

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        request_id = request_id_var.get()
        metadata = tuple(client_call_details.metadata or ())
        if request_id and all(key != REQUEST_ID_KEY for key, _ in metadata):
            client_call_details = client_call_details._replace(  # type: ignore[attr-defined]
                metadata=(*metadata, (REQUEST_ID_KEY, request_id))
            )
        return await continuation(client_call_details, request)


def open_channel(settings: Settings, worker: str) -> RpcContext:
    interceptors: list[Any] = [RequestIdInterceptor()]
    if tracing.enabled():
        interceptors += aio_client_interceptors()  # type: ignore[no-untyped-call]
    channel = grpc.aio.insecure_channel(settings.grpc_dial_target, interceptors=interceptors)
    metadata = (
        ("x-smm-internal-token", settings.internal_token.get_secret_value()),
        ("x-smm-actor", f"system:worker-{worker}"),
    )
    return RpcContext(channel, metadata, settings.rpc_timeout_s)
