"""Hands each incident that opened or resolved to the `prediction` queue, after it is applied.

An opened incident gets its prediction; both keep the episode history the
predictions read exact and current (docs/prediction.md).

Called once per applied batch, after the apply step has stored and published
every event of the batch, so a firing event reaches sockets before any
prediction is asked for. One script call per batch (`prediction_hook/enqueue.lua`):
the message id is derived from the alert id and outcome, so a batch applied
again after a crash writes no second message, and past `MAX_PENDING` waiting
messages (no scheduler worker consuming them) requests are dropped rather than
left to grow. A failure here is logged and swallowed: predictions are advisory
and must never fail, retry or slow down the processing of alerts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis import Redis

from tocsin.common.broker import PREDICT_INCIDENT_ACTOR, PREDICTION_QUEUE
from tocsin.common.queue import WAKEUP_TOKENS_KEPT, encode_message, queue_keys
from tocsin.processor.lifecycle import Outcome

__all__ = ["MAX_PENDING", "request_predictions"]

log = logging.getLogger(__name__)

MAX_PENDING = 10_000
_ENQUEUE_LUA = (
    resources.files("tocsin.processor").joinpath("prediction_hook/enqueue.lua").read_text()
)
_QUEUE_KEYS = queue_keys(PREDICTION_QUEUE).as_list()


def request_predictions(redis: Redis, outcomes: Sequence[Outcome]) -> int:
    """Enqueue `predict_incident` for every incident `outcomes` opened or resolved.

    Returns how many requests the queue took (0 on any error).
    """
    args: list[Any] = [MAX_PENDING, WAKEUP_TOKENS_KEPT]
    for outcome in outcomes:
        if outcome.outcome in ("created", "resolved"):
            message_id = f"predict-{outcome.alert_id}-{outcome.outcome}"
            args.append(message_id)
            args.append(
                encode_message(
                    PREDICTION_QUEUE,
                    PREDICT_INCIDENT_ACTOR,
                    (outcome.alert_id,),
                    message_id=message_id,
                )
            )
    if len(args) == 2:
        return 0
    try:
        return int(redis.eval(_ENQUEUE_LUA, len(_QUEUE_KEYS), *_QUEUE_KEYS, *args))
    except Exception:
        log.warning("prediction requests not enqueued", exc_info=True)
        return 0
