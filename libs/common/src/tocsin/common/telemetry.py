"""OpenTelemetry tracing: one trace follows an alert from the HTTP request to the socket.

Configuration is the standard `OTEL_*` variables only. Tracing is on when
`OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set and
neither `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none` says otherwise;
spans go out over OTLP/HTTP in batches. When it is off, nothing is installed:
the broker gets no tracing middleware, `instrument_app` leaves the app alone and
`EventDelivery` returns a shared no-op, so the hot path pays one boolean test.

The context travels as W3C `traceparent`/`tracestate`:

- in Dramatiq message options (`TracingMiddleware`: a PRODUCER span per enqueue,
  a CONSUMER span per processed message, attached as current while the actor runs);
- in every published event frame (`current_traceparent()` for the publisher,
  `EventDelivery` for each gateway process that receives it).

Span names and attributes follow the OpenTelemetry messaging conventions:
`send {queue}` / `process {queue}` with `messaging.system`,
`messaging.destination.name`, `messaging.operation.type` and
`messaging.message.id`.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, TypeVar

import dramatiq
from dramatiq.broker import Broker, MessageProxy
from dramatiq.middleware import Middleware
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tocsin.common.metrics import health_signals
from tocsin.common.redis import sync_client

__all__ = [
    "TRACEPARENT",
    "TRACESTATE",
    "EventDelivery",
    "ServerSpans",
    "TracingMiddleware",
    "current_traceparent",
    "event_delivery",
    "instrument_app",
    "setup_observability",
    "setup_tracing",
    "traceparent_of_frame",
    "tracing_enabled",
]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_TRACER_NAME = "tocsin"
# Operational routes are polled constantly and say nothing about an alert.
_UNTRACED_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})
_FRAME_TRACEPARENT = b'"traceparent":"'

RecipientT = TypeVar("RecipientT")

_enabled = False
_setup_lock = threading.Lock()


def tracing_enabled() -> bool:
    """Whether `setup_tracing` installed an exporting tracer provider in this process."""
    return _enabled


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
    Dramatiq in-process with threads, so there is no fork to wait for).
    """
    global _enabled
    env = os.environ if environ is None else environ
    if not _wants_tracing(env):
        return False
    with _setup_lock:
        if _enabled:
            return True
        # Imported here so a process without tracing never loads the SDK.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        attributes: dict[str, Any] = {}
        if not env.get("OTEL_SERVICE_NAME"):
            attributes[SERVICE_NAME] = f"tocsin-{service_name}"
        # The SDK reads OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG),
        # OTEL_BSP_* and OTEL_EXPORTER_OTLP_* itself.
        provider = TracerProvider(resource=Resource.create(attributes))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        _enabled = True
        return True


def setup_observability(service_name: str, redis_url: str) -> None:
    """The one call each service makes first: tracing from `OTEL_*`, health inputs to Redis."""
    setup_tracing(service_name)
    health_signals.bind(sync_client(redis_url))


def _tracer(provider: trace.TracerProvider | None = None) -> trace.Tracer:
    return trace.get_tracer(_TRACER_NAME, tracer_provider=provider)


def current_traceparent() -> str:
    """The W3C `traceparent` of the current span, or "" when there is none."""
    if not _enabled:
        return ""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get(TRACEPARENT, "")


@contextlib.contextmanager
def client_span(name: str, attributes: Mapping[str, str]) -> Iterator[None]:
    """A CLIENT span around a call to another system when tracing is on; nothing otherwise.

    An exception leaving the block is recorded on the span and re-raised.
    """
    if not _enabled:
        yield
        return
    with _tracer().start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes):
        yield


@contextlib.contextmanager
def producer_span(queue: str) -> Iterator[None]:
    """A PRODUCER `send {queue}` span for an enqueue that bypasses Dramatiq's `enqueue`.

    Inside it, `current_traceparent()` is the span's context, so the message carries it.
    Nothing happens when tracing is off.
    """
    if not _enabled:
        yield
        return
    attributes = {
        "messaging.system": "dramatiq",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": queue,
    }
    with _tracer().start_as_current_span(
        f"send {queue}", kind=SpanKind.PRODUCER, attributes=attributes
    ):
        yield


def traceparent_of_frame(frame: bytes) -> str:
    """The `traceparent` of a published event frame, found without decoding the JSON.

    The publish script appends it as the frame's last member, so a search from
    the end finds it in constant time for any event size.
    """
    start = frame.rfind(_FRAME_TRACEPARENT)
    if start < 0:
        return ""
    start += len(_FRAME_TRACEPARENT)
    end = frame.find(b'"', start)
    return frame[start:end].decode("ascii", "replace") if end > 0 else ""


def _messaging_attributes(
    message: dramatiq.Message[Any] | MessageProxy, operation: str
) -> dict[str, Any]:
    return {
        "messaging.system": "dramatiq",
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": message.queue_name,
        "messaging.message.id": message.message_id,
        "tocsin.actor": message.actor_name,
        "tocsin.retries": int(message.options.get("retries", 0)),
    }


