"""`RecordingTracerProvider` against the OpenTelemetry SDK, differentially.

The same spans are written through the API twice: once to the SDK's
`TracerProvider`, once to `RecordingTracerProvider`, with the same sampler,
the same (seeded) ids, the same limits and the same clock. What the SDK would
export (`encode_spans` of its finished spans) must equal `encode_records` of
our records (the child's own encoder) and the SDK's encoding of them rebuilt as
SDK spans; and the tuples themselves must equal what `SpanPipe` makes of the
SDK's spans.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    DEFAULT_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

import tocsin.common.telemetry.spans as recording
from tocsin.common.telemetry import propagation
from tocsin.common.telemetry.export import SpanRecord, _record
from tocsin.common.telemetry.exporter import rebuild
from tocsin.common.telemetry.otlp import encode_records
from tocsin.common.telemetry.spans import RecordingTracerProvider

RESOURCE = Resource.create({"service.name": "tocsin-spans-test"})
REMOTE = {
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tracestate": "vendor=opaque,other=1",
}
REMOTE_OFF = "00-1af7651916cd43dd8448eb211c80319c-c7ad6b7169203331-00"


class SeededIds(IdGenerator):
    """Random-looking ids from a seed: both providers draw the same sequence."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)

    def generate_span_id(self) -> int:
        return self._random.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._random.getrandbits(128) or 1

    def is_trace_id_random(self) -> bool:
        return True


class Records(SpanProcessor):
    """What `SpanPipe` hands over for each sampled SDK span."""

    def __init__(self) -> None:
        self.records: list[SpanRecord] = []

    def on_end(self, span: ReadableSpan) -> None:
        if span.context.trace_flags.sampled:
            self.records.append(_record(span))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """One fake nanosecond clock for both the SDK and our spans; calling it rewinds it."""
    ticks: Iterator[int] = iter(())

    def rewind() -> None:
        nonlocal ticks
        ticks = itertools.count(1_700_000_000_000_000_000, 1_000)

    def now() -> int:
        return next(ticks)

    rewind()
    monkeypatch.setattr("opentelemetry.sdk.trace.time_ns", now)
    monkeypatch.setattr(recording, "time_ns", now)
    return rewind


def write_spans(provider: trace.TracerProvider) -> None:
    """Spans of every kind Tocsin writes, and the corners of the API's rules."""
    tracer = provider.get_tracer("tocsin", "1.2.3")
    remote = TraceContextTextMapPropagator().extract(REMOTE)
    publisher = trace.get_current_span(remote).get_span_context()
    with tracer.start_as_current_span(
        "POST",
        context=remote,
        kind=SpanKind.SERVER,
        attributes={"http.request.method": "POST", "url.path": "/v1/alerts"},
    ) as server:
        server.set_attribute("http.response.status_code", 202)
        server.update_name("POST /v1/alerts")
        with tracer.start_as_current_span(
            "send alerts",
            kind=SpanKind.PRODUCER,
            links=[Link(publisher, {"link.kind": "publisher"}), Link(publisher)],
            attributes={"ratio": 0.25, "flag": True, "labels": ["a", "b"], "sizes": (1, 2)},
        ) as producer:
            producer.add_event("enqueued", {"queue": "alerts", "count": 3})
            producer.add_event("second event", timestamp=1_700_000_000_000_000_123)
            producer.add_link(publisher, {"late": "link"})
            producer.add_link(server.get_span_context())  # a local span: not remote
            producer.set_attributes({"long.value": "x" * 40, "flag": False})
        with (
            pytest.raises(RuntimeError, match="said no"),
            tracer.start_as_current_span("process alerts", kind=SpanKind.CONSUMER),
        ):
            raise RuntimeError("receiver said no")
        consumer = tracer.start_span("process notifications", kind=SpanKind.CONSUMER)
        with pytest.raises(ValueError, match="bad"), consumer:
            raise ValueError("bad notification")
        status = tracer.start_span("statuses", start_time=1_600_000_000_000_000_000)
        status.set_status(StatusCode.UNSET)
        status.set_status(StatusCode.OK, "a description OK does not keep")
        status.set_status(Status(StatusCode.ERROR, "after OK: ignored"))
        status.record_exception(KeyError("k"), {"extra": 1}, timestamp=5, escaped=True)
        status.end(end_time=1_600_000_000_000_001_000)
        status.set_attribute("after", "the end")
        status.end()
        values = {
            "negative": -5,
            "big": 2**62,
            "too big for int64": 2**64,  # the encoders leave it out
            "raw": b"\x00\x01",
            "nothing": None,
            "nested": {"k": "v", "n": [1, 2]},
            "unicode": "é✓",
            "long": "y" * 300,  # a length over one varint byte
        }
        tracer.start_span("odd values", attributes=values).end()
        failed = tracer.start_span("failed send", kind=SpanKind.CLIENT, attributes={"a": 1})
        failed.set_status(Status(StatusCode.ERROR, "Timeout"))
        failed.set_status(StatusCode.ERROR, "a later error wins")
        failed.end()
    provider.get_tracer("other", schema_url="https://example.com/s").start_span("root").end()
    unsampled = TraceContextTextMapPropagator().extract({**REMOTE, "traceparent": REMOTE_OFF})
    with tracer.start_as_current_span("under an unsampled parent", context=unsampled):
        tracer.start_span("its child").end()
    for n in range(8):  # roots, for a ratio sampler to decide on
        tracer.start_span(f"root {n}", attributes={"n": n}).end()


