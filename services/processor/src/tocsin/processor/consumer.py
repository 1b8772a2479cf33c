"""The alerts queue applied in batches, on the queue layer's consumer.

Dramatiq's worker handles one message at a time: a fetch, the lifecycle
pipeline and an ack are each a round trip. The queue layer's `Consumer` takes
up to `batch_size` messages per fetch and runs the broker's middleware around
each; `AlertBatches` is what it hands the batch to: runs of alert messages are
applied in one lifecycle pipeline, actions one by one, and each message's
outcome goes back to the middleware (retries by the actors' options, metrics,
tracing). One path, tracing on or off: with tracing on, each message's
CONSUMER span is its traceparent in the events it publishes. A message that
published no event and queued no notification (a duplicate inside the update
throttle, a replay) is reported `unchanged`: nothing later carries its trace, so
it is counted on its batch's span instead of exporting a span of its own
(docs/tracing.md).

Every step is idempotent (the lifecycle script records applied message ids), so
a message is acked only after it is applied: a crash in between redelivers it
and applying it again changes nothing.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence

from tocsin.common.broker import APPLY_ACTION_ACTOR, PROCESS_ALERTS_ACTOR
from tocsin.common.queue import Delivery
from tocsin.processor.lifecycle import Outcome
from tocsin.processor.processing import AlertProcessor

__all__ = ["AlertBatches"]

log = logging.getLogger(__name__)


class AlertBatches:
    """The processor's `BatchHandler`: a batch of alerts-queue messages, applied in order."""

    def __init__(self, processor: AlertProcessor) -> None:
        self._processor = processor

    def __call__(self, deliveries: Sequence[Delivery]) -> list[BaseException | None]:
        errors: list[BaseException | None] = [None] * len(deliveries)
        run: list[int] = []
        for at in [*range(len(deliveries)), None]:
            if at is not None and deliveries[at].message.actor_name == PROCESS_ALERTS_ACTOR:
                run.append(at)
                continue
            if run:
                self._apply_run(deliveries, run, errors)
                run = []
            if at is not None:
                errors[at] = self._apply_one(deliveries[at])
        return errors

    def _apply_run(
        self, deliveries: Sequence[Delivery], run: list[int], errors: list[BaseException | None]
    ) -> None:
        try:
            outcomes = self._processor.process_alert_messages(
                [(deliveries[at].message.args[0], deliveries[at].traceparent) for at in run]
            )
            for at, done in zip(run, outcomes, strict=True):
                deliveries[at].unchanged = _unchanged(done)
        except Exception as exc:
            if len(run) == 1:
                errors[run[0]] = exc
                return
            # One bad message must not hold back the others: apply them one by one.
            for at in run:
                errors[at] = self._apply_one(deliveries[at])

    def _apply_one(self, delivery: Delivery) -> BaseException | None:
        message = delivery.message
        try:
            if message.actor_name == PROCESS_ALERTS_ACTOR:
                outcomes = self._processor.process_alerts(message.args[0], delivery.traceparent)
                delivery.unchanged = _unchanged(outcomes)
            elif message.actor_name == APPLY_ACTION_ACTOR:
                outcome = self._processor.apply_action(message.args[0], delivery.traceparent)
                delivery.unchanged = _unchanged([outcome])
            else:
                raise LookupError(f"no actor {message.actor_name!r} on the alerts queue")
        except Exception as exc:
            return exc
        return None


def _unchanged(outcomes: Sequence[Outcome]) -> Mapping[str, int] | None:
    """A message's outcomes counted by kind when none published an event or queued a
    notification (nothing later carries its trace), else None."""
    if any(outcome.published or outcome.notified for outcome in outcomes):
        return None
    if len(outcomes) == 1:
        return {outcomes[0].outcome: 1}
    return Counter(outcome.outcome for outcome in outcomes)
