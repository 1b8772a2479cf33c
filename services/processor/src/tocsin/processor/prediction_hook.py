"""Hands each incident that opened or resolved to the `prediction` queue, after it is applied.

An opened incident gets its prediction; both keep the episode history the
predictions read exact and current (docs/prediction.md).

Called once per applied batch, after the apply step has stored and published
every event of the batch, so a firing event reaches sockets before any
prediction is asked for. One pipeline per batch; the message id is derived
from the alert id, so a batch applied again after a crash writes the same
message. A failure here is logged and swallowed: predictions are advisory and
must never fail, retry or slow down the processing of alerts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from redis import Redis

from tocsin.common.broker import PREDICT_INCIDENT_ACTOR, PREDICTION_QUEUE
from tocsin.common.queue import encode_message, queue_keys
from tocsin.processor.lifecycle import Outcome

__all__ = ["request_predictions"]

log = logging.getLogger(__name__)

_QUEUE = queue_keys(PREDICTION_QUEUE)


def request_predictions(redis: Redis, outcomes: Sequence[Outcome]) -> int:
    """Enqueue `predict_incident` for every incident `outcomes` opened or resolved; how many."""
    changed = [
        (outcome.alert_id, outcome.outcome)
        for outcome in outcomes
        if outcome.outcome in ("created", "resolved")
    ]
    if not changed:
        return 0
    try:
        pipe = redis.pipeline(transaction=False)
        for alert_id, kind in changed:
            message_id = f"predict-{alert_id}-{kind}"
            body = encode_message(
                PREDICTION_QUEUE, PREDICT_INCIDENT_ACTOR, (alert_id,), message_id=message_id
            )
            pipe.hset(_QUEUE.messages, message_id, body)
            pipe.rpush(_QUEUE.pending, message_id)
        pipe.execute()
    except Exception:
        log.warning("prediction requests not enqueued", exc_info=True)
        return 0
    return len(changed)
