"""The gateway's per-event spans: a shared no-op with tracing off."""

from __future__ import annotations

from tocsin.gateway.tracing import event_delivery


def test_off_tracing_hands_out_one_shared_no_op_delivery() -> None:
    first = event_delivery("alerts", b'{"traceparent":"00-a-b-01"}')
    assert first is event_delivery("other", b"{}")
    with first as delivery:
        delivery.sent(3)
        assert delivery.fan_out([1, 2], lambda _: None) == 2
