"""Span export through a child process: what arrives, and the pipe's faults, with real processes.

Spans go from a real TracerProvider through `SpanPipe` to the real exporting
child and its OTLP/HTTP exporter, into a real HTTP receiver; what arrives is
compared with the OpenTelemetry library's own encoding of the same spans.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from tests.support import OtlpReceiver, process_alive, wait_until

from tocsin.common.telemetry.export import SPANS_DROPPED, SpanPipe

RESOURCE = Resource.create({"service.name": "tocsin-pipe-test", "deployment.environment": "t"})


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


def _environ(receiver: OtlpReceiver) -> dict[str, str]:
    return {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }


def _received(receiver: OtlpReceiver) -> dict[bytes, tuple[SpanProto, dict[str, object], str]]:
    """span id -> (span, its resource's attributes, its scope name@version)."""
    found: dict[bytes, tuple[SpanProto, dict[str, object], str]] = {}
    for request in list(receiver.requests):
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                scope = f"{scope_spans.scope.name}@{scope_spans.scope.version}"
                for span in scope_spans.spans:
                    found[span.span_id] = (span, resource, scope)
    return found


def _write_varied_spans(provider: TracerProvider) -> None:
    tracer = provider.get_tracer("tocsin", "1.2.3")
    carrier = {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": "vendor=opaque,other=1",
    }
    remote = TraceContextTextMapPropagator().extract(carrier)
    linked = trace.get_current_span(remote).get_span_context()
    with tracer.start_as_current_span(
        "POST /v1/alerts",
        context=remote,
        kind=SpanKind.SERVER,
        attributes={"http.request.method": "POST", "http.response.status_code": 202},
    ):
        with tracer.start_as_current_span(
            "send alerts",
            kind=SpanKind.PRODUCER,
            links=[Link(linked, {"link.kind": "publisher"})],
            attributes={
                "ratio": 0.25,
                "flag": True,
                "labels": ["a", "b"],
                "sizes": [1, 2, 3],
            },
        ) as span:
            span.add_event("enqueued", {"queue": "alerts", "count": 3})
            span.add_event("beyond the event limit")
        with tracer.start_as_current_span("process alerts", kind=SpanKind.CONSUMER) as failing:
            failing.record_exception(RuntimeError("receiver said no"))
            failing.set_status(Status(StatusCode.ERROR, "RuntimeError"))
    provider.get_tracer("other").start_span("a root of its own").end()


def test_spans_through_the_child_arrive_as_the_library_encodes_them(
    receiver: OtlpReceiver,
) -> None:
    memory = InMemorySpanExporter()
    pipe = SpanPipe(RESOURCE, environ=_environ(receiver))
    # Limits low enough that the dropped counts are not all zero.
    limits = SpanLimits(max_span_attributes=3, max_events=1)
    provider = TracerProvider(resource=RESOURCE, span_limits=limits)
    provider.add_span_processor(pipe)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    try:
        _write_varied_spans(provider)
        assert pipe.force_flush(30_000)
        finished = memory.get_finished_spans()
        assert {(s.dropped_attributes, s.dropped_events) for s in finished} >= {(1, 1)}
        expected = encode_spans(finished)
        received = _received(receiver)
        assert len(received) == len(memory.get_finished_spans()) == 4
        for resource_spans in expected.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                scope = f"{scope_spans.scope.name}@{scope_spans.scope.version}"
                for span in scope_spans.spans:
                    # Every field: ids, parent, flags, tracestate, kind, times, attributes,
                    # events, links, status and the dropped counts.
                    assert received[span.span_id] == (span, resource, scope)
    finally:
        provider.shutdown()


def test_a_killed_exporting_process_is_replaced_and_later_spans_arrive(
    receiver: OtlpReceiver,
) -> None:
    pipe = SpanPipe(RESOURCE, environ=_environ(receiver), restart_pause=0.2)
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(pipe)
    tracer = provider.get_tracer("tocsin")
    try:
        first = pipe.exporter_pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: not process_alive(first), 10, "the first child to die")

        def after_restart() -> bool:
            tracer.start_span("after the restart").end()
            return pipe.exporter_pid not in (None, first) and pipe.force_flush(5_000)

        wait_until(after_restart, 30, "a new child exporting")
        names = {span.name for span, _, _ in _received(receiver).values()}
        assert "after the restart" in names
    finally:
        provider.shutdown()


def test_a_stopped_exporting_process_costs_dropped_spans_never_a_blocked_caller(
    receiver: OtlpReceiver,
) -> None:
    pipe = SpanPipe(RESOURCE, environ=_environ(receiver), max_queued=100)
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(pipe)
    tracer = provider.get_tracer("tocsin")
    child = pipe.exporter_pid
    assert child is not None
    dropped_before = SPANS_DROPPED._value.get()
    os.kill(child, signal.SIGSTOP)
    try:
        # Far more than the pipe and the queue hold: the caller must finish anyway.
        finished = threading.Event()

        def end_many() -> None:
            for n in range(5_000):
                tracer.start_span(f"span {n}", attributes={"padding": "x" * 200}).end()
            finished.set()

        threading.Thread(target=end_many, daemon=True).start()
        assert finished.wait(60), "ending spans blocked on a stopped exporter"
        wait_until(lambda: SPANS_DROPPED._value.get() > dropped_before, 10, "counted drops")
    finally:
        os.kill(child, signal.SIGCONT)
    try:
        # The queue is still full the moment the child resumes: a span is dropped
        # until the writer has caught up, so each look ends a new one.
        def arrived() -> bool:
            tracer.start_span("after the stop").end()
            pipe.force_flush(5_000)
            return any(s.name == "after the stop" for s, _, _ in _received(receiver).values())

        wait_until(arrived, 60, "a span ended after the exporter resumed")
    finally:
        provider.shutdown()


_PARENT = """
import sys, time
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from tocsin.common.telemetry.export import SpanPipe
pipe = SpanPipe(Resource.create({"service.name": "doomed"}))
provider = TracerProvider()
provider.add_span_processor(pipe)
provider.get_tracer("tocsin").start_span("before the kill").end()
assert pipe.force_flush(30_000)
print(pipe.exporter_pid, flush=True)
time.sleep(600)
"""


def test_the_exporting_process_ends_with_its_parent_even_after_sigkill(
    receiver: OtlpReceiver,
) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT],
        env=_environ(receiver),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert process_alive(child)
        parent.kill()
        parent.wait(10)
        wait_until(lambda: not process_alive(child), 15, "the child to end after its parent")
        names = {span.name for span, _, _ in _received(receiver).values()}
        assert "before the kill" in names
    finally:
        parent.kill()
        parent.wait(10)
