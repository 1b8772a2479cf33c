"""Spans recorded as plain tuples where they end, without the SDK's span objects.

The SDK's `Tracer` builds, per span, a `Span` with a lock, a `BoundedAttributes`
(a lock and a cleaning pass per value), a `BoundedList` per collection and, when
it ends, a second `ReadableSpan` copy for the processors; `SpanPipe` then reduced
that copy to a tuple. At 1,000 alerts/s that was about a fifth of ingest's and the
gateway's CPU (issue 14). `RecordingTracerProvider` implements the OpenTelemetry
API (`TracerProvider`, `Tracer`, `Span`) directly: a span is a few slots and a
plain dict, and ending it hands the tuple `SpanPipe` sends (`SpanRecord`) to a
callable. Everything else stays the SDK's: the sampler (`OTEL_TRACES_SAMPLER`),
the id generator, the limits (`SpanLimits`, `OTEL_*_LIMIT`) and the attribute
value cleaning; the child process batches and sends with the SDK's processor and
exporter. Only the default and always-on samplers are answered without asking
them (what they would answer is fixed), any other sampler is asked per span.

`libs/common/tests/test_telemetry_spans.py` writes the same spans through the SDK
and through this provider and compares the records and the OTLP encoding of both.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Mapping, Sequence
from time import time_ns
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.attributes import _clean_attribute_value
from opentelemetry.context import Context
from opentelemetry.sdk.trace import SpanLimits
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, DEFAULT_ON, Decision, Sampler
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.util import types

from tocsin.common.telemetry.export import SpanRecord

__all__ = ["CurrentSpan", "RecordingSpan", "RecordingTracer", "RecordingTracerProvider"]

log = logging.getLogger(__name__)

_PLAIN = frozenset({bool, int, float, bytes, type(None)})
_KEPT_AS_IS = _PLAIN | {str}
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSAMPLED = TraceFlags(TraceFlags.DEFAULT)
_RANDOM_TRACE_ID = TraceFlags.RANDOM_TRACE_ID
_UNSET_STATUS = (StatusCode.UNSET.value, None)


class _Attributes:
    """`BoundedAttributes`' rules on a plain dict: at most `limit`, the oldest goes first."""

    __slots__ = ("dropped", "items", "limit", "value_length")

    def __init__(self, limit: int | None, value_length: int | None) -> None:
        self.items: dict[str, Any] = {}
        self.limit = limit
        self.value_length = value_length
        self.dropped = 0

    def set(self, key: str, value: Any) -> None:
        if self.limit == 0:
            self.dropped += 1
            return
        if not key or type(key) is not str:
            log.warning("invalid attribute key %r dropped", key)
            self.dropped += 1
            return
        kind = type(value)
        if kind is str:
            if self.value_length is not None and len(value) > self.value_length:
                value = value[: self.value_length]
        elif kind not in _PLAIN:
            value = _clean_attribute_value(value, self.value_length)
        items = self.items
        if key in items:
            del items[key]
        elif self.limit is not None and len(items) >= self.limit:
            del items[next(iter(items))]
            self.dropped += 1
        items[key] = value

    def update(self, attributes: Mapping[str, Any]) -> None:
        if self.limit == 0:
            self.dropped += len(attributes)
            return
        if (
            not self.items
            and self.value_length is None
            and (self.limit is None or len(attributes) <= self.limit)
        ):
            # A span's first attributes, within the limits: what `set` would keep, one
            # by one, is a copy when every key is a str and every value needs no cleaning.
            for key, value in attributes.items():
                if type(key) is not str or not key or type(value) not in _KEPT_AS_IS:
                    break
            else:
                self.items = dict(attributes)
                return
        for key, value in attributes.items():
            self.set(key, value)


def _bounded(
    limit: int | None, value_length: int | None, attributes: types.Attributes
) -> tuple[dict[str, Any], int]:
    """Attributes of an event or a link: their cleaned dict and the count dropped."""
    if not attributes:
        return {}, 0
    bounded = _Attributes(limit, value_length)
    bounded.update(attributes)
    return bounded.items, bounded.dropped


def _context_record(context: SpanContext) -> tuple[int, int, int, str]:
    state = context.trace_state
    return (
        context.trace_id,
        context.span_id,
        int(context.trace_flags),
        state.to_header() if state else "",
    )


