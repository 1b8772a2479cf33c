"""The Dramatiq broker with Tocsin's middleware, and the queue contract.

Services never import each other: they agree on queue and actor names here.
Ingest enqueues `process_alerts` on `alerts`; the processor declares the actor.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware, Retries

from tocsin.common import keys
from tocsin.common.metrics import JobMetrics
from tocsin.common.queue import QueueWakeup
from tocsin.common.queue.broker import DueTimeBroker
from tocsin.common.redis import sync_client
from tocsin.common.telemetry import TracingMiddleware, tracing_enabled

__all__ = [
    "ALERTS_QUEUE",
    "APPLY_ACTION_ACTOR",
    "DELIVER_NOTIFICATION_ACTOR",
    "NOTIFICATIONS_QUEUE",
    "PREDICTION_QUEUE",
    "PREDICT_INCIDENT_ACTOR",
    "PROCESS_ALERTS_ACTOR",
    "QueueWakeup",
    "build_broker",
    "build_message",
]

ALERTS_QUEUE = "alerts"
NOTIFICATIONS_QUEUE = "notifications"
# process_alerts(batch: list[QueuedAlert as builtins]) -- ingest -> processor
PROCESS_ALERTS_ACTOR = "process_alerts"
# apply_action(action: AlertAction as builtins) -- gateway API and ingest (PagerDuty
# acknowledge) -> processor, on the alerts queue so it is ordered with alerts.
APPLY_ACTION_ACTOR = "apply_action"
# deliver_notification(notification: NotificationRequest as builtins) -- processor -> notifier
DELIVER_NOTIFICATION_ACTOR = "deliver_notification"
# predict_incident(alert_id: str) -- processor, after an incident opened -> the
# scheduler's worker pool (docs/prediction.md); the scheduled prediction jobs
# share the queue.
PREDICTION_QUEUE = "prediction"
PREDICT_INCIDENT_ACTOR = "predict_incident"


def build_broker(
    redis_url: str,
    *,
    middleware: Iterable[Middleware] = (),
    queues: Iterable[str] = (ALERTS_QUEUE, NOTIFICATIONS_QUEUE),
) -> RedisBroker:
    """A Redis broker under the `tocsin:dramatiq` namespace with `queues` declared.

    Its delayed messages (retry backoff) are durable due-times (`DueTimeBroker`).
    """
    broker = DueTimeBroker(client=sync_client(redis_url), namespace=keys.DRAMATIQ_NAMESPACE)
    # Both sit before Retries: "after" hooks run in reverse order, so they see
    # its retry/dead-letter verdict. Tracing is only added when it is on.
    broker.add_middleware(JobMetrics(), before=Retries)
    broker.add_middleware(QueueWakeup())
    if tracing_enabled():
        broker.add_middleware(TracingMiddleware(), before=Retries)
    for extra in middleware:
        broker.add_middleware(extra)
    for queue in queues:
        broker.declare_queue(queue)
    return broker


def build_message(
    queue: str, actor: str, args: tuple[Any, ...], options: dict[str, Any] | None = None
) -> dramatiq.Message[Any]:
    """A message for an actor that this process does not declare."""
    return dramatiq.Message(
        queue_name=queue, actor_name=actor, args=args, kwargs={}, options=options or {}
    )
