"""Tracing setup and the Dramatiq tracing middleware, on Dramatiq's in-memory broker."""

from __future__ import annotations

from collections.abc import Iterator

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Retries
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tocsin.common import telemetry
from tocsin.common.telemetry import (
    TRACEPARENT,
    TRACESTATE,
    W3C_PROPAGATOR,
    TracingMiddleware,
    current_traceparent,
    remote_context,
    setup_tracing,
    traceparent_of_frame,
)


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_SERVICE_NAME": "x"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_SDK_DISABLED": "true"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_TRACES_EXPORTER": "none"},
    ],
)
def test_tracing_stays_off_without_an_endpoint_or_when_disabled(environ: dict[str, str]) -> None:
    assert setup_tracing("ingest", environ) is False
    assert telemetry.tracing_enabled() is False


def test_off_tracing_has_no_traceparent_to_carry() -> None:
    assert current_traceparent() == ""


def test_traceparent_is_read_from_the_end_of_a_frame_without_decoding() -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    frame = b'{"type":"event","data":{"traceparent":"fake"},"traceparent":"' + parent.encode()
    assert traceparent_of_frame(frame + b'"}') == parent
    assert traceparent_of_frame(b'{"type":"event"}') == ""


_VALID = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    ("traceparent", "tracestate"),
    [
        (_VALID, None),
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00", None),  # not sampled
        (_VALID, "vendor=value,other=1"),
        (_VALID, ""),
        ("00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01", None),  # upper case
        ("00-00000000000000000000000000000000-b7ad6b7169203331-01", None),  # no trace id
        ("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", None),  # no span id
        ("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", None),  # forbidden version
        ("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-later", None),  # future one
        (_VALID + "-more", None),
        (" " + _VALID + " ", None),
        (_VALID[:-1], None),
        ("00-0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331-01", None),
        ("00-0af7651916cd43dd8448eb211c8031+c-b7ad6b7169203331-01", None),
        ("", None),
        ("garbage", None),
    ],
)
def test_remote_context_is_what_the_w3c_propagator_extracts(
    traceparent: str, tracestate: str | None
) -> None:
    carrier = {TRACEPARENT: traceparent}
    if tracestate is not None:
        carrier[TRACESTATE] = tracestate
    expected = trace.get_current_span(W3C_PROPAGATOR.extract(carrier)).get_span_context()
    found = trace.get_current_span(remote_context(traceparent, tracestate)).get_span_context()
    assert found == expected
    assert (found.is_remote, found.trace_flags, found.trace_state) == (
        expected.is_remote,
        expected.trace_flags,
        expected.trace_state,
    )


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def broker(exporter: InMemorySpanExporter) -> Iterator[StubBroker]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    stub = StubBroker()
    stub.add_middleware(TracingMiddleware(provider), before=Retries)
    stub.emit_after("process_boot")
    dramatiq.set_broker(stub)
    yield stub
    stub.close()


def test_enqueue_is_a_producer_span_and_processing_a_consumer_child(
    broker: StubBroker, exporter: InMemorySpanExporter
) -> None:
    seen: list[str] = []

    @dramatiq.actor(queue_name="alerts", broker=broker)
    def handle() -> None:
        seen.append("ran")

    message = handle.send()
    assert message.options[TRACEPARENT].startswith("00-")
    worker = dramatiq.Worker(broker, worker_timeout=50)
    worker.start()
    broker.join("alerts", timeout=10_000)
    worker.join()
    worker.stop()
    spans = {span.name: span for span in exporter.get_finished_spans()}
    send, process = spans["send alerts"], spans["process alerts"]
    assert send.kind is SpanKind.PRODUCER
    assert process.kind is SpanKind.CONSUMER
    assert process.parent is not None
    assert process.parent.span_id == send.context.span_id
    assert process.context.trace_id == send.context.trace_id
    assert process.attributes is not None
    assert process.attributes["messaging.destination.name"] == "alerts"
    assert seen == ["ran"]


def test_retried_message_keeps_its_trace_and_records_the_error(
    broker: StubBroker, exporter: InMemorySpanExporter
) -> None:
    attempts: list[int] = []

    @dramatiq.actor(queue_name="alerts", broker=broker, max_retries=1, min_backoff=1)
    def flaky() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")

    message = flaky.send()
    worker = dramatiq.Worker(broker, worker_timeout=50)
    worker.start()
    broker.join("alerts", timeout=10_000)
    worker.join()
    worker.stop()
    processed = [span for span in exporter.get_finished_spans() if span.name == "process alerts"]
    assert len(processed) == 2
    assert {span.context.trace_id for span in processed} == {
        int(message.options[TRACEPARENT].split("-")[1], 16)
    }
    assert [span.status.is_ok for span in processed].count(False) == 1
    assert len([s for s in exporter.get_finished_spans() if s.name == "send alerts"]) == 1