class RecordingSpan(trace.Span):
    """An API span that keeps only what its record needs; ending it hands the record on."""

    __slots__ = (
        "_attributes",
        "_context",
        "_end",
        "_events",
        "_events_dropped",
        "_kind",
        "_links",
        "_links_dropped",
        "_name",
        "_parent",
        "_record_exception",
        "_set_status_on_exception",
        "_start",
        "_status",
        "_tracer",
    )

    def __init__(
        self,
        tracer: RecordingTracer,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: _Attributes,
        links: list[tuple[tuple[int, int, int, str], dict[str, Any], int, bool]],
        links_dropped: int,
        start: int,
        record_exception: bool,
        set_status_on_exception: bool,
    ) -> None:
        self._tracer = tracer
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        self._attributes = attributes
        self._links = links
        self._links_dropped = links_dropped
        self._events: list[tuple[str, int, dict[str, Any], int]] = []
        self._events_dropped = 0
        self._start = start
        self._end: int | None = None
        self._status: tuple[int, str | None] = _UNSET_STATUS
        self._record_exception = record_exception
        self._set_status_on_exception = set_status_on_exception

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end is None

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        if self._end is not None:
            log.warning("Setting attribute on ended span.")
            return
        self._attributes.set(key, value)

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        if self._end is not None:
            log.warning("Setting attribute on ended span.")
            return
        self._attributes.update(attributes)

    def add_event(
        self, name: str, attributes: types.Attributes = None, timestamp: int | None = None
    ) -> None:
        if self._end is not None:
            return
        limits = self._tracer.limits
        items, dropped = _bounded(
            limits.max_event_attributes, limits.max_attribute_length, attributes
        )
        at = time_ns() if timestamp is None else timestamp
        events = self._events
        if limits.max_events is not None and len(events) >= limits.max_events:
            self._events_dropped += 1
            if not limits.max_events:
                return
            del events[0]
        events.append((name, at, items, dropped))

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        if self._end is not None or not _valid_link(context, attributes):
            return
        limits = self._tracer.limits
        items, dropped = _bounded(
            limits.max_link_attributes, limits.max_attribute_length, attributes
        )
        links = self._links
        if limits.max_links is not None and len(links) >= limits.max_links:
            self._links_dropped += 1
            if not limits.max_links:
                return
            del links[0]
        links.append((_context_record(context), items, dropped, context.is_remote))

    def update_name(self, name: str) -> None:
        if self._end is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        # The SDK's rules: OK is final, UNSET is ignored, a description only with a code.
        if self._end is not None or self._status[0] == StatusCode.OK.value:
            return
        if isinstance(status, Status):
            if status.status_code is not StatusCode.UNSET:
                self._status = (status.status_code.value, status.description)
        elif status is not StatusCode.UNSET:
            self._status = (status.value, Status(status, description).description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        module = type(exception).__module__
        qualname = type(exception).__qualname__
        recorded: dict[str, Any] = {
            "exception.type": f"{module}.{qualname}"
            if module and module != "builtins"
            else qualname,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            recorded.update(attributes)
        self.add_event("exception", recorded, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end is not None:
            log.warning("Calling end() on an ended span.")
            return
        end = self._end = time_ns() if end_time is None else end_time
        context = self._context
        if not context.trace_flags & TraceFlags.SAMPLED:
            return  # recorded (RECORD_ONLY) but not for export, as the SDK's processors do
        parent = self._parent
        tracer = self._tracer
        tracer.hand(
            (
                self._name,
                _context_record(context),
                None if parent is None else (parent.span_id, parent.is_remote),
                self._kind.value,
                self._start,
                end,
                self._attributes.items,
                self._status,
                self._events or (),
                self._links or (),
                (self._attributes.dropped, self._events_dropped, self._links_dropped),
                tracer.scope,
            )
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        if exc_val is not None and self._end is None:
            if self._record_exception:
                self.record_exception(exc_val, escaped=True)
            if self._set_status_on_exception:
                self.set_status(Status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}"))
        self.end()


class CurrentSpan:
    """`trace.use_span` as a class: the span current inside the block, its error recorded.

    The same rules as the API's generator (only `Exception` is recorded, then
    re-raised), without a generator frame per span.
    """

    __slots__ = ("_end_on_exit", "_record_exception", "_set_status", "_span", "_token")

    def __init__(
        self, span: trace.Span, end_on_exit: bool, record_exception: bool, set_status: bool
    ) -> None:
        self._span = span
        self._end_on_exit = end_on_exit
        self._record_exception = record_exception
        self._set_status = set_status
        self._token: object = None

    def __enter__(self) -> trace.Span:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span = self._span
        try:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            if isinstance(exc, Exception) and span.is_recording():
                if self._record_exception:
                    span.record_exception(exc)
                if self._set_status:
                    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        finally:
            if self._end_on_exit:
                span.end()


def _valid_link(context: SpanContext, attributes: types.Attributes) -> bool:
    return bool(context and (context.is_valid or (attributes or context.trace_state)))


class RecordingTracer(trace.Tracer):
    """The API tracer of a `RecordingTracerProvider`, for one instrumentation scope."""

    def __init__(
        self,
        provider: RecordingTracerProvider,
        scope: tuple[str, str, str],
    ) -> None:
        self.hand = provider.hand
        self.sampler = provider.sampler
        self.ids = provider.id_generator
        self.limits = provider.limits
        self.scope = scope

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        parent: SpanContext | None = trace.get_current_span(context).get_span_context()
        ids = self.ids
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = ids.generate_trace_id()
            random_trace_id = ids.is_trace_id_random()
        else:
            trace_id = parent.trace_id
            random_trace_id = parent.trace_flags.random_trace_id
        links = links or ()
        sampler = self.sampler
        if sampler is ALWAYS_ON or (
            sampler is DEFAULT_ON and (parent is None or parent.trace_flags.sampled)
        ):
            # What these two samplers answer here, without building their answer:
            # record and sample, with the attributes given and the parent's trace state.
            decision, kept_attributes = Decision.RECORD_AND_SAMPLE, attributes
            trace_state = None if parent is None else parent.trace_state
        else:
            sampled = sampler.should_sample(context, trace_id, name, kind, attributes, links)
            decision, kept_attributes = sampled.decision, sampled.attributes
            trace_state = sampled.trace_state
        flags = _SAMPLED if decision is Decision.RECORD_AND_SAMPLE else _UNSAMPLED
        if random_trace_id:
            flags = TraceFlags(flags | _RANDOM_TRACE_ID)
        span_context = SpanContext(
            trace_id,
            ids.generate_span_id(),
            is_remote=False,
            trace_flags=flags,
            trace_state=trace_state,
        )
        if decision is Decision.DROP:
            return NonRecordingSpan(span_context)
        limits = self.limits
        bounded = _Attributes(limits.max_span_attributes, limits.max_span_attribute_length)
        if kept_attributes:
            bounded.update(kept_attributes)
        kept: list[tuple[tuple[int, int, int, str], dict[str, Any], int, bool]] = []
        links_dropped = 0
        if links:
            for link in links:
                if link and _valid_link(link.context, link.attributes):
                    items, dropped = _bounded(
                        limits.max_link_attributes, limits.max_attribute_length, link.attributes
                    )
                    kept.append(
                        (_context_record(link.context), items, dropped, link.context.is_remote)
                    )
            if limits.max_links is not None and len(kept) > limits.max_links:
                links_dropped = len(kept) - limits.max_links
                kept = kept[links_dropped:]
        return RecordingSpan(
            self,
            name,
            span_context,
            parent,
            kind,
            bounded,
            kept,
            links_dropped,
            time_ns() if start_time is None else start_time,
            record_exception,
            set_status_on_exception,
        )

    def start_as_current_span(  # type: ignore[override]  # a context manager, not a generator
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> CurrentSpan:
        span = self.start_span(
            name, context, kind, attributes, links, start_time, record_exception,
            set_status_on_exception,
        )  # fmt: skip
        return CurrentSpan(span, end_on_exit, record_exception, set_status_on_exception)


class RecordingTracerProvider(trace.TracerProvider):
    """An API tracer provider whose spans, once ended and sampled, go to `hand` as records.

    `sampler`, `id_generator` and `limits` default to what the SDK's
    `TracerProvider` would read from the environment.
    """

    def __init__(
        self,
        hand: Callable[[SpanRecord], None],
        *,
        sampler: Sampler | None = None,
        id_generator: IdGenerator | None = None,
        limits: SpanLimits | None = None,
    ) -> None:
        if sampler is None:
            from opentelemetry.sdk.trace import sampling

            # The SDK's own reading of OTEL_TRACES_SAMPLER(_ARG), as its TracerProvider does.
            sampler = sampling._get_from_env_or_default()
        self.hand = hand
        self.sampler = sampler
        self.id_generator = id_generator or RandomIdGenerator()
        self.limits = limits or SpanLimits()
        self._tracers: dict[tuple[str, str, str], RecordingTracer] = {}

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: types.Attributes = None,
    ) -> trace.Tracer:
        # As the SDK's provider names them: "" for what was not given.
        scope = (
            instrumenting_module_name or "",
            instrumenting_library_version or "",
            schema_url or "",
        )
        found = self._tracers.get(scope)
        if found is None:
            found = self._tracers[scope] = RecordingTracer(self, scope)
        return found
