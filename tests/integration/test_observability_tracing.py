"""One alert, one trace: ingest, queue, processor, notifier and gateway delivery spans.

The services export with their real OTLP/HTTP exporter to a receiver started
here (`tests.support.OtlpReceiver`), which decodes the protobuf
`ExportTraceServiceRequest`s they send.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator

import httpx
import pytest
import websockets
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto
from tests.integration.test_notifier_delivery import FAST, routes_file
from tests.integration.test_notifier_delivery import receivers as notifier_receivers
from tests.support import OtlpReceiver, ReceivedSpan, next_frame

pytestmark = pytest.mark.integration


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


async def _deliver_one_alert(ws_url: str, token: str, post: Callable[[], None]) -> dict:
    async with websockets.connect(
        ws_url, additional_headers={"authorization": f"Bearer {token}"}
    ) as ws:
        await ws.send(json.dumps({"type": "subscribe", "channel": "alerts"}))
        await next_frame(ws, "subscribed", 20)
        await asyncio.to_thread(post)
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 20))
            if frame.get("type") == "event":
                return frame


def _one_trace(
    spans: list[ReceivedSpan], trace_id: str
) -> tuple[ReceivedSpan, ReceivedSpan, ReceivedSpan] | None:
    """(ingest SERVER, processor CONSUMER, gateway CONSUMER) of one trace."""
    mine = [span for span in spans if span.trace_id == trace_id]

    def first(service: str, kind: int, prefix: str) -> ReceivedSpan | None:
        matching = (s for s in mine if s.service == service and s.kind == kind)
        return next((s for s in matching if s.name.startswith(prefix)), None)

    server = first("tocsin-ingest", SpanProto.SPAN_KIND_SERVER, "POST")
    processed = first("tocsin-processor", SpanProto.SPAN_KIND_CONSUMER, "process alerts")
    delivered = first("tocsin-gateway", SpanProto.SPAN_KIND_CONSUMER, "process alerts")
    if server and processed and delivered:
        return server, processed, delivered
    return None


receivers = notifier_receivers


def test_one_alert_is_one_trace_from_ingest_request_to_gateway_delivery_and_notifier(
    start_service, user_token, receiver: OtlpReceiver, receivers, tmp_path
) -> None:
    tracing = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_TRACES_SAMPLER": "always_on",
    }
    start_service("processor", **tracing)
    hook = receivers()
    routes = routes_file(
        tmp_path,
        f"""
route:
  receiver: hook
  group_wait: 50ms
receivers:
  - {{name: hook, type: webhook, url: "{hook.url}"}}