def _own_frames(stacktrace: str) -> str:
    """A recorded stack trace without the tracing library's frames, which differ by design."""
    kept, skipping = [], False
    for line in stacktrace.splitlines():
        if line.startswith("  File "):
            skipping = __file__ not in line
        elif not line.startswith("    "):
            skipping = False
        if not skipping:
            kept.append(line)
    return "\n".join(kept)


def _comparable_records(records: list[SpanRecord]) -> list[SpanRecord]:
    def event(name: str, at: int, attributes: dict[str, Any], dropped: int) -> tuple[Any, ...]:
        if "exception.stacktrace" in attributes:
            trace_text = _own_frames(attributes["exception.stacktrace"])
            attributes = {**attributes, "exception.stacktrace": trace_text}
        return (name, at, attributes, dropped)

    return [(*r[:8], [event(*e) for e in r[8]] if r[8] else (), *r[9:]) for r in records]


def _comparable_otlp(request: Any) -> Any:
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                for event in span.events:
                    for attribute in event.attributes:
                        if attribute.key == "exception.stacktrace":
                            value = attribute.value.string_value
                            attribute.value.string_value = _own_frames(value)
    return request


def _sdk(sampler: Sampler, limits: SpanLimits) -> tuple[list[SpanRecord], Any, Any]:
    memory = InMemorySpanExporter()
    records = Records()
    provider = TracerProvider(
        resource=RESOURCE,
        sampler=sampler,
        id_generator=SeededIds(7),
        span_limits=limits,
        shutdown_on_exit=False,
    )
    provider.add_span_processor(records)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    write_spans(provider)
    finished = encode_spans(memory.get_finished_spans())
    ours = ExportTraceServiceRequest.FromString(encode_records(records.records, RESOURCE))
    return _comparable_records(records.records), _comparable_otlp(finished), _comparable_otlp(ours)


def _ours(sampler: Sampler, limits: SpanLimits) -> tuple[list[SpanRecord], Any, Any]:
    records: list[SpanRecord] = []
    provider = RecordingTracerProvider(
        records.append, sampler=sampler, id_generator=SeededIds(7), limits=limits
    )
    write_spans(provider)
    scopes: dict[Any, Any] = {}
    rebuilt = encode_spans([rebuild(r, RESOURCE, scopes) for r in records])
    direct = ExportTraceServiceRequest.FromString(encode_records(records, RESOURCE))
    return _comparable_records(records), _comparable_otlp(rebuilt), _comparable_otlp(direct)


