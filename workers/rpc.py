"""The gRPC channel a worker calls the server through, as ``system:worker-<name>``."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from core import tracing
from core.config import Settings


@dataclass(frozen=True)
class RpcContext:
    channel: grpc.aio.Channel
    metadata: tuple[tuple[str, str], ...]
    timeout_s: float


def open_channel(settings: Settings, worker: str) -> RpcContext:
    channel = grpc.aio.insecure_channel(
        settings.grpc_dial_target,
        interceptors=aio_client_interceptors() if tracing.enabled() else None,  # type: ignore[no-untyped-call]
    )
    metadata = (
        ("x-smm-internal-token", settings.internal_token.get_secret_value()),
        ("x-smm-actor", f"system:worker-{worker}"),
    )
    return RpcContext(channel, metadata, settings.rpc_timeout_s)