""",
    )
    start_service("notifier", TOCSIN_ROUTES_FILE=routes, **FAST, **tracing)
    ingest = start_service("ingest", **tracing)
    gateway = start_service("gateway", **tracing)
    # The producer's own trace: ingest must continue it, not start another.
    producer_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {
        "authorization": f"Bearer {user_token(scopes=('ingest',))}",
        "traceparent": f"00-{producer_trace}-00f067aa0ba902b7-01",
    }
    alert = {"name": "TraceMe", "severity": "warning", "service": "db"}

    def post() -> None:
        response = httpx.post(f"{ingest.url}/v1/alerts", json=alert, headers=headers, timeout=10)
        assert response.status_code == 202, response.text

    frame = asyncio.run(_deliver_one_alert(gateway.ws_url, user_token(), post))
    assert frame.get("traceparent", "").split("-")[1] == producer_trace

    spans = receiver.wait_for(lambda spans: _one_trace(spans, producer_trace) is not None)
    found = _one_trace(spans, producer_trace)
    assert found is not None, sorted({(s.service, s.name, s.trace_id) for s in spans})
    server, processed, delivered = found
    by_id = {span.span_id: span for span in spans if span.trace_id == producer_trace}

    # ingest: the SERVER span continues the producer's span.
    assert server.parent_span_id == "00f067aa0ba902b7"
    # queue: the processor's CONSUMER span continues ingest's PRODUCER `send alerts`
    # span, a child of the request's SERVER span.
    enqueued = by_id[processed.parent_span_id]
    assert enqueued.kind == SpanProto.SPAN_KIND_PRODUCER
    assert enqueued.name == "send alerts"
    assert enqueued.attributes["messaging.destination.name"] == "alerts"
    assert enqueued.parent_span_id == server.span_id
    assert processed.attributes["messaging.destination.name"] == "alerts"
    # gateway: one CONSUMER span per event under the publishing processor span,
    # recording the fan-out to the process's sockets (no span of its own).
    publisher = by_id[delivered.parent_span_id]
    assert publisher.service == "tocsin-processor"
    chain = publisher
    while chain.span_id != processed.span_id:
        chain = by_id[chain.parent_span_id]
    assert delivered.attributes["tocsin.fanout.recipients"] == 1
    assert int(str(delivered.attributes["tocsin.fanout.bytes"])) > 0

    # notification: the notifier's CONSUMER span continues the processor's.
    def first_notifier_step(spans: list[ReceivedSpan]) -> ReceivedSpan | None:
        return next(
            (
                s
                for s in spans
                if s.trace_id == producer_trace
                and s.service == "tocsin-notifier"
                and s.parent_span_id == processed.span_id
            ),
            None,
        )

    spans = receiver.wait_for(lambda spans: first_notifier_step(spans) is not None)
    notified = first_notifier_step(spans)
    assert notified is not None
    assert notified.kind == SpanProto.SPAN_KIND_CONSUMER
    assert notified.name == "process notifications"
    # ... and the webhook send is a CLIENT span in the same trace, under a notifier step.
    spans = receiver.wait_for(
        lambda spans: any(s.trace_id == producer_trace and s.name == "send webhook" for s in spans)
    )
    by_id = {span.span_id: span for span in spans if span.trace_id == producer_trace}
    sent = next(s for s in by_id.values() if s.name == "send webhook")
    assert sent.kind == SpanProto.SPAN_KIND_CLIENT
    assert sent.attributes["tocsin.receiver"] == "hook"
    assert by_id[sent.parent_span_id].service == "tocsin-notifier"
    assert len(hook.wait_for(1)) == 1
    # Not one span per socket and none for the WebSocket's frames.
    gateway_spans = [s for s in spans if s.service == "tocsin-gateway"]
    assert not [s for s in gateway_spans if s.kind == SpanProto.SPAN_KIND_SERVER]


def test_duplicate_that_publishes_nothing_is_counted_on_its_batch_span_not_a_span_of_its_own(
    start_service, user_token, receiver: OtlpReceiver
) -> None:
    tracing = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_TRACES_SAMPLER": "always_on",
    }
    # The first repeat publishes its `alert.updated`; later ones within the hour publish nothing.
    start_service("processor", TOCSIN_UPDATE_EVENT_INTERVAL_SECONDS="3600", **tracing)
    ingest = start_service("ingest", **tracing)
    created, repeated, quiet = (f"6cf92f3577b34da6a3ce929d0e0e47{n:02x}" for n in range(3))
    for producer_trace in (created, repeated, quiet):
        response = httpx.post(
            f"{ingest.url}/v1/alerts",
            json={"name": "PostedThrice", "severity": "warning", "service": "db"},
            headers={
                "authorization": f"Bearer {user_token(scopes=('ingest',))}",
                "traceparent": f"00-{producer_trace}-00f067aa0ba902b7-01",
            },
            timeout=10,
        )
        assert response.status_code == 202, response.text

    def processed(spans: list[ReceivedSpan], trace_id: str) -> list[ReceivedSpan]:
        return [s for s in spans if s.trace_id == trace_id and s.service == "tocsin-processor"]

    def batches(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
        return [
            s
            for s in spans
            if s.service == "tocsin-processor" and any(t == quiet for t, _ in s.links)
        ]

    def requested(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
        return [s for s in spans if s.trace_id == quiet and s.service == "tocsin-ingest"]

    spans = receiver.wait_for(
        lambda spans: (
            bool(processed(spans, created) and processed(spans, repeated))
            and bool(batches(spans))
            and len(requested(spans)) == 2
        )
    )
    # The creation and the repeat that published an event keep their CONSUMER spans.
    for producer_trace in (created, repeated):
        [span] = processed(spans, producer_trace)
        assert (span.name, span.kind) == ("process alerts", SpanProto.SPAN_KIND_CONSUMER)
    # The quiet repeat: its request's spans, none in the processor of its own ...
    assert not processed(spans, quiet)
    [server] = [s for s in requested(spans) if s.kind == SpanProto.SPAN_KIND_SERVER]
    [sent] = [s for s in requested(spans) if s.kind == SpanProto.SPAN_KIND_PRODUCER]
    assert sent.name == "send alerts"
    assert sent.parent_span_id == server.span_id
    # ... and its batch's span counts it and links to the message's send span.
    [batch] = batches(spans)
    assert (batch.name, batch.kind) == ("process alerts", SpanProto.SPAN_KIND_CONSUMER)
    assert (quiet, sent.span_id) in batch.links
    assert batch.attributes["tocsin.unchanged.duplicate"] == 1
    assert batch.attributes["messaging.batch.message_count"] == 1
    assert batch.trace_id not in (created, repeated, quiet)
