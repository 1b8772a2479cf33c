"""The gateway's spans per event: one gateway process receiving one published event.

`EventDelivery` continues the publisher's trace (the frame's `traceparent`) with
a CONSUMER span and a `fan-out` child, one pair per event and process, never
one per socket. With tracing off, `event_delivery` returns a shared no-op.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from tocsin.common.telemetry import (
    TRACEPARENT,
    W3C_PROPAGATOR,
    traceparent_of_frame,
    tracer,
    tracing_enabled,
)

__all__ = ["EventDelivery", "event_delivery"]

RecipientT = TypeVar("RecipientT")


class EventDelivery:
    """One gateway process receiving one event: a CONSUMER span and a fan-out child span.

    Use as a context manager around handing the frame to the channel's sockets
    with `fan_out` (or report them with `sent`); the CONSUMER span continues
    the publisher's trace (parent and link), the `fan-out` child records the
    recipients, the bytes and the slowest hand-off to a socket. Get one from
    `event_delivery`. One pair of spans per event and process, never one per socket.
    """

    __slots__ = ("_active", "_channel", "_fanout", "_frame", "_process", "_started", "_token")

    def __init__(self, channel: str, frame: bytes, *, active: bool = True) -> None:
        self._active = active
        self._channel = channel
        self._frame = frame
        self._process: Span | None = None
        self._fanout: Span | None = None
        self._token: object = None
        self._started = 0.0

    def __enter__(self) -> EventDelivery:
        if not self._active:
            return self
        traceparent = traceparent_of_frame(self._frame)
        parent = W3C_PROPAGATOR.extract({TRACEPARENT: traceparent}) if traceparent else None
        links = []
        if parent is not None:
            publisher = trace.get_current_span(parent).get_span_context()
            if publisher.is_valid:
                links.append(Link(publisher))
        events = tracer()
        self._process = events.start_span(
            f"process {self._channel}",
            context=parent,
            kind=SpanKind.CONSUMER,
            links=links,
            attributes={
                "messaging.system": "redis",
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.destination.name": self._channel,
                "messaging.message.body.size": len(self._frame),
            },
        )
        process_context = trace.set_span_in_context(self._process)
        self._token = otel_context.attach(process_context)
        self._fanout = events.start_span(f"fan-out {self._channel}", context=process_context)
        self._started = time.perf_counter()
        return self

    def fan_out(self, recipients: Iterable[RecipientT], hand: Callable[[RecipientT], None]) -> int:
        """Call `hand` on each recipient; with tracing on, time each call and record `sent`."""
        if self._fanout is None:
            count = 0
            for recipient in recipients:
                hand(recipient)
                count += 1
            return count
        count, slowest = 0, 0.0
        clock = time.perf_counter
        # One clock reading per recipient (each hand-off ends where the next starts).
        last = clock()
        for recipient in recipients:
            hand(recipient)
            now = clock()
            if now - last > slowest:
                slowest = now - last
            last = now
            count += 1
        self.sent(count, slowest)
        return count

    def sent(self, recipients: int, slowest_send_seconds: float = 0.0) -> None:
        """Record the fan-out's recipients and its slowest hand-off to one socket."""
        if self._fanout is None:
            return
        self._fanout.set_attribute("tocsin.fanout.recipients", recipients)
        self._fanout.set_attribute("tocsin.fanout.bytes", recipients * len(self._frame))
        self._fanout.set_attribute("tocsin.fanout.slowest_send_seconds", slowest_send_seconds)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._process is None or self._fanout is None:
            return
        if exc is not None:
            self._fanout.record_exception(exc)
            self._fanout.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        self._fanout.end()
        self._process.end()
        otel_context.detach(self._token)  # type: ignore[arg-type]


_NO_DELIVERY = EventDelivery("", b"", active=False)


def event_delivery(channel: str, frame: bytes) -> EventDelivery:
    """An `EventDelivery` for `frame` on `channel`; a shared no-op when tracing is off."""
    return EventDelivery(channel, frame) if tracing_enabled() else _NO_DELIVERY