class TracingMiddleware(Middleware):
    """PRODUCER spans around enqueues and CONSUMER spans around jobs, linked by traceparent.

    A `traceparent` the sender put in the options becomes the PRODUCER span's
    parent and is replaced by the span's own. A retried message (Retries sets
    `retries` before re-enqueueing) keeps its options as they are, so every
    attempt stays a child of the one original send.
    """

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._tracer = _tracer(tracer_provider)
        self._sending: dict[str, Span] = {}
        self._processing: dict[str, tuple[Span, object]] = {}

    def before_enqueue(self, broker: Broker, message: dramatiq.Message[Any], delay: int) -> None:
        if message.options.get("retries") and TRACEPARENT in message.options:
            return
        # A traceparent the sender put in the options is the parent; else the current span.
        parent = propagate.extract(message.options) if TRACEPARENT in message.options else None
        span = self._tracer.start_span(
            f"send {message.queue_name}",
            context=parent,
            kind=SpanKind.PRODUCER,
            attributes=_messaging_attributes(message, "send"),
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        message.options.update(carrier)
        self._sending[message.message_id] = span

    def after_enqueue(self, broker: Broker, message: dramatiq.Message[Any], delay: int) -> None:
        span = self._sending.pop(message.message_id, None)
        if span is not None:
            if delay:
                span.set_attribute("tocsin.delay_ms", delay)
            span.end()

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        parent = propagate.extract(message.options)
        span = self._tracer.start_span(
            f"process {message.queue_name}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=_messaging_attributes(message, "process"),
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        self._processing[message.message_id] = (span, token)

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        entry = self._processing.pop(message.message_id, None)
        if entry is None:
            return
        span, token = entry
        if exception is not None:
            span.record_exception(exception)
            span.set_status(Status(StatusCode.ERROR, type(exception).__name__))
        span.end()
        otel_context.detach(token)  # type: ignore[arg-type]

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        entry = self._processing.get(message.message_id)
        if entry is not None:
            entry[0].set_attribute("tocsin.skipped", True)
        self.after_process_message(broker, message)


class ServerSpans:
    """ASGI middleware: one SERVER span per HTTP request, continuing an incoming traceparent.

    WebSocket and lifespan scopes pass through untouched: a socket lives for
    hours and its frames are traced per event by `EventDelivery`, not here.
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
        span = _tracer().start_span(
            method,
            context=propagate.extract(headers),
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
    if _enabled:
        app.add_middleware(ServerSpans)
    return app


class EventDelivery:
    """One gateway process receiving one event: a CONSUMER span and a fan-out child span.

    Use as a context manager around handing the frame to the channel's sockets
    with `fan_out` (or report them with `sent`); the CONSUMER span continues
    the publisher's trace (parent and link), the `fan-out` child records the
    recipients, the bytes and the slowest hand-off to a socket. Get one from
    `event_delivery`. One pair of spans per event and process, never one per socket.
    """

    __slots__ = ("_active", "_channel", "_fanout", "_frame", "_process", "_started", "_token")

    def __init__(self, channel: str, frame: bytes, *, active: bool = True) -> None:
        self._active = active
        self._channel = channel
        self._frame = frame
        self._process: Span | None = None
        self._fanout: Span | None = None
        self._token: object = None
        self._started = 0.0

    def __enter__(self) -> EventDelivery:
        if not self._active:
            return self
        traceparent = traceparent_of_frame(self._frame)
        parent = propagate.extract({TRACEPARENT: traceparent}) if traceparent else None
        links = []
        if parent is not None:
            publisher = trace.get_current_span(parent).get_span_context()
            if publisher.is_valid:
                links.append(Link(publisher))
        tracer = _delivery_tracer()
        self._process = tracer.start_span(
            f"process {self._channel}",
            context=parent,
            kind=SpanKind.CONSUMER,
            links=links,
            attributes={
                "messaging.system": "redis",
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.destination.name": self._channel,
                "messaging.message.body.size": len(self._frame),
            },
        )
        process_context = trace.set_span_in_context(self._process)
        self._token = otel_context.attach(process_context)
        self._fanout = tracer.start_span(f"fan-out {self._channel}", context=process_context)
        self._started = time.perf_counter()
        return self

    def fan_out(self, recipients: Iterable[RecipientT], hand: Callable[[RecipientT], None]) -> int:
        """Call `hand` on each recipient; with tracing on, time each call and record `sent`."""
        if self._fanout is None:
            count = 0
            for recipient in recipients:
                hand(recipient)
                count += 1
            return count
        count, slowest = 0, 0.0
        clock = time.perf_counter
        for recipient in recipients:
            started = clock()
            hand(recipient)
            slowest = max(slowest, clock() - started)
            count += 1
        self.sent(count, slowest)
        return count

    def sent(self, recipients: int, slowest_send_seconds: float = 0.0) -> None:
        """Record the fan-out's recipients and its slowest hand-off to one socket."""
        if self._fanout is None:
            return
        self._fanout.set_attribute("tocsin.fanout.recipients", recipients)
        self._fanout.set_attribute("tocsin.fanout.bytes", recipients * len(self._frame))
        self._fanout.set_attribute("tocsin.fanout.slowest_send_seconds", slowest_send_seconds)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._process is None or self._fanout is None:
            return
        if exc is not None:
            self._fanout.record_exception(exc)
            self._fanout.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        self._fanout.end()
        self._process.end()
        otel_context.detach(self._token)  # type: ignore[arg-type]


_NO_DELIVERY = EventDelivery("", b"", active=False)
_delivery_tracers: list[trace.Tracer] = []


def _delivery_tracer() -> trace.Tracer:
    # Looked up once: get_tracer costs more than the rest of a delivery's bookkeeping.
    if not _delivery_tracers:
        _delivery_tracers.append(_tracer())
    return _delivery_tracers[0]


def event_delivery(channel: str, frame: bytes) -> EventDelivery:
    """An `EventDelivery` for `frame` on `channel`; a shared no-op when tracing is off."""
    return EventDelivery(channel, frame) if _enabled else _NO_DELIVERY
