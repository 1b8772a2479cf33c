"""`tocsin notifier`: run the notifier worker."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import dramatiq
import httpx
import msgspec

from tocsin.common import broker as queues
from tocsin.common.config import load_settings
from tocsin.common.logging import configure_logging
from tocsin.common.models import NotificationRequest
from tocsin.common.ops import ops_app, redis_ready, serve_in_thread, shutdown_event, tune_gc
from tocsin.common.queue import Consumer, Recovery
from tocsin.common.queue.due import DueTimes
from tocsin.common.redis import sync_client
from tocsin.common.telemetry import setup_observability
from tocsin.notifier.bulkhead import Bulkheads
from tocsin.notifier.deadletters import DeadLetters
from tocsin.notifier.dispatch import (
    CRASH_POINT_VARIABLE,
    FLUSH_ACTOR,
    SEND_ACTOR,
    DeliveryPolicy,
    Notifier,
)
from tocsin.notifier.grouping import GroupFlush
from tocsin.notifier.message import Notification
from tocsin.notifier.middleware import DeliveryLimit
from tocsin.notifier.notificationlog import NotificationLog
from tocsin.notifier.routesource import RoutingSource
from tocsin.notifier.routing import RoutesError
from tocsin.notifier.settings import DEFAULT_PORT, NotifierSettings
from tocsin.notifier.templating import Templates

__all__ = ["run"]

log = logging.getLogger(__name__)
# A settled claim only has to outlive redeliveries and duplicate flushes (minutes);
# a day is ample and keeps the claim keys from piling up.
_KEEP_CLAIMS_SECONDS = 86_400


def run() -> None:
    settings = load_settings(NotifierSettings)
    configure_logging("notifier", settings.log_format, settings.log_level)
    setup_observability("notifier", settings.redis_url)
    redis = sync_client(settings.redis_url)
    dead_letters = DeadLetters(redis)
    broker = queues.build_broker(
        settings.redis_url,
        middleware=[DeliveryLimit(redis, dead_letters, settings.max_deliveries)],
        queues=(queues.NOTIFICATIONS_QUEUE,),
    )
    http = httpx.Client(limits=httpx.Limits(max_connections=100, max_keepalive_connections=20))
    try:
        routing = RoutingSource(
            settings.routes_file,
            settings.routes_poll_seconds,
            Templates(),
            http,
            settings.send_timeout_seconds,
        )
    except (RoutesError, OSError) as exc:
        # Refuse to start rather than run with no routing: the probe shows it at once.
        log.error("cannot load the routing file: %s", exc)
        sys.exit(2)
    lease = settings.claim_lease_seconds or settings.send_timeout_seconds + 5
    due = DueTimes(redis, queues.NOTIFICATIONS_QUEUE)
    bulkheads = Bulkheads(settings.receiver_concurrency)
    notifier = Notifier(
        redis=redis,
        routing=routing,
        notification_log=NotificationLog(
            redis,
            lease=lease,
            retention=settings.log_retention_seconds,
            keep_claims=_KEEP_CLAIMS_SECONDS,
        ),
        dead_letters=dead_letters,
        due=due,
        bulkheads=bulkheads,
        crash_at=os.environ.get(CRASH_POINT_VARIABLE, ""),
        policy=DeliveryPolicy(
            retry_budget=settings.retry_budget_seconds,
            min_backoff=settings.retry_min_backoff_ms / 1000,
            max_backoff=settings.retry_max_backoff_ms / 1000,
            digest_threshold=settings.digest_threshold,
            digest_sample=settings.digest_sample,
        ),
    )

    def deliver_notification(notification: dict[str, Any]) -> None:
        notifier.accept(msgspec.convert(notification, NotificationRequest))

    def flush_notification_group(flush: dict[str, Any]) -> None:
        notifier.flush(msgspec.convert(flush, GroupFlush))

    def send_notification(notification: dict[str, Any], attempt: int, since: float = 0.0) -> None:
        notifier.send(msgspec.convert(notification, Notification), attempt, since)

    # Delivery failures are handled by the pipeline itself; Dramatiq's retries only
    # cover infrastructure errors (Redis unreachable), hence the modest count.
    for name, function in (
        (queues.DELIVER_NOTIFICATION_ACTOR, deliver_notification),
        (FLUSH_ACTOR, flush_notification_group),
        (SEND_ACTOR, send_notification),
    ):
        dramatiq.actor(
            actor_name=name,
            queue_name=queues.NOTIFICATIONS_QUEUE,
            broker=broker,
            max_retries=10,
            min_backoff=500,
            max_backoff=30_000,
        )(function)

    serve_in_thread(ops_app(redis_ready(redis)), settings.host, settings.port or DEFAULT_PORT)
    consumer = Consumer(
        broker,
        [queues.NOTIFICATIONS_QUEUE],
        worker_threads=settings.send_threads,
        recovery=Recovery(timeout_ms=settings.queue_heartbeat_timeout_ms),
        name="notifications",
    )
    stop = shutdown_event()
    tune_gc()
    consumer.start()  # with the due-time mover of the notifications queue
    log.info("notifier started", extra={"routes_file": settings.routes_file})
    stop.wait()
    # In-flight sends finish within the shutdown timeout; unstarted messages go back.
    consumer.stop(timeout=settings.shutdown_timeout_seconds)
    bulkheads.close()
    broker.close()
    http.close()
