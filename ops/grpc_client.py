"""What internal tools (``smm dev``, the seeder) need to call the gRPC server as ``system:<tool>``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from core.config import Settings
from server.common.interceptors import ACTOR_KEY, INTERNAL_TOKEN_KEY

__all__ = ["Metadata", "internal_metadata", "wait_for_grpc"]

Metadata = tuple[tuple[str, str], ...]

# A refused connection otherwise backs off for up to two minutes, far longer than a server takes to start.
_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
)
_ATTEMPT_TIMEOUT_S = 1.0
_RETRY_PAUSE_S = 0.1


def internal_metadata(settings: Settings, tool: str) -> Metadata:
    """The metadata that lets internal tool `tool` call any RPC as the principal ``system:<tool>``."""
    return (
        (INTERNAL_TOKEN_KEY, settings.internal_token.get_secret_value()),
        (ACTOR_KEY, f"system:{tool}"),
    )


async def wait_for_grpc(target: str, timeout_s: float, *, metadata: Sequence[tuple[str, str]] = ()) -> None:
    """Return once the standard health service at `target` answers SERVING.

    The server's interceptors refuse calls without the internal token, so pass `metadata`
    (``internal_metadata(...)``). Raises TimeoutError naming the target and the last answer.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last = "no answer"
    async with grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while (remaining := deadline - loop.time()) > 0:
            try:
                reply = await stub.Check(
                    health_pb2.HealthCheckRequest(),
                    metadata=tuple(metadata),
                    timeout=min(_ATTEMPT_TIMEOUT_S, remaining),
                    wait_for_ready=True,
                )
            except grpc.aio.AioRpcError as exc:
                last = f"{exc.code().name}: {exc.details()}"
            else:
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            await asyncio.sleep(min(_RETRY_PAUSE_S, max(deadline - loop.time(), 0)))
    raise TimeoutError(
        f"the gRPC server at {target} did not report SERVING within {timeout_s:g}s (last answer: {last})"
    )
