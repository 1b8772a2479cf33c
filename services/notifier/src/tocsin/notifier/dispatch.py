"""The notification pipeline, composed in one place.

    deliver_notification   accept: route the transition, add the alert to its groups,
                           schedule each group's flush (group_wait for a new group)
    flush_notification_group
                           flush: inhibit, apply time mutes, decide (plan_flush), compose
                           the notification (a digest for big groups), hand it to send
    send_notification      send: claim in the notification log, rate-limit, call the
                           receiver, then retry with backoff, dead-letter, or settle

All three are messages on the `notifications` queue, so any replica does any
step and a crash at any point leaves a message that is delivered again.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
from redis import Redis

from tocsin.common.models import NotificationRequest
from tocsin.common.telemetry import client_span
from tocsin.notifier import metrics
from tocsin.notifier.autopause import PauseGate
from tocsin.notifier.deadletters import DeadLetters
from tocsin.notifier.grouping import (
    GroupFlush,
    Groups,
    digest,
    group_key,
    plan_flush,
    state_hash,
)
from tocsin.notifier.inhibition import FiringIndex
from tocsin.notifier.message import GroupedAlert, Notification
from tocsin.notifier.notificationlog import NotificationLog
from tocsin.notifier.ratelimit import RateLimiter
from tocsin.notifier.receivers import PermanentDeliveryError, TemporaryDeliveryError
from tocsin.notifier.routesource import RoutingSource
from tocsin.notifier.routing import alert_labels

__all__ = [
    "FLUSH_ACTOR",
    "SEND_ACTOR",
    "DeliveryPolicy",
    "Enqueue",
    "Notifier",
    "retry_delay",
]

log = logging.getLogger(__name__)

FLUSH_ACTOR = "flush_notification_group"
SEND_ACTOR = "send_notification"
# Retry-After above this is treated as this: a page must not wait a day on a header.
_MAX_RETRY_AFTER = 3600.0

Enqueue = Callable[[str, list[Any], float], None]


@dataclass(frozen=True)
class DeliveryPolicy:
    """Retry and digest limits."""

    max_attempts: int = 8
    min_backoff: float = 0.5
    max_backoff: float = 300.0
    digest_threshold: int = 20
    digest_sample: int = 10


def retry_delay(
    attempt: int,
    policy: DeliveryPolicy,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Capped exponential backoff with jitter (half fixed, half random); Retry-After wins."""
    base = min(policy.max_backoff, math.ldexp(policy.min_backoff, min(attempt, 60)))
    delay = base / 2 + (rng or random).uniform(0, base / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, _MAX_RETRY_AFTER))
    return delay


