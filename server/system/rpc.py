"""SystemService servicer: the platform's own health."""

from __future__ import annotations

import grpc
from smm.v1 import system_service_pb2 as pb
from smm.v1 import system_service_pb2_grpc as pb_grpc

from server.common.errors import Unavailable
from server.common.health import HealthChecks


class SystemServicer(pb_grpc.SystemServiceServicer):
    def __init__(self, checks: HealthChecks, version: str) -> None:
        self._checks = checks
        self._version = version

    async def GetHealth(
        self, request: pb.GetHealthRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetHealthResponse:
        states = await self._checks.run()
        down = [s.name for s in states if not s.up]
        if down:
            metadata = {s.name: "up" if s.up else "down" for s in states}
            metadata["down"] = ",".join(down)
            raise Unavailable(
                f"{', '.join(down)} {'is' if len(down) == 1 else 'are'} down",
                reason="DEPENDENCY_DOWN",
                domain="system.smm",
                metadata=metadata,
            )
        return pb.GetHealthResponse(
            status="up",
            version=self._version,
            components=[
                pb.ComponentHealth(name=s.name, status="up", latency_ms=s.latency_ms, detail=s.detail)
                for s in states
            ],
        )
