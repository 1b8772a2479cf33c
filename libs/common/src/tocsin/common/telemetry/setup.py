"""Tracing switched on from the standard `OTEL_*` variables, and the one cached tracer.

Tracing is on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
is set and neither `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none` says
otherwise. Finished spans are handed to an exporting child process
(`tocsin.common.telemetry.export`), so encoding them never holds the GIL of a
process that serves requests. When tracing is off nothing is installed and the
hot path pays one boolean test.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace

from tocsin.common.metrics import health_signals
from tocsin.common.redis import sync_client

__all__ = ["setup_observability", "setup_tracing", "tracer", "tracing_enabled"]

TRACER_NAME = "tocsin"

_enabled = False
_setup_lock = threading.Lock()
# (provider, its tracer): `get_tracer` hashes the provider's resource on every call,
# which cost ingest about a tenth of its time when asked per request.
_cached: tuple[object, trace.Tracer] | None = None


def tracing_enabled() -> bool:
    """Whether `setup_tracing` installed an exporting tracer provider in this process."""
    return _enabled


def tracer() -> trace.Tracer:
    """Tocsin's tracer from the current global provider, looked up once per provider."""
    global _cached
    provider = trace.get_tracer_provider()
    cached = _cached
    if cached is not None and cached[0] is provider:
        return cached[1]
    found = trace.get_tracer(TRACER_NAME, tracer_provider=provider)
    _cached = (provider, found)
    return found


def _wants_tracing(environ: Mapping[str, str]) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def setup_tracing(service_name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Install OTLP/HTTP tracing when the `OTEL_*` variables ask for it; returns whether on.

    `service_name` is used when `OTEL_SERVICE_NAME` is unset. Call it once per
    process, before building the broker and the app (Tocsin's workers run
    Dramatiq in-process with threads, so there is no fork to wait for). The
    exporting child process starts here and inherits `environ`.
    """
    global _enabled
    env = os.environ if environ is None else environ
    if not _wants_tracing(env):
        return False
    with _setup_lock:
        if _enabled:
            return True
        # Imported here so a process without tracing never loads the SDK.
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource

        from tocsin.common.telemetry.export import SpanPipe
        from tocsin.common.telemetry.spans import RecordingTracerProvider

        attributes: dict[str, Any] = {}
        if not env.get("OTEL_SERVICE_NAME"):
            attributes[SERVICE_NAME] = f"tocsin-{service_name}"
        # The SDK reads OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES and
        # OTEL_TRACES_SAMPLER(_ARG) here; the child reads OTEL_BSP_* and OTEL_EXPORTER_OTLP_*.
        resource = Resource.create(attributes)
        # Spans are recorded as tuples and handed straight to the pipe (see `spans`).
        pipe = SpanPipe(resource, environ=env)
        trace.set_tracer_provider(RecordingTracerProvider(pipe.hand))
        # As the SDK's provider does: what is queued at exit still reaches the child.
        atexit.register(pipe.shutdown)
        _enabled = True
        return True


def setup_observability(service_name: str, redis_url: str) -> None:
    """The one call each service makes first: tracing from `OTEL_*`, health inputs to Redis."""
    setup_tracing(service_name)
    health_signals.bind(sync_client(redis_url))
