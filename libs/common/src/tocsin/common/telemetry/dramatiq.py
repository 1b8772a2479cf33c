"""Dramatiq middleware: PRODUCER spans around enqueues, CONSUMER spans around jobs.

Span names and attributes follow the OpenTelemetry messaging conventions:
`send {queue}` / `process {queue}` with `messaging.system`,
`messaging.destination.name`, `messaging.operation.type` and
`messaging.message.id`; a batch's span has `messaging.batch.message_count`
and a link per message.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from time import time_ns
from typing import Any

import dramatiq
from dramatiq.broker import Broker, MessageProxy
from dramatiq.middleware import Middleware
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from tocsin.common.telemetry.propagation import (
    TRACEPARENT,
    TRACESTATE,
    W3C_PROPAGATOR,
    remote_context,
)
from tocsin.common.telemetry.setup import TRACER_NAME

__all__ = ["TracingMiddleware"]

# A folded message: (queue, message id, the context it came with, when it began, outcomes).
_Folded = tuple[str, str, Context, int, Mapping[str, int]]


def _messaging_attributes(
    message: dramatiq.Message[Any] | MessageProxy, operation: str
) -> dict[str, Any]:
    return {
        "messaging.system": "dramatiq",
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": message.queue_name,
        "messaging.message.id": message.message_id,
        "tocsin.actor": message.actor_name,
        "tocsin.retries": int(message.options.get("retries", 0)),
    }


class TracingMiddleware(Middleware):
    """PRODUCER spans around enqueues and CONSUMER spans around jobs, linked by traceparent.

    A `traceparent` the sender put in the options becomes the PRODUCER span's
    parent and is replaced by the span's own. A retried message (Retries sets
    `retries` before re-enqueueing) keeps its options as they are, so every
    attempt stays a child of the one original send.

    A batch consumer may `fold` a message that changed nothing a later step
    carries its trace to (a duplicate that published nothing): its span, begun
    in its before hook, is dropped unexported by its after hook, and
    `end_batch` records every message so folded in one span for the batch,
    counted by outcome and linked to the context each message came with.
    """

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer(TRACER_NAME, tracer_provider=tracer_provider)
        self._sending: dict[str, Span] = {}
        # message id -> (its span, the context token, the context it came with, when it began)
        self._processing: dict[str, tuple[Span, object, Context, int]] = {}
        self._folding: dict[str, Mapping[str, int]] = {}  # message id -> its outcomes
        self._batches = threading.local()  # the folded messages of this thread's batch

    def before_enqueue(self, broker: Broker, message: dramatiq.Message[Any], delay: int) -> None:
        if message.options.get("retries") and TRACEPARENT in message.options:
            return
        # A traceparent the sender put in the options is the parent; else the current span.
        options = message.options
        parent = (
            remote_context(options[TRACEPARENT], options.get(TRACESTATE))
            if TRACEPARENT in options
            else None
        )
        span = self._tracer.start_span(
            f"send {message.queue_name}",
            context=parent,
            kind=SpanKind.PRODUCER,
            attributes=_messaging_attributes(message, "send"),
        )
        carrier: dict[str, str] = {}
        W3C_PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
        message.options.update(carrier)
        self._sending[message.message_id] = span

    def after_enqueue(self, broker: Broker, message: dramatiq.Message[Any], delay: int) -> None:
        span = self._sending.pop(message.message_id, None)
        if span is not None:
            if delay:
                span.set_attribute("tocsin.delay_ms", delay)
            span.end()

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        options = message.options
        # An empty context when the message carries none: never the current span.
        parent = remote_context(options.get(TRACEPARENT, ""), options.get(TRACESTATE))
        span = self._tracer.start_span(
            f"process {message.queue_name}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=_messaging_attributes(message, "process"),
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        self._processing[message.message_id] = (span, token, parent, time_ns())

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        entry = self._processing.pop(message.message_id, None)
        outcomes = self._folding.pop(message.message_id, None)
        if entry is None:
            return
        span, token, parent, started = entry
        if outcomes is not None and exception is None:
            otel_context.detach(token)  # type: ignore[arg-type]
            folded: list[_Folded] = getattr(self._batches, "folded", [])
            folded.append((message.queue_name, message.message_id, parent, started, outcomes))
            self._batches.folded = folded
            return
        if exception is not None:
            span.record_exception(exception)
            span.set_status(Status(StatusCode.ERROR, type(exception).__name__))
        span.end()
        otel_context.detach(token)  # type: ignore[arg-type]

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        entry = self._processing.get(message.message_id)
        if entry is not None:
            entry[0].set_attribute("tocsin.skipped", True)
        self.after_process_message(broker, message)

    def fold(self, message: MessageProxy, outcomes: Mapping[str, int]) -> None:
        """Record `message` on its batch's span, not its own (call before its after hook).

        `outcomes` counts what its alerts did (`{"duplicate": 1}`); the batch
        consumer calls `end_batch` once the batch's after hooks have run.
        """
        self._folding[message.message_id] = outcomes

    def end_batch(self) -> None:
        """End the span of this thread's batch, if `fold` put any message in it.

        A CONSUMER `process {queue}` span of its own trace (a batch has no one
        parent), from the first folded message's start, with
        `messaging.batch.message_count`, a `tocsin.unchanged.{outcome}` count per
        outcome, and a link to each message's incoming context carrying its id.
        """
        folded: list[_Folded] | None = getattr(self._batches, "folded", None)
        if not folded:
            return
        self._batches.folded = []
        counts: Counter[str] = Counter()
        links = []
        for _, message_id, parent, _, outcomes in folded:
            counts.update(outcomes)
            context = trace.get_current_span(parent).get_span_context()
            if context.is_valid:
                links.append(Link(context, {"messaging.message.id": message_id}))
        queue = folded[0][0]
        attributes: dict[str, Any] = {
            "messaging.system": "dramatiq",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": queue,
            "messaging.batch.message_count": len(folded),
        }
        for outcome, count in sorted(counts.items()):
            attributes[f"tocsin.unchanged.{outcome}"] = count
        self._tracer.start_span(
            f"process {queue}",
            context=Context(),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
            start_time=min(started for _, _, _, started, _ in folded),
        ).end()
