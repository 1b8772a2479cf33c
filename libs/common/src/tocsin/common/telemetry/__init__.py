"""OpenTelemetry tracing: one trace follows an alert from the HTTP request to the socket.

Configuration is the standard `OTEL_*` variables only; when tracing is off,
nothing is installed and the hot path pays one boolean test. One module per
concern:

- `setup`: switching tracing on from `OTEL_*` (`setup_tracing`,
  `setup_observability`), `tracing_enabled`, the cached `tracer`;
- `export`: finished spans handed over a pipe to a child process (`exporter`)
  that encodes and exports them (OTLP/HTTP), off the serving process's GIL;
- `propagation`: the W3C `traceparent`/`tracestate` between processes, and the
  CLIENT and PRODUCER spans around hand-offs;
- `dramatiq`: `TracingMiddleware`, the spans around enqueues and jobs;
- `asgi`: `ServerSpans`, one SERVER span per HTTP request (`instrument_app`).

The gateway's per-event spans live in the gateway (`tocsin.gateway.tracing`).
"""

from __future__ import annotations

from tocsin.common.telemetry.asgi import ServerSpans, instrument_app
from tocsin.common.telemetry.dramatiq import TracingMiddleware
from tocsin.common.telemetry.propagation import (
    TRACEPARENT,
    TRACESTATE,
    W3C_PROPAGATOR,
    client_span,
    current_traceparent,
    producer_span,
    remote_context,
    traceparent_of_frame,
)
from tocsin.common.telemetry.setup import (
    setup_observability,
    setup_tracing,
    tracer,
    tracing_enabled,
)

__all__ = [
    "TRACEPARENT",
    "TRACESTATE",
    "W3C_PROPAGATOR",
    "ServerSpans",
    "TracingMiddleware",
    "client_span",
    "current_traceparent",
    "instrument_app",
    "producer_span",
    "remote_context",
    "setup_observability",
    "setup_tracing",
    "traceparent_of_frame",
    "tracer",
    "tracing_enabled",
]
