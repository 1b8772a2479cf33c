"""The gateway's span per event: one for all of a process's sockets; a shared no-op when off."""

from __future__ import annotations

import pytest
from opentelemetry import trace

from tocsin.common.telemetry import setup as telemetry_setup
from tocsin.common.telemetry.export import SpanRecord
from tocsin.common.telemetry.spans import RecordingTracerProvider
from tocsin.gateway.tracing import event_delivery

PUBLISHER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_off_tracing_hands_out_one_shared_no_op_delivery() -> None:
    first = event_delivery("alerts", b'{"traceparent":"00-a-b-01"}')
    assert first is event_delivery("other", b"{}")
    with first as delivery:
        delivery.sent(3)
        assert delivery.fan_out([1, 2], lambda _: None) == 2


def test_an_event_handed_to_many_sockets_is_one_consumer_span_under_its_publisher(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    records: list[SpanRecord] = []
    monkeypatch.setattr(telemetry_setup, "_enabled", True)
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", RecordingTracerProvider(records.append))
    frame = b'{"type":"event","data":{},"traceparent":"' + PUBLISHER.encode() + b'"}'
    handed: list[int] = []
    with event_delivery("alerts", frame) as delivery:
        assert delivery.fan_out(range(50), handed.append) == 50
    assert handed == list(range(50))
    [record] = records
    name, context, parent, kind, _start, _end, attributes, _status, events, links = record[:10]
    assert (name, kind) == ("process alerts", trace.SpanKind.CONSUMER.value)
    assert context[0] == int(PUBLISHER.split("-")[1], 16)
    assert parent == (int(PUBLISHER.split("-")[2], 16), True)
    assert attributes["tocsin.fanout.recipients"] == 50
    assert attributes["tocsin.fanout.bytes"] == 50 * len(frame)
    assert attributes["tocsin.fanout.slowest_send_seconds"] >= 0
    assert (events, links) == ((), ())
