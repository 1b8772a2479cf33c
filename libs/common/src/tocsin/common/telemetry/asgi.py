"""ASGI middleware: one SERVER span per HTTP request, continuing an incoming traceparent."""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tocsin.common.telemetry.setup import tracer, tracing_enabled

__all__ = [
    "ServerSpans",
    "end_server_span",
    "instrument_app",
    "server_span_answered",
    "server_span_failed",
    "start_server_span",
]

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
        span = start_server_span(method, scope["path"], headers)
        token = otel_context.attach(trace.set_span_in_context(span))

        async def send_with_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                server_span_answered(span, int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        except Exception as exc:
            server_span_failed(span, exc)
            raise
        finally:
            template = getattr(scope.get("route"), "path", None)
            end_server_span(span, method, template if isinstance(template, str) else None)
            otel_context.detach(token)


def start_server_span(method: str, path: str, carrier: Mapping[str, str]) -> trace.Span:
    """A request's SERVER span, continuing the trace of the `traceparent` and
    `tracestate` in `carrier` (lower-case names); not current, not ended.

    `ServerSpans` and ingest's fast path (`tocsin.ingest.fastpath`) both start
    theirs here, so a request is traced alike on either path.
    """
    return tracer().start_span(
        method,
        # Without either header there is nothing to continue: the current context.
        context=propagate.extract(carrier) if carrier else None,
        kind=SpanKind.SERVER,
        attributes={"http.request.method": method, "url.path": path},
    )


def server_span_answered(span: trace.Span, status: int) -> None:
    """Record the status a request was answered with (a 5xx is an error)."""
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))


def server_span_failed(span: trace.Span, exc: BaseException) -> None:
    """Record an error that escaped the application (the server answers it)."""
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))


def end_server_span(span: trace.Span, method: str, template: str | None) -> None:
    """End a request's SERVER span, named by its route's `template` when it has one."""
    if template is not None:
        span.set_attribute("http.route", template)
        span.update_name(f"{method} {template}")
    span.end()


def instrument_app(app: Starlette) -> Starlette:
    """Add `ServerSpans` to `app` when tracing is on; returns `app`."""
    if tracing_enabled():
        app.add_middleware(ServerSpans)
    return app
