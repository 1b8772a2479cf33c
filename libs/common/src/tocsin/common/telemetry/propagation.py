"""The W3C trace context carried between processes, and the spans around hand-offs.

The context travels as `traceparent`/`tracestate`: in Dramatiq message options
and as the last member of every published event frame (found from the end,
without decoding, by `traceparent_of_frame`).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from contextlib import AbstractContextManager

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tocsin.common.telemetry.setup import tracer, tracing_enabled

__all__ = [
    "TRACEPARENT",
    "TRACESTATE",
    "W3C_PROPAGATOR",
    "client_span",
    "current_traceparent",
    "own_traceparent",
    "producer_span",
    "remote_context",
    "start_producer_span",
    "traceparent_of_frame",
]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# Between Tocsin's own processes the context is always W3C (see `current_traceparent`),
# so the hops read and write it with this one propagator, not the global composite
# (which adds a baggage pass to every message and event).
W3C_PROPAGATOR = TraceContextTextMapPropagator()
_FRAME_TRACEPARENT = b'"traceparent":"'
# The one form Tocsin's own processes write (version 00, lower-case hex, nothing around it).
_OWN_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_NO_TRACE = "0" * 32
_NO_SPAN_ID = "0" * 16


def own_traceparent(value: str) -> tuple[str, str, str] | None:
    """(trace id, span id, flags) of a `traceparent` in the form Tocsin writes (version
    00, lower-case hex, nothing around it) with real ids; None for anything else."""
    match = _OWN_TRACEPARENT.fullmatch(value)
    if match is None or match[1] == _NO_TRACE or match[2] == _NO_SPAN_ID:
        return None
    return match[1], match[2], match[3]


def remote_context(traceparent: str, tracestate: str | None = None) -> Context:
    """The context `W3C_PROPAGATOR.extract` makes of these two values, for a span's parent.

    A `traceparent` in the form Tocsin writes, without `tracestate`, is read
    here with one match (the propagator's layers cost a few microseconds, once
    per message and per event); anything else goes to the propagator.
    `test_telemetry` compares the two on valid, invalid and odd values.
    """
    # Message options may hold anything: only a str is matched here.
    own = tracestate is None and type(traceparent) is str
    parts = own_traceparent(traceparent) if own else None
    if parts is None:
        # The propagator also turns all-zero ids into an empty context.
        carrier = {TRACEPARENT: traceparent}
        if tracestate is not None:
            carrier[TRACESTATE] = tracestate
        return W3C_PROPAGATOR.extract(carrier)
    trace_id, span_id, flags = parts
    parent = SpanContext(
        int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=TraceFlags(int(flags, 16))
    )
    return trace.set_span_in_context(NonRecordingSpan(parent))


def current_traceparent() -> str:
    """The W3C `traceparent` of the current span, or "" when there is none.

    Formatted here as the W3C propagator formats it (`test_telemetry` compares
    the two): asking the global propagator walks the baggage propagator too,
    and this runs for every enqueued message.
    """
    if not tracing_enabled():
        return ""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return ""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


_NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext()


def client_span(name: str, attributes: Mapping[str, str]) -> AbstractContextManager[object]:
    """A CLIENT span around a call to another system when tracing is on; nothing otherwise.

    An exception leaving the block is recorded on the span and re-raised.
    """
    if not tracing_enabled():
        return _NO_SPAN
    return tracer().start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes)


def producer_span(queue: str) -> AbstractContextManager[object]:
    """A PRODUCER `send {queue}` span for an enqueue that bypasses Dramatiq's `enqueue`.

    Inside it, `current_traceparent()` is the span's context, so the message carries it.
    Nothing happens when tracing is off.
    """
    if not tracing_enabled():
        return _NO_SPAN
    return tracer().start_as_current_span(
        f"send {queue}", kind=SpanKind.PRODUCER, attributes=_producer_attributes(queue)
    )


def start_producer_span(queue: str, context: Context | None = None) -> trace.Span:
    """`producer_span`'s span as a child of `context`, neither current nor ended: for an
    enqueue answered later, from a callback (tracing on)."""
    return tracer().start_span(
        f"send {queue}", context, kind=SpanKind.PRODUCER, attributes=_producer_attributes(queue)
    )


def _producer_attributes(queue: str) -> dict[str, str]:
    return {
        "messaging.system": "dramatiq",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": queue,
    }


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
