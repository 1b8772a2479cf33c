"""ASGI middleware: one SERVER span per HTTP request, continuing an incoming traceparent."""

from __future__ import annotations

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tocsin.common.telemetry.setup import tracer, tracing_enabled

__all__ = ["ServerSpans", "instrument_app"]

# Operational routes are polled constantly and say nothing about an alert.
_UNTRACED_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})


class ServerSpans:
    """ASGI middleware: one SERVER span per HTTP request, continuing an incoming traceparent.

    WebSocket and lifespan scopes pass through untouched: a socket lives for
    hours and its frames are traced per event by the gateway, not here.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _UNTRACED_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {
            key.decode("latin-1"): value.decode("latin-1")
            for key, value in scope.get("headers", ())
            if key in (b"traceparent", b"tracestate")
        }
        method = scope["method"]
        span = tracer().start_span(
            method,
            # Without either header there is nothing to continue: the current context.
            context=propagate.extract(headers) if headers else None,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope["path"]},
        )
        token = otel_context.attach(trace.set_span_in_context(span))

        async def send_with_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        except Exception as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None)
            if isinstance(template, str):
                span.set_attribute("http.route", template)
                span.update_name(f"{method} {template}")
            span.end()
            otel_context.detach(token)


def instrument_app(app: Starlette) -> Starlette:
    """Add `ServerSpans` to `app` when tracing is on; returns `app`."""
    if tracing_enabled():
        app.add_middleware(ServerSpans)
    return app
