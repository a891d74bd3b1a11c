"""OpenTelemetry set-up shared by every process.

Tracing records only when there is somewhere to send the spans: ``OTEL_EXPORTER_OTLP_ENDPOINT``
(OTLP/HTTP), or an exporter that tests pass in. Otherwise the API's no-op tracer stays in place
and ``enabled()`` is false, so the processes leave out the gRPC and psycopg instrumentation too:
recording spans that nobody exports roughly tripled the cost of every query (issue #6). Sampling
follows ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` (the SDK reads them; parent-based
always-on by default). W3C trace context is the propagator (the SDK default), so context travels
in gRPC metadata (``traceparent``) and NATS headers alike.

At exit the spans still queued are sent for at most ``EXIT_FLUSH_S`` seconds, then dropped: the
SDK's own exit hook waited up to 30 s (each batch retried for the exporter's 10 s timeout), so a
process whose collector refused connections took about 29 s to exit after its work was drained.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Mapping, MutableMapping

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter

_configured = False
_enabled = False
log = logging.getLogger(__name__)
# How long a process may spend at exit sending the spans it still holds.
EXIT_FLUSH_S = 3.0


def setup_tracing(service_name: str, exporter: SpanExporter | None = None) -> bool:
    """Install a recording tracer provider once per process (OpenTelemetry allows only one) when
    spans have somewhere to go; return whether tracing is on."""
    global _configured, _enabled
    if _configured:
        return _enabled
    _configured = True
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    if exporter is None and not endpoint:
        return False  # the no-op tracer: spans cost next to nothing and go nowhere
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    # Not the SDK's exit hook (unbounded in practice): ``_shutdown_within`` below.
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}), shutdown_on_exit=False
    )
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    atexit.register(_shutdown_within, provider, EXIT_FLUSH_S)
    trace.set_tracer_provider(provider)
    _enabled = True
    return True


def _shutdown_within(provider: TracerProvider, timeout_s: float) -> bool:
    """Shut the provider down (sending the spans still queued), waiting at most ``timeout_s``;
    past that the export in hand is abandoned with its (daemon) thread and the process exits.
    Returns whether the shutdown finished in time."""
    shutting = threading.Thread(target=provider.shutdown, name="otel-shutdown", daemon=True)
    shutting.start()
    shutting.join(timeout_s)
    if shutting.is_alive():
        log.warning("traces not sent within %.0f s at exit (is the collector up?): dropped", timeout_s)
        return False
    return True


def enabled() -> bool:
    """Whether this process records spans (then the gRPC and psycopg instrumentation is on)."""
    return _enabled


def inject(carrier: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Write the current trace context into headers / metadata."""
    if _enabled:
        propagate.inject(carrier)
    return carrier


def extract(carrier: Mapping[str, str]) -> context.Context:
    return propagate.extract(carrier)


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)
