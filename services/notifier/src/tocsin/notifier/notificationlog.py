"""The notification log shared by every notifier replica: claims, and the record of attempts.

A send is claimed first with an atomic set-if-absent on receiver + group key +
group sequence + state hash. The claim is a lease while the send runs, so a
replica that dies mid-send leaves a claim that lapses and the redelivered
message sends it; a second replica, or a duplicate flush, finds the claim
and sends nothing. A send handed over to the send loop outlives its queue
message, so its claim schedules a guard in the same round trip: the message
that runs the send again if nothing settles it before the lease lapses.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec
from redis import Redis

from tocsin.common import keys
from tocsin.common.queue import WAKEUP_TOKENS_KEPT
from tocsin.common.queue.due import DueKeys, script_with_functions
from tocsin.notifier.message import Notification

__all__ = ["Attempt", "ClaimOutcome", "Guard", "NotificationLog"]

_CLAIM = script_with_functions((Path(__file__).parent / "notificationlog/claim.lua").read_text())
_encoder = msgspec.json.Encoder()

Final = Literal["sent", "retrying", "failed", "dead"]


@dataclass(frozen=True)
class ClaimOutcome:
    """What a claim attempt found: `acquired`, `busy` (retry after `wait`) or a final state."""

    state: str
    wait: float = 0.0

    @property
    def acquired(self) -> bool:
        return self.state == "acquired"


@dataclass(frozen=True, slots=True)
class Guard:
    """A send's guard: a message of the send queue, due `after` s past the lease that
    holds the notification (this send's, or the other send's when busy)."""

    due: DueKeys
    message_id: str
    data: bytes
    after: float


class Attempt(msgspec.Struct, kw_only=True):
    """One record of the log: what happened to a notification at one attempt."""

    notification_id: str
    receiver: str
    receiver_type: str
    group_key: str
    status: str
    outcome: str
    attempt: int
    at: float
    error: str = ""


def claim_key(notification: Notification) -> str:
    return keys.notify_claim(
        notification.receiver, notification.group_key, notification.seq, notification.state_hash
    )


class NotificationLog:
    """Claims sends and records their outcomes per alert."""

    def __init__(self, redis: Redis, *, lease: float, retention: int, keep_claims: int) -> None:
        self._redis = redis
        self._claim = redis.register_script(_CLAIM)
        self._lease_ms = max(1, int(lease * 1000))
        self._retention = retention
        self._keep_claims_ms = keep_claims * 1000

    @property
    def lease(self) -> float:
        """The configured lease of an in-progress claim, in seconds."""
        return self._lease_ms / 1000

    def claim(
        self, notification: Notification, lease: float | None = None, guard: Guard | None = None
    ) -> ClaimOutcome:
        """Claim `notification` for a send, leased for `lease` s (default: the configured).

        With a `guard`, it is scheduled in the same step unless the send is redundant
        (acquired: due after this lease; busy: after the holder's).
        """
        lease_ms = self._lease_ms if lease is None else max(1, int(lease * 1000))
        keys_: list[str] = [claim_key(notification)]
        # The call's own id, so that the script's second run of this call, when redis-py
        # sends it again after a reply timed out, answers "acquired" as the first did.
        call = guard.message_id if guard is not None else uuid.uuid4().hex
        args: list[str | int | bytes] = [notification.id, lease_ms, call]
        if guard is not None:
            keys_ += guard.due.as_list()
            args += [guard.message_id, guard.data, int(guard.after * 1000), WAKEUP_TOKENS_KEPT]
        state, pttl = self._claim(keys=keys_, args=args)
        state = state.decode() if isinstance(state, bytes) else str(state)
        return ClaimOutcome(state, max(0, int(pttl)) / 1000)

    def settle(self, notification: Notification, state: Final) -> None:
        """Replace the in-progress claim with its outcome, kept long enough to stop repeats."""
        self._redis.set(
            claim_key(notification), f"{state}|{notification.id}", px=self._keep_claims_ms
        )

    def record(
        self,
        notification: Notification,
        outcome: str,
        attempt: int,
        error: str = "",
        *,
        settle: Final | None = None,
        drop_due: tuple[DueKeys, str] | None = None,
    ) -> None:
        """Log an attempt against every alert of the notification, settling its claim too.

        `drop_due` (a queue's due keys and a message id) takes that due message out in
        the same round trip: the send's guard, once the send has a final outcome.
        """
        entry = _encoder.encode(
            Attempt(
                notification_id=notification.id,
                receiver=notification.receiver,
                receiver_type=notification.receiver_type,
                group_key=notification.group_key,
                status=notification.status,
                outcome=outcome,
                attempt=attempt,
                at=time.time(),
                error=error[:500],
            )
        )
        pipe = self._redis.pipeline(transaction=False)
        if settle is not None:
            pipe.set(
                claim_key(notification), f"{settle}|{notification.id}", px=self._keep_claims_ms
            )
        for alert_id in notification.alert_ids:
            pipe.lpush(keys.notification_log(alert_id), entry)
            pipe.ltrim(keys.notification_log(alert_id), 0, 99)
            pipe.expire(keys.notification_log(alert_id), self._retention)
        if drop_due is not None:
            due, message_id = drop_due
            pipe.zrem(due.entries, message_id)
            pipe.hdel(due.messages, message_id)
        pipe.execute()

    def attempts(self, alert_id: str) -> list[dict[str, Any]]:
        """The log of one alert, newest first (what `GET /v1/alerts/{id}` shows)."""
        raw = self._redis.lrange(keys.notification_log(alert_id), 0, -1)
        return [msgspec.json.decode(item) for item in raw]
