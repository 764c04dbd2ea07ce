"""OpenTelemetry tracing of requests: router → base-model deployment → engine call.

Off by default. It is on in a process when the standard OTLP endpoint variable is set
(``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) and
``OTEL_SDK_DISABLED`` is not ``true``; the exporter (OTLP over HTTP/protobuf) then reads the other
``OTEL_*`` variables itself (headers, timeout, ``OTEL_SERVICE_NAME``, ...). Ray passes a node's
environment to the replicas it starts, so setting them on the Ray pods (or before ``slm-fleet
serve``) is enough. The trace context crosses the router → replica hop as a W3C ``traceparent``
header carried in the request info Ray Serve LLM already forwards.
"""

from __future__ import annotations

import os
import threading

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

TRACER_NAME = "slmfleet"
_lock = threading.Lock()
_provider: TracerProvider | None = None


def enabled(env=None) -> bool:
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def install() -> TracerProvider | None:
    """Set up this process's tracer provider once: OTLP over HTTP when enabled, else None."""
    global _provider
    with _lock:
        if _provider is not None:
            return _provider
        if not enabled():
            return None
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider = TracerProvider(resource=Resource.create(
            {"service.name": os.environ.get("OTEL_SERVICE_NAME", "slm-fleet")}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        _provider = provider
        return provider


def tracer() -> trace.Tracer:
    """The fleet's tracer; a no-op one while tracing is off."""
    provider = install()
    return (provider or trace.NoOpTracerProvider()).get_tracer(TRACER_NAME)


def inject(carrier: dict[str, str]) -> dict[str, str]:
    """Add the current span's ``traceparent`` to ``carrier`` (request headers)."""
    propagate.inject(carrier)
    return carrier


def extract(headers: dict[str, str] | None) -> context.Context:
    return propagate.extract(headers or {})
