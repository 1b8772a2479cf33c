"""The W3C trace context carried between processes, and the spans around hand-offs.

The context travels as `traceparent`/`tracestate`: in Dramatiq message options
and as the last member of every published event frame (found from the end,
without decoding, by `traceparent_of_frame`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from opentelemetry import propagate
from opentelemetry.trace import SpanKind

from tocsin.common.telemetry.setup import tracer, tracing_enabled

__all__ = [
    "TRACEPARENT",
    "TRACESTATE",
    "client_span",
    "current_traceparent",
    "producer_span",
    "traceparent_of_frame",
]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_FRAME_TRACEPARENT = b'"traceparent":"'


def current_traceparent() -> str:
    """The W3C `traceparent` of the current span, or "" when there is none."""
    if not tracing_enabled():
        return ""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get(TRACEPARENT, "")


@contextlib.contextmanager
def client_span(name: str, attributes: Mapping[str, str]) -> Iterator[None]:
    """A CLIENT span around a call to another system when tracing is on; nothing otherwise.

    An exception leaving the block is recorded on the span and re-raised.
    """
    if not tracing_enabled():
        yield
        return
    with tracer().start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes):
        yield


@contextlib.contextmanager
def producer_span(queue: str) -> Iterator[None]:
    """A PRODUCER `send {queue}` span for an enqueue that bypasses Dramatiq's `enqueue`.

    Inside it, `current_traceparent()` is the span's context, so the message carries it.
    Nothing happens when tracing is off.
    """
    if not tracing_enabled():
        yield
        return
    attributes = {
        "messaging.system": "dramatiq",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": queue,
    }
    with tracer().start_as_current_span(
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
