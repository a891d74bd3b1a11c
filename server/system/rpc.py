"""SystemService servicer: health, scheduled job runs and analytics counts."""

from __future__ import annotations

import grpc
from smm.v1 import system_service_pb2 as pb
from smm.v1 import system_service_pb2_grpc as pb_grpc

from server.common import auth, idempotency
from server.common.convert import request_time, timestamp
from server.common.errors import InvalidArgument, Unavailable
from server.common.health import HealthChecks
from server.common.pagetoken import PageTokenCodec, newest_first_page, page_size
from server.system.logic import AuditRow, SystemLogic


class SystemServicer(pb_grpc.SystemServiceServicer):
    def __init__(
        self, checks: HealthChecks, logic: SystemLogic, tokens: PageTokenCodec, version: str
    ) -> None:
        self._checks = checks
        self._logic = logic
        self._tokens = tokens
        self._version = version

    async def GetHealth(
        self, request: pb.GetHealthRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetHealthResponse:
        states = await self._checks.run()
        down = [s.name for s in states if not s.up]
        if down:
            metadata = {s.name: "up" if s.up else "down" for s in states}
            metadata["down"] = ",".join(down)
            verb = "is" if len(down) == 1 else "are"
            raise Unavailable(
                f"{', '.join(down)} {verb} down",
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

    async def RunJob(self, request: pb.RunJobRequest, context: grpc.aio.ServicerContext) -> pb.JobRun:
        row, ran_now = await self._logic.run_job(request.job, request.period_start)
        return pb.JobRun(
            job=row.job,
            period_start=row.period_start,
            result=row.result,
            finish_time=timestamp(row.finish_time),
            ran_now=ran_now,
        )

    async def RecordEvent(
        self, request: pb.RecordEventRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordEventResponse:
        if not request.subject.startswith("smm.") or len(request.subject) > 200:
            raise InvalidArgument.for_field("subject", "must be an smm event subject")
        key = idempotency.request_key("RecordEvent", auth.principal().actor, request.request_id, request)
        if key is None:
            raise InvalidArgument.for_field("request_id", "is required")
        occurred = None
        if request.HasField("occur_time"):
            occurred = request_time(request.occur_time, field="occur_time")
        return pb.RecordEventResponse(counted=await self._logic.record_event(key, request.subject, occurred))

    async def ListEventCounts(
        self, request: pb.ListEventCountsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListEventCountsResponse:
        days = request.days or 30
        if not 1 <= days <= 366:
            raise InvalidArgument.for_field("days", "must be between 1 and 366")
        rows = await self._logic.event_counts(days)
        return pb.ListEventCountsResponse(
            counts=[pb.EventCount(day=r.day, subject=r.subject, count=r.count) for r in rows]
        )

    async def ListAuditEvents(
        self, request: pb.ListAuditEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAuditEventsResponse:
        size = page_size(request.page_size, default=100, maximum=1000)
        filters = {"action": request.action, "actor": request.actor, "target": request.target}
        rows, token = await newest_first_page(
            self._tokens,
            request.page_token,
            filters,
            size,
            lambda before_id, limit: self._logic.audit_events(**filters, before_id=before_id, limit=limit),
        )
        return pb.ListAuditEventsResponse(events=[_audit(r) for r in rows], next_page_token=token)


def _audit(row: AuditRow) -> pb.AuditEvent:
    event = pb.AuditEvent(
        id=row.id,
        create_time=timestamp(row.create_time),
        action=row.action,
        actor=row.actor,
        target=row.target,
        client_ip=row.client_ip,
        user_agent=row.user_agent,
        request_id=row.request_id,
    )
    if row.before is not None:
        event.before.update(row.before)
    if row.after is not None:
        event.after.update(row.after)
    return event