@pytest.mark.parametrize(
    ("sampler", "limits"),
    [
        (DEFAULT_ON, SpanLimits()),
        (ParentBased(ALWAYS_ON), SpanLimits()),
        (ALWAYS_ON, SpanLimits(max_span_attributes=3, max_events=1, max_links=1)),
        (
            ParentBased(TraceIdRatioBased(0.5)),
            SpanLimits(max_attribute_length=5, max_event_attributes=1, max_link_attributes=0),
        ),
        (ALWAYS_ON, SpanLimits(max_span_attributes=0, max_events=0, max_links=0)),
    ],
    ids=["default", "parent-based", "tight-limits", "ratio-sampler-short-values", "zero-limits"],
)
def test_recorded_spans_export_as_the_sdks_own_spans(
    clock: Callable[[], None], sampler: Sampler, limits: SpanLimits
) -> None:
    clock()
    sdk_records, sdk_otlp, sdk_records_encoded = _sdk(sampler, limits)
    clock()
    our_records, our_rebuilt_otlp, our_otlp = _ours(sampler, limits)
    assert len(our_records) >= 3  # the comparison is about something
    # Our spans as records: what SpanPipe makes of the SDK's spans.
    assert our_records == sdk_records
    # As the child rebuilds them for the SDK's encoder: what the SDK exports.
    assert our_rebuilt_otlp == sdk_otlp
    # As the child encodes them itself (`encode_records`): the same, for both sources.
    assert our_otlp == sdk_otlp
    assert sdk_records_encoded == sdk_otlp


def test_the_ratio_sampler_case_leaves_some_roots_out(clock: Callable[[], None]) -> None:
    """The sampled-out path is exercised by the differential case above."""
    clock()
    records, _, _ = _ours(ParentBased(TraceIdRatioBased(0.5)), SpanLimits())
    names = {record[0] for record in records}
    assert "POST /v1/alerts" in names
    assert 0 < len([n for n in names if n.startswith("root ")]) < 8


def test_an_unsampled_span_still_carries_its_context_and_records_nothing(
    clock: Callable[[], None],
) -> None:
    records: list[SpanRecord] = []
    provider = RecordingTracerProvider(records.append, sampler=TraceIdRatioBased(0.0))
    tracer = provider.get_tracer("tocsin")
    with tracer.start_as_current_span("dropped") as span:
        assert not span.is_recording()
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier)
        assert carrier["traceparent"].endswith("-02")  # random trace id, not sampled
    assert records == []


@pytest.mark.parametrize("sampler", [ALWAYS_ON, TraceIdRatioBased(0.0)], ids=["sampled", "not"])
def test_current_traceparent_is_what_the_w3c_propagator_injects(
    monkeypatch: pytest.MonkeyPatch, sampler: Sampler
) -> None:
    monkeypatch.setattr(propagation, "tracing_enabled", lambda: True)
    tracer = RecordingTracerProvider(lambda record: None, sampler=sampler).get_tracer("tocsin")
    assert propagation.current_traceparent() == ""  # no current span
    remote = TraceContextTextMapPropagator().extract(REMOTE)
    with tracer.start_as_current_span("send alerts", context=remote):
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier)
        assert carrier["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
        assert propagation.current_traceparent() == carrier["traceparent"]


def test_the_sampler_comes_from_otel_traces_sampler_as_in_the_sdk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    records: list[SpanRecord] = []
    provider = RecordingTracerProvider(records.append)
    provider.get_tracer("tocsin").start_span("sampled out").end()
    assert records == []
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "1")
    provider = RecordingTracerProvider(records.append)
    provider.get_tracer("tocsin").start_span("sampled in").end()
    assert [record[0] for record in records] == ["sampled in"]
