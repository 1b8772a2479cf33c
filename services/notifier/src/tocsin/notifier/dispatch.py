"""The notification pipeline, composed in one place.

    deliver_notification   accept: route the transition, add the alert to its groups,
                           schedule each group's flush (group_wait for a new group)
    flush_notification_group
                           flush: inhibit, apply time mutes, decide (plan_flush), compose
                           the notification (a digest for big groups), hand it to send
    send_notification      send: rate-limit, render, claim it in the notification log
                           (its guard scheduled in the same step) and hand the send to
                           the send loop (`sendloop`), which sends once a slot of its
                           receiver is free and settles it: retry with backoff while
                           the retry budget lasts, dead-letter, or record it sent

All three are messages on the `notifications` queue, so any replica does any
step and a crash at any point leaves a message that is delivered again. Every
message for later (a group's flush, a retry) is a durable due-time in Redis
(`tocsin.common.queue.due`), and each step that must be followed by a message
hands it over in the same atomic step as its state change: marking a group's
flush as scheduled schedules it, and recording a flush hands its notification
over and schedules the next flush.

Over 400 lines: the three steps are one pipeline, and each hands over to the
next inside its own atomic step; they are easiest to check side by side.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
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
from tocsin.common.queue.due import DueTimes
from tocsin.notifier import metrics
from tocsin.notifier.autopause import PauseGate
from tocsin.notifier.deadletters import DeadLetters
from tocsin.notifier.grouping import (
    GroupFlush,
    Groups,
    GroupTimers,
    Handoff,
    digest,
    group_key,
    plan_flush,
    state_hash,
)
from tocsin.notifier.inhibition import FiringIndex
from tocsin.notifier.message import GroupedAlert, Notification
from tocsin.notifier.notificationlog import Guard, NotificationLog
from tocsin.notifier.ratelimit import RateLimiter
from tocsin.notifier.receivers import PermanentDeliveryError, TemporaryDeliveryError
from tocsin.notifier.routesource import RoutingSource
from tocsin.notifier.routing import alert_labels
from tocsin.notifier.sendloop import ReceiverBusyError, SendLoop

__all__ = [
    "FLUSH_ACTOR",
    "SEND_ACTOR",
    "DeliveryPolicy",
    "Notifier",
    "retry_delay",
]

log = logging.getLogger(__name__)

FLUSH_ACTOR = "flush_notification_group"
SEND_ACTOR = "send_notification"
# Retry-After above this is treated as this: a page must not wait a day on a header.
_MAX_RETRY_AFTER = 3600.0
# How long a send that found its receiver's slots all taken waits before it looks again
# (up to twice this, jittered).
_BUSY_RETRY_SECONDS = 1.0
# Longest a worker thread waits for room in a backlogged receiver's waiting room before
# it puts the send back (a receiver that hangs is never waited on this long).
_ROOM_WAIT_SECONDS = 1.0
# A claim's lease covers the send's deadline and this much for settling.
_SETTLE_MARGIN_SECONDS = 5.0
# What a send's slot wait leaves of its lease beyond its timeout, for the settle to be
# written before the lease lapses and the guard runs it again: with the default lease,
# a send waits up to 3 s for a slot.
_SLOT_WAIT_MARGIN_SECONDS = 2.0
# A send's guard is due this long after its claim's lease lapses.
_GUARD_AFTER_LEASE_SECONDS = 0.5
# Fault injection for the crash tests: the environment variable names a point of the
# pipeline where the process exits at once, as a SIGKILL there would (never set it
# outside tests).
CRASH_POINT_VARIABLE = "TOCSIN_TEST_CRASH_AT"


@dataclass(frozen=True, slots=True)
class _Send:
    """A send handed to the send loop: what its settle needs."""

    notification: Notification
    attempt: int
    since: float
    guard: str  # message id of its due-time guard
    started: float  # perf_counter at hand-over


@dataclass(frozen=True)
class DeliveryPolicy:
    """Retry, claim and digest limits."""

    # Retries go on until this long after the notification was made, then dead-letter.
    retry_budget: float = 900.0
    min_backoff: float = 0.5
    max_backoff: float = 30.0
    digest_threshold: int = 20
    digest_sample: int = 10
    # Lease of a send's claim; 0: the receiver's timeout plus 5 s (never less than that).
    claim_lease: float = 0.0


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
        due: DueTimes,
        sends: SendLoop,
        policy: DeliveryPolicy,
        clock: Callable[[], float] = time.time,
        crash_at: str = "",
    ) -> None:
        self._routing = routing
        self._due = due
        self._groups = Groups(redis, due)
        self._pauses = PauseGate(redis)
        self._firing = FiringIndex(redis)
        self._log = notification_log
        self._limiter = RateLimiter(redis)
        self._dead_letters = dead_letters
        self._sends = sends
        self._policy = policy
        self._clock = clock
        self._crash_at = crash_at

    def _crash_point(self, name: str) -> None:
        """Exit here, with no cleanup, when a crash test asked for it."""
        if self._crash_at == name:
            log.error("crash point %s reached: exiting as a crash would", name)
            os._exit(137)

    def _later(self, actor: str, args: list[Any], delay: float) -> None:
        self._due.schedule(actor, tuple(args), delay)

    def _handoff(self, actor: str, args: list[Any]) -> Handoff:
        message_id = uuid.uuid4().hex
        return Handoff(message_id, self._due.encode(actor, tuple(args), message_id))

    def _flush_handoff(self, flush: GroupFlush) -> Handoff:
        token = uuid.uuid4().hex
        message = GroupFlush(
            group_key=flush.group_key,
            receiver=flush.receiver,
            route=flush.route,
            group_labels=flush.group_labels,
            token=token,
        )
        return Handoff(token, self._due.encode(FLUSH_ACTOR, (msgspec.to_builtins(message),), token))

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
            flush = GroupFlush(
                group_key=key, receiver=route.receiver, route=route.path, group_labels=group_labels
            )
            # The alert joins its group and, unless one is coming, the group's flush is
            # scheduled in the same step: a redelivered message always finds both done.
            self._groups.add(
                key,
                item,
                GroupTimers(route.group_wait, route.group_interval),
                self._flush_handoff(flush),
                now,
            )
            self._crash_point("accept")

    # -- flush --------------------------------------------------------------------------

    def flush(self, flush: GroupFlush) -> None:
        active = self._routing.current()
        route = active.route(flush.route)
        if route is None or route.receiver != flush.receiver:
            # The routing changed under a live group: keep its receiver, use root timers.
            route = active.config.root
        receiver = active.receivers.get(flush.receiver)
        key = flush.group_key
        snapshot = self._groups.read(key, flush.token)
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
            # An extra look when the hold ends, durable like every timer; its own token
            # matches no pending mark, so it schedules nothing beyond itself.
            extra = self._flush_handoff(flush)
            self._due.schedule_encoded(extra.message_id, extra.data, gate.resume_at - now)
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
        send: Handoff | None = None
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
            send = self._handoff(SEND_ACTOR, [msgspec.to_builtins(notification), 0])
        # Resolved alerts go once told, or at once if the group never notified anyone.
        keep_resolved = send is None and state.notified and receiver is not None
        # A resolve auto-pause dropped (its page never went out) is never news: forget it.
        forgotten = [a for a in every_resolved if not keep_resolved or a not in resolved]
        forget = {a.alert.fingerprint: snapshot.raw[a.alert.fingerprint] for a in forgotten}
        self._crash_point("flush")
        # One step: the notification handed over, the flush recorded, the next one due.
        self._groups.commit(
            key,
            send=send,
            firing_hash=firing_hash if send else state.last_firing,
            now=now,
            forget=forget,
            timers=GroupTimers(route.group_wait, route.group_interval),
            next_flush=self._flush_handoff(flush),
        )

    # -- send ---------------------------------------------------------------------------

    def send(self, notification: Notification, attempt: int, since: float = 0.0) -> None:
        """Render `notification` and hand it to the send loop; `since` is when this
        delivery's first attempt ran (0: now).

        The retry budget runs from `since`, so a dead letter an operator retries gets
        a whole budget again. The step claims the send in the notification log and,
        in the same round trip, makes a guard (this same message) due just after the
        claim's lease; then it hands the send to the loop and returns. The loop sends
        once a slot of its receiver is free, within the lease, and settles it
        (`_settle`). If the process dies before the send settles, the guard runs it
        again once the lease lapses; once settled, the guard is dropped with the final
        outcome's record, or becomes the retry (a temporary failure, a busy receiver).
        A claim held by another send makes the guard the look again after its lease.
        """
        since = since or self._clock()
        active = self._routing.current()
        receiver = active.receivers.get(notification.receiver)
        args: list[Any] = [msgspec.to_builtins(notification), attempt, since]
        kind = notification.receiver_type
        if receiver is None:
            if self._claimed_here(notification, self._log.lease, args):
                self._dead_letter(
                    notification, "unknown-receiver", "receiver not configured", attempt
                )
            return
        if not self._sends.wait_for_room(notification.receiver, _ROOM_WAIT_SECONDS):
            # Nothing would take it now: look again later, before rendering it for nothing.
            metrics.RECEIVER_BUSY.labels(kind).inc()
            self._later(SEND_ACTOR, args, _BUSY_RETRY_SECONDS * (1 + random.random()))
            return
        # The lease outlives the send's deadline, and no more unless configured: after a
        # crash, the guard waits it out.
        lease = max(self._policy.claim_lease, receiver.timeout + _SETTLE_MARGIN_SECONDS)
        rate = active.rates.get(notification.receiver)
        if rate is not None:
            wait = self._limiter.acquire(notification.receiver, rate)
            if wait > 0:
                metrics.RATE_LIMITED.labels(kind).inc()
                self._later(SEND_ACTOR, args, wait)
                return
        try:
            # Rendering is CPU work: here on the worker thread, never on the send loop.
            outbound = receiver.prepare(notification)
        except Exception as exc:
            # A template that does not render, or a bug: retrying would fail the same way.
            log.exception("rendering for %s raised", notification.receiver)
            if self._claimed_here(notification, lease, args):
                metrics.FAILED.labels(kind, "permanent").inc()
                error = f"{type(exc).__name__}: {exc}"
                self._dead_letter(notification, "error", error, attempt + 1)
            return
        guard = self._handoff(SEND_ACTOR, args)
        claim = self._log.claim(
            notification,
            lease,
            Guard(self._due.keys, guard.message_id, guard.data, _GUARD_AFTER_LEASE_SECONDS),
        )
        if not claim.acquired:
            if claim.state != "busy":  # busy: its guard looks again after the holder's lease
                # Sent, or settled by another send: this one is a repeat.
                metrics.DUPLICATES_SUPPRESSED.inc()
            return
        self._crash_point("send")
        send = _Send(notification, attempt, since, guard.message_id, time.perf_counter())
        self._sends.submit(
            notification.receiver,
            kind,
            outbound,
            receiver.timeout,
            lambda result: self._settle(send, result),
            # The lease runs from the claim: the send stops waiting for a slot in time
            # to be sent and settled before it lapses, so the guard runs only for a
            # send whose process died.
            slot_wait=lease - receiver.timeout - _SLOT_WAIT_MARGIN_SECONDS,
            trace={"tocsin.notification.id": notification.id},
        )

    def _claimed_here(self, notification: Notification, lease: float, args: list[Any]) -> bool:
        """Claim on this thread (the paths that end without a send); False if not ours."""
        outcome = self._log.claim(notification, lease)
        if outcome.state == "busy":
            # Another send holds the lease; if its worker died the lease lapses and we take it.
            self._later(SEND_ACTOR, args, outcome.wait + 0.05)
        elif not outcome.acquired:
            metrics.DUPLICATES_SUPPRESSED.inc()
        return outcome.acquired

    def _settle(self, send: _Send, outcome: object) -> None:
        """Record how a send ended (on a settle thread of the send loop)."""
        notification, attempt, since = send.notification, send.attempt, send.since
        kind = notification.receiver_type
        elapsed = time.perf_counter() - send.started
        args: list[Any] = [msgspec.to_builtins(notification), attempt, since]
        if outcome is None:
            metrics.ATTEMPT_SECONDS.labels(kind).observe(elapsed)
            self._log.record(
                notification, "sent", attempt, settle="sent", drop_due=(self._due.keys, send.guard)
            )
            metrics.SENT.labels(kind).inc()
            return
        if isinstance(outcome, ReceiverBusyError):
            # Its slots are held by slower sends and it was not tried: its claim is let
            # go (the retry, the same notification, takes it again) and it looks again
            # soon; jittered, so a burst put back together does not come back together.
            metrics.RECEIVER_BUSY.labels(kind).inc()
            self._log.settle(notification, "retrying")
            self._reschedule(send.guard, args, _BUSY_RETRY_SECONDS * (1 + random.random()))
            return
        if isinstance(outcome, TemporaryDeliveryError):
            metrics.ATTEMPT_SECONDS.labels(kind).observe(elapsed)
            metrics.FAILED.labels(kind, "temporary").inc()
            # The last try is at the end of the budget (the receiver's own, if it has one).
            budgets = self._routing.current().retry_budgets
            budget = budgets.get(notification.receiver, self._policy.retry_budget)
            left = since + budget - self._clock()
            if left <= 0:
                self._dead_letter(
                    notification, "retries-exhausted", str(outcome), attempt + 1, send.guard
                )
                return
            delay = min(left, retry_delay(attempt, self._policy, outcome.retry_after))
            # Recorded before the retry is due, so the log keeps the attempts in order.
            self._log.record(
                notification, "failed-temporary", attempt, str(outcome), settle="retrying"
            )
            self._reschedule(send.guard, [args[0], attempt + 1, since], delay)
            log.warning(
                "send to %s failed (attempt %d), retrying in %.2fs: %s",
                notification.receiver,
                attempt + 1,
                delay,
                outcome,
            )
            return
        metrics.ATTEMPT_SECONDS.labels(kind).observe(elapsed)
        metrics.FAILED.labels(kind, "permanent").inc()
        if isinstance(outcome, PermanentDeliveryError):
            reason, error = "permanent-failure", str(outcome)
        else:
            # A bug: retrying would fail the same way.
            failure = outcome if isinstance(outcome, BaseException) else None
            log.error("send to %s raised", notification.receiver, exc_info=failure)
            reason, error = "error", f"{type(outcome).__name__}: {outcome}"
        self._dead_letter(notification, reason, error, attempt + 1, send.guard)

    def _reschedule(self, guard: str, args: list[Any], delay: float) -> None:
        """Make the send's guard the retry: same message id, so it replaces, not adds."""
        self._due.schedule(SEND_ACTOR, tuple(args), delay, message_id=guard)

    def _dead_letter(
        self,
        notification: Notification,
        reason: str,
        error: str,
        attempts: int,
        guard: str | None = None,
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
            drop_due=None if guard is None else (self._due.keys, guard),
        )
        log.error(
            "notification %s to %s dead-lettered (%s): %s",
            notification.id,
            notification.receiver,
            reason,
            error,
        )
