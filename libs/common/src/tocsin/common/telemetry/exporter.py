"""The exporting child process: span frames in on stdin, OTLP/HTTP out.

`SpanPipe` (`tocsin.common.telemetry.export`) starts it as
`python -m tocsin.common.telemetry.exporter` and writes the frames described
there. The span tuples are batched by the SDK's own BatchSpanProcessor and
sent by its OTLP/HTTP exporter (`otlp.RecordExporter`, which encodes the tuples
itself), reading `OTEL_BSP_*` and `OTEL_EXPORTER_OTLP_*` as in any process.
`rebuild` turns a tuple back into the SDK span it stands for: the tests'
reference for what the tuples must export as. It runs at a lower CPU priority,
ignores Ctrl-C (its parent decides when tracing ends) and ends when its stdin
closes, after exporting what it read.
"""

from __future__ import annotations

import logging
import marshal
import os
import signal
import sys
from typing import IO, Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from tocsin.common.telemetry.export import (
    FLUSH,
    FLUSHED,
    FRAME_LENGTH,
    RESOURCE,
    SPANS,
    WRITE_TIMEOUT_SECONDS,
    SpanRecord,
)

__all__ = ["main", "rebuild"]

# The child yields the CPU to whatever serves requests beside it (it shares their cores).
CHILD_NICENESS = 10


class _PipedSpan(ReadableSpan):
    """A span rebuilt in the child, keeping the counts of what its limits dropped."""

    def __init__(self, dropped: tuple[int, int, int], **fields: Any) -> None:
        super().__init__(**fields)
        self._dropped_counts = dropped

    @property
    def dropped_attributes(self) -> int:
        return self._dropped_counts[0]

    @property
    def dropped_events(self) -> int:
        return self._dropped_counts[1]

    @property
    def dropped_links(self) -> int:
        return self._dropped_counts[2]


def _span_context(record: tuple[int, int, int, str], *, remote: bool = False) -> SpanContext:
    trace_id, span_id, flags, state = record
    return SpanContext(
        trace_id,
        span_id,
        is_remote=remote,
        trace_flags=TraceFlags(flags),
        trace_state=TraceState.from_header([state]) if state else None,
    )


def _attributes(attributes: dict[str, Any], dropped: int) -> Any:
    """An event's or link's attributes, with the count its limit dropped when there is one.

    The SDK reads that count only from a `BoundedAttributes`, so one is built
    only then (the common case keeps the plain dict).
    """
    if not dropped:
        return attributes
    bounded = BoundedAttributes(attributes=attributes)
    bounded.dropped = dropped
    return bounded


def rebuild(
    record: SpanRecord,
    resource: Resource,
    scopes: dict[tuple[str, str | None, str | None], InstrumentationScope],
) -> ReadableSpan:
    """The SDK span a `_record` came from, as an exporter sees it."""
    (
        name,
        context,
        parent,
        kind,
        start,
        end,
        attributes,
        (status_code, status_description),
        events,
        links,
        dropped,
        scope_key,
    ) = record
    context_span = _span_context(context)
    scope = None
    if scope_key is not None:
        scope_key = tuple(scope_key)
        scope = scopes.get(scope_key)
        if scope is None:
            scope = scopes[scope_key] = InstrumentationScope(*scope_key)
    return _PipedSpan(
        tuple(dropped),
        name=name,
        context=context_span,
        parent=None
        if parent is None
        else SpanContext(
            context_span.trace_id,
            parent[0],
            is_remote=parent[1],
            trace_flags=context_span.trace_flags,
        ),
        resource=resource,
        attributes=attributes,
        events=[
            Event(e_name, _attributes(e_attributes, e_dropped), e_time)
            for e_name, e_time, e_attributes, e_dropped in events
        ],
        links=[
            Link(_span_context(ctx, remote=remote), _attributes(attrs, dropped))
            for ctx, attrs, dropped, remote in links
        ],
        kind=SpanKind(kind),
        status=Status(StatusCode(status_code), status_description),
        start_time=start,
        end_time=end,
        instrumentation_scope=scope,
    )


class _Queued(tuple[Any, ...]):
    """A span record as the SDK's BatchSpanProcessor sees it, which reads only its sampled flag.

    Only sampled spans are piped, so the flag is the same for all. The batches
    come out at `RecordExporter.export`, which encodes the records themselves.
    """

    __slots__ = ()
    context = SpanContext(1, 1, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))


def _read_frame(stream: IO[bytes]) -> tuple[int, Any] | None:
    head = stream.read(FRAME_LENGTH.size)
    if len(head) < FRAME_LENGTH.size:
        return None
    (length,) = FRAME_LENGTH.unpack(head)
    payload = stream.read(length)
    if len(payload) < length:
        return None
    kind, body = marshal.loads(payload)
    return kind, body


def main() -> None:
    """The child: read frames from stdin until it closes, export them with the SDK's exporter."""
    # Imported here: the serving process never loads the exporter.
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from tocsin.common.telemetry.otlp import RecordExporter

    logging.basicConfig(level=logging.WARNING, format="span exporter: %(message)s")
    os.nice(CHILD_NICENESS)
    # Ctrl-C reaches the whole process group; the child ends when its parent closes the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exporter = RecordExporter()
    processor = BatchSpanProcessor(exporter)
    frames, answers = sys.stdin.buffer, sys.stdout.buffer
    try:
        while (frame := _read_frame(frames)) is not None:
            kind, body = frame
            if kind == SPANS:
                for record in body:
                    processor.on_end(_Queued(record))  # type: ignore[arg-type]  # see _Queued
            elif kind == RESOURCE:
                # Sent once, before any span (a restarted child gets it first again).
                attributes, schema_url = body
                exporter.resource = Resource(attributes, schema_url or None)
            elif kind == FLUSH:
                # Bounded well inside the parent's write deadline, which would count a
                # longer wait as a wedged child.
                exported = processor.force_flush(int(WRITE_TIMEOUT_SECONDS * 500))
                answers.write(FLUSHED.pack(body, exported))
                answers.flush()
    finally:
        processor.shutdown()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    main()
