"""The SERVER span of one HTTP request at the edge, for the transcoded routes and the reseller
endpoint alike: named ``<method> <route template>`` (never the URL, whose query string can carry an
API key), under the caller's W3C ``traceparent``, so the RPCs it makes are its children."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from opentelemetry import trace
from sanic import Request

from core import tracing
from core.tracing import extract, tracer

_tracer = tracer("smm.edge")


def server_span(request: Request, method: str, route: str, rid: str) -> AbstractContextManager[trace.Span]:
    """The request's SERVER span, or (tracing off) a no-op stand-in that costs nothing."""
    if not tracing.enabled():
        return nullcontext(trace.INVALID_SPAN)
    return _tracer.start_as_current_span(
        f"{method} {route}",
        kind=trace.SpanKind.SERVER,
        context=extract(dict(request.headers)),
        attributes={"http.request.method": method, "http.route": route, "smm.request_id": rid},
    )
