"""The gateway's span per event: one gateway process handing one published event to its sockets.

`EventDelivery` continues the publisher's trace (the frame's `traceparent`) with
one CONSUMER span per event and process, whatever the number of sockets: the
recipients, the bytes and the slowest hand-off to one socket are its
attributes, so fan-out adds no span as sockets are added. With tracing off,
`event_delivery` returns a shared no-op.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TypeVar

from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from tocsin.common.telemetry import remote_context, traceparent_of_frame, tracer, tracing_enabled

__all__ = ["EventDelivery", "event_delivery"]

RecipientT = TypeVar("RecipientT")


class EventDelivery:
    """One gateway process receiving one event: one CONSUMER span for all its recipients.

    Use as a context manager around handing the frame to the channel's sockets
    with `fan_out` (or report them with `sent`). The span's parent is the
    publishing processor span; it records the recipients, the bytes and the
    slowest hand-off to a socket. Get one from `event_delivery`.
    """

    __slots__ = ("_active", "_channel", "_frame", "_span")

    def __init__(self, channel: str, frame: bytes, *, active: bool = True) -> None:
        self._active = active
        self._channel = channel
        self._frame = frame
        self._span: Span | None = None

    def __enter__(self) -> EventDelivery:
        if not self._active:
            return self
        traceparent = traceparent_of_frame(self._frame)
        # Nothing runs inside that reads the current span: the span is not made current.
        self._span = tracer().start_span(
            f"process {self._channel}",
            context=remote_context(traceparent) if traceparent else None,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "redis",
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.destination.name": self._channel,
                "messaging.message.body.size": len(self._frame),
            },
        )
        return self

    def fan_out(self, recipients: Iterable[RecipientT], hand: Callable[[RecipientT], None]) -> int:
        """Call `hand` on each recipient; with tracing on, time each call and record `sent`."""
        if self._span is None:
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
        if self._span is None:
            return
        self._span.set_attributes(
            {
                "tocsin.fanout.recipients": recipients,
                "tocsin.fanout.bytes": recipients * len(self._frame),
                "tocsin.fanout.slowest_send_seconds": slowest_send_seconds,
            }
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span = self._span
        if span is None:
            return
        if exc is not None:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        span.end()


_NO_DELIVERY = EventDelivery("", b"", active=False)


def event_delivery(channel: str, frame: bytes) -> EventDelivery:
    """An `EventDelivery` for `frame` on `channel`; a shared no-op when tracing is off."""
    return EventDelivery(channel, frame) if tracing_enabled() else _NO_DELIVERY
