"""`tocsin notifier`: run the notifier worker."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import dramatiq
import msgspec
from starlette.applications import Starlette

from tocsin.common import broker as queues
from tocsin.common.auth import TokenVerifier
from tocsin.common.config import load_settings
from tocsin.common.httplimits import HttpLimits, LimitedHttpToolsProtocol
from tocsin.common.logging import configure_logging
from tocsin.common.models import NotificationRequest
from tocsin.common.ops import ops_routes, redis_ready, serve_in_thread, shutdown_event, tune_gc
from tocsin.common.queue import Consumer, Recovery
from tocsin.common.queue.due import DueTimes
from tocsin.common.redis import sync_client
from tocsin.common.telemetry import setup_observability
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
from tocsin.notifier.previewapi import preview_routes
from tocsin.notifier.routesource import RoutingSource
from tocsin.notifier.routing import RoutesError
from tocsin.notifier.sendloop import SendLoop
from tocsin.notifier.settings import DEFAULT_PORT, NotifierSettings
from tocsin.notifier.templating import Templates

__all__ = ["run"]

log = logging.getLogger(__name__)
# A settled claim only has to outlive redeliveries and duplicate flushes (minutes);
# a day is ample and keeps the claim keys from piling up.
_KEEP_CLAIMS_SECONDS = 86_400
# Connections the ops port holds at once (probes, Prometheus, previews the gateway
# forwards); beyond, uvicorn answers 503 at once rather than queueing without bound.
OPS_CONNECTIONS = 100
# Longest a send waits on the send loop for a slot of its receiver before it is put back
# as a due-time (a slot of a healthy receiver frees within milliseconds).
_SLOT_WAIT_SECONDS = 1.0
# Sends that may wait for a slot, per slot of a receiver; more are put back at once, so
# the memory a receiver that hangs can hold is bounded.
_WAITING_PER_SLOT = 16


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
    try:
        routing = RoutingSource(
            settings.routes_file,
            settings.routes_poll_seconds,
            Templates(),
            settings.send_timeout_seconds,
        )
    except (RoutesError, OSError) as exc:
        # Refuse to start rather than run with no routing: the probe shows it at once.
        log.error("cannot load the routing file: %s", exc)
        sys.exit(2)
    lease = settings.claim_lease_seconds or settings.send_timeout_seconds + 5
    due = DueTimes(redis, queues.NOTIFICATIONS_QUEUE)
    sends = SendLoop(
        settings.receiver_concurrency,
        slot_wait=settings.send_timeout_seconds + 5,  # each send gives its own: its lease
        max_waiting=settings.receiver_concurrency * _WAITING_PER_SLOT,
    ).start()
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
        sends=sends,
        crash_at=os.environ.get(CRASH_POINT_VARIABLE, ""),
        policy=DeliveryPolicy(
            retry_budget=settings.retry_budget_seconds,
            min_backoff=settings.retry_min_backoff_ms / 1000,
            max_backoff=settings.retry_max_backoff_ms / 1000,
            digest_threshold=settings.digest_threshold,
            digest_sample=settings.digest_sample,
            claim_lease=settings.claim_lease_seconds,
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

    # The ops port also serves the template preview (the gateway forwards it): an API a
    # client's bytes reach, so it gets the same HTTP limits as the gateway's own server.
    serve_in_thread(
        Starlette(
            routes=[
                *ops_routes(redis_ready(redis)),
                *preview_routes(
                    TokenVerifier.from_settings(settings)
                    if settings.jwt_secret or settings.jwt_public_key
                    else None
                ),
            ]
        ),
        settings.host,
        settings.port or DEFAULT_PORT,
        http=LimitedHttpToolsProtocol.with_limits(HttpLimits()),
        limit_concurrency=OPS_CONNECTIONS,
    )
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
    deadline = time.monotonic() + settings.shutdown_timeout_seconds
    consumer.stop(timeout=settings.shutdown_timeout_seconds)
    if not sends.drain(max(0.0, deadline - time.monotonic())):
        log.warning("sends still open at shutdown: their guards send them again")
    sends.close()
    broker.close()