class Notifier:
    """Accepts transitions, flushes groups and sends notifications."""

    def __init__(
        self,
        *,
        redis: Redis,
        routing: RoutingSource,
        notification_log: NotificationLog,
        dead_letters: DeadLetters,
        enqueue: Enqueue,
        policy: DeliveryPolicy,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._routing = routing
        self._groups = Groups(redis)
        self._pauses = PauseGate(redis)
        self._firing = FiringIndex(redis)
        self._log = notification_log
        self._limiter = RateLimiter(redis)
        self._dead_letters = dead_letters
        self._enqueue = enqueue
        self._policy = policy
        self._clock = clock

    # -- accept -------------------------------------------------------------------------

    def accept(self, request: NotificationRequest) -> None:
        active = self._routing.current()
        alert = request.alert
        labels = alert_labels(alert)
        status: Literal["firing", "resolved"] = (
            "resolved" if request.transition == "resolved" else "firing"
        )
        item = GroupedAlert(
            transition=request.transition, status=status, alert=alert, at=request.at
        )
        if not self._firing.record(item):
            # A newer transition of this alert was taken first (worker threads race).
            return
        if not active.configured:
            log.warning("no routing file configured: notification %s not routed", request.id)
            return
        now = self._clock()
        for route in active.config.routes_for(labels):
            group_labels = route.group_labels(labels)
            key = group_key(route.receiver, route.path, group_labels)
            ttl = route.group_wait + route.group_interval + 60
            scheduled, state = self._groups.add(key, item, ttl)
            if not scheduled:
                continue
            if state.notified:
                delay = max(0.0, state.last_sent_at + route.group_interval - now)
            else:
                delay = route.group_wait
            flush = GroupFlush(
                group_key=key, receiver=route.receiver, route=route.path, group_labels=group_labels
            )
            self._enqueue(FLUSH_ACTOR, [msgspec.to_builtins(flush)], delay)

    # -- flush --------------------------------------------------------------------------

    def flush(self, flush: GroupFlush) -> None:
        active = self._routing.current()
        route = active.route(flush.route)
        if route is None or route.receiver != flush.receiver:
            # The routing changed under a live group: keep its receiver, use root timers.
            route = active.config.root
        receiver = active.receivers.get(flush.receiver)
        key = flush.group_key
        snapshot = self._groups.read(key)
        now = self._clock()
        ordered = sorted(snapshot.alerts.values(), key=lambda a: (a.at, a.alert.fingerprint))
        firing = [a for a in ordered if a.status == "firing"]
        every_resolved = [a for a in ordered if a.status == "resolved"]
        muted = self._firing.muted(firing, active.config.inhibit_rules)
        if muted:
            metrics.INHIBITED.inc(len(muted))
        # Auto-pause: held pages leave `visible`, resolves of never-paged alerts leave `resolved`.
        gate = self._pauses.apply(
            route.pause_if_transient,
            flush.receiver,
            [a for a in firing if a.alert.fingerprint not in muted],
            every_resolved,
            now,
        )
        visible, resolved = gate.firing, gate.resolved
        if gate.resume_at is not None:
            self._enqueue(FLUSH_ACTOR, [msgspec.to_builtins(flush)], gate.resume_at - now)
        firing_hash = state_hash(visible)
        state = snapshot.state
        plan = plan_flush(
            state,
            firing_hash=firing_hash,
            resolved=len(resolved),
            now=now,
            repeat_interval=route.repeat_interval,
        )
        time_muted = active.config.muted_by_time(route, datetime.fromtimestamp(now, UTC))
        sent = False
        if receiver is None:
            log.error("receiver %r is no longer configured; dropping group %s", flush.receiver, key)
            # Forget the whole group: with no receiver its alerts can never be notified.
            every_resolved, firing = ordered, []
        elif plan.send and not time_muted and (visible or resolved):
            listed, truncated = digest(
                visible, resolved, self._policy.digest_threshold, self._policy.digest_sample
            )
            everyone = [*visible, *resolved]
            whole = hashlib.sha256(f"{firing_hash}/{state_hash(resolved)}".encode())
            notification = Notification(
                id=uuid.uuid4().hex,
                receiver=flush.receiver,
                receiver_type=receiver.kind,
                group_key=key,
                group_labels=flush.group_labels,
                state_hash=whole.hexdigest()[:16],
                status="firing" if visible else "resolved",
                alerts=listed,
                firing_count=len(visible),
                resolved_count=len(resolved),
                truncated=truncated,
                created_at=now,
                enqueued_at=max(a.at for a in everyone),
                repeat=plan.repeat,
                seq=state.seq,
                alert_ids=[a.alert.id for a in everyone],
                paused=gate.paused,
            )
            # Hand off before recording: a crash in between repeats the hand-off, and the
            # claim makes the repeat a no-op; the other order could lose the notification.
            self._enqueue(SEND_ACTOR, [msgspec.to_builtins(notification), 0], 0.0)
            sent = True
        # Resolved alerts go once told, or at once if the group never notified anyone.
        keep_resolved = not sent and state.notified and receiver is not None
        # A resolve auto-pause dropped (its page never went out) is never news: forget it.
        forgotten = [a for a in every_resolved if not keep_resolved or a not in resolved]
        forget = {a.alert.fingerprint: snapshot.raw[a.alert.fingerprint] for a in forgotten}
        self._groups.commit(
            key,
            sent=sent,
            firing_hash=firing_hash if sent else state.last_firing,
            now=now,
            forget=forget,
        )
        if (firing or keep_resolved) and self._groups.reserve_flush(key, route.group_interval + 60):
            self._enqueue(FLUSH_ACTOR, [msgspec.to_builtins(flush)], route.group_interval)

    # -- send ---------------------------------------------------------------------------

    def send(self, notification: Notification, attempt: int) -> None:
        outcome = self._log.claim(notification)
        args: list[Any] = [msgspec.to_builtins(notification), attempt]
        if outcome.state == "busy":
            # Another send holds the lease; if its worker died the lease lapses and we take it.
            self._enqueue(SEND_ACTOR, args, outcome.wait + 0.05)
            return
        if not outcome.acquired:
            metrics.DUPLICATES_SUPPRESSED.inc()
            return
        active = self._routing.current()
        kind = notification.receiver_type
        receiver = active.receivers.get(notification.receiver)
        if receiver is None:
            self._dead_letter(notification, "unknown-receiver", "receiver not configured", attempt)
            return
        rate = active.rates.get(notification.receiver)
        if rate is not None:
            wait = self._limiter.acquire(notification.receiver, rate)
            if wait > 0:
                metrics.RATE_LIMITED.labels(kind).inc()
                self._log.settle(notification, "retrying")
                self._enqueue(SEND_ACTOR, args, wait)
                return
        started = time.perf_counter()
        try:
            with client_span(
                f"send {kind}",
                {
                    "tocsin.receiver": notification.receiver,
                    "tocsin.notification.id": notification.id,
                },
            ):
                receiver.notify(notification)
        except TemporaryDeliveryError as exc:
            metrics.ATTEMPT_SECONDS.labels(kind).observe(time.perf_counter() - started)
            metrics.FAILED.labels(kind, "temporary").inc()
            if attempt + 1 >= self._policy.max_attempts:
                self._dead_letter(notification, "retries-exhausted", str(exc), attempt + 1)
                return
            # Recorded before the retry exists, so the log keeps the attempts in order.
            self._log.record(notification, "failed-temporary", attempt, str(exc), settle="retrying")
            delay = retry_delay(attempt, self._policy, exc.retry_after)
            self._enqueue(SEND_ACTOR, [args[0], attempt + 1], delay)
            log.warning(
                "send to %s failed (attempt %d), retrying in %.2fs: %s",
                notification.receiver,
                attempt + 1,
                delay,
                exc,
            )
            return
        except PermanentDeliveryError as exc:
            metrics.ATTEMPT_SECONDS.labels(kind).observe(time.perf_counter() - started)
            metrics.FAILED.labels(kind, "permanent").inc()
            self._dead_letter(notification, "permanent-failure", str(exc), attempt + 1)
            return
        except Exception as exc:
            # A template that does not render, or a bug: retrying would fail the same way.
            log.exception("send to %s raised", notification.receiver)
            metrics.FAILED.labels(kind, "permanent").inc()
            self._dead_letter(notification, "error", f"{type(exc).__name__}: {exc}", attempt + 1)
            return
        metrics.ATTEMPT_SECONDS.labels(kind).observe(time.perf_counter() - started)
        self._log.record(notification, "sent", attempt, settle="sent")
        metrics.SENT.labels(kind).inc()

    def _dead_letter(
        self, notification: Notification, reason: str, error: str, attempts: int
    ) -> None:
        self._dead_letters.add(
            SEND_ACTOR,
            [msgspec.to_builtins(notification), 0],
            reason,
            error=error,
            receiver=notification.receiver,
            attempts=attempts,
            letter_id=notification.id,
        )
        metrics.DEAD_LETTERED.labels(notification.receiver_type, reason).inc()
        self._log.record(
            notification,
            f"dead-lettered:{reason}",
            attempts - 1,
            error,
            settle="failed" if reason == "permanent-failure" else "dead",
        )
        log.error(
            "notification %s to %s dead-lettered (%s): %s",
            notification.id,
            notification.receiver,
            reason,
            error,
        )
