"""Grouping: alerts that share a route's `group_by` labels are notified together.

The timers are Alertmanager's: a new group waits `group_wait` before its first
notification, then is looked at every `group_interval`, and notifies when its
firing set changed, when alerts resolved, or when `repeat_interval` passed with
nothing new. `plan_flush` holds that decision as a pure function of the group
state and the time; `Groups` keeps the state in Redis for all replicas.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
from redis import Redis

from tocsin.common import keys
from tocsin.common.queue import WAKEUP_TOKENS_KEPT, queue_keys
from tocsin.common.queue.due import DueTimes, script_with_functions
from tocsin.notifier.message import GroupedAlert

__all__ = [
    "FlushPlan",
    "GroupFlush",
    "GroupSnapshot",
    "GroupState",
    "GroupTimers",
    "Groups",
    "Handoff",
    "digest",
    "group_key",
    "plan_flush",
    "state_hash",
]

_HERE = Path(__file__).parent / "grouping"
_ADD = script_with_functions((_HERE / "add.lua").read_text())
_READ = (_HERE / "read.lua").read_text()
_COMMIT = script_with_functions((_HERE / "commit.lua").read_text())
_encoder = msgspec.json.Encoder()
_alert_decoder = msgspec.json.Decoder(GroupedAlert)


class GroupFlush(msgspec.Struct, kw_only=True):
    """The `flush_notification_group` message: which group, for which route and receiver."""

    group_key: str
    receiver: str
    route: str
    group_labels: dict[str, str]
    # The group's pending mark holds the token of the one flush scheduled to come; a
    # flush whose token is not there is a redelivered copy and schedules nothing.
    token: str = ""


@dataclass(frozen=True)
class Handoff:
    """A message handed to the queue by a grouping step: its id and its encoded form."""

    message_id: str
    data: bytes


@dataclass(frozen=True)
class GroupTimers:
    """A route's timers as the grouping scripts take them."""

    group_wait: float
    group_interval: float

    @property
    def pending_ttl(self) -> float:
        # Outlives the flush it marks; should the flush be lost anyway, the next
        # alert of the group schedules one again once the mark lapsed.
        return self.group_wait + self.group_interval + 60


def group_key(receiver: str, route: str, group_labels: dict[str, str]) -> str:
    digest_ = hashlib.sha256(receiver.encode())
    digest_.update(b"\0" + route.encode())
    for name in sorted(group_labels):
        digest_.update(f"\0{name}={group_labels[name]}".encode())
    return digest_.hexdigest()[:24]


def state_hash(items: Sequence[GroupedAlert]) -> str:
    """Identity of a set of alert states (order-insensitive); empty for no alerts."""
    if not items:
        return ""
    parts = sorted(f"{i.alert.fingerprint}:{i.transition}" for i in items)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class GroupState:
    """What the group last notified: sequence number, firing state hash, and when."""

    seq: int = 0
    last_firing: str = ""
    last_sent_at: float = 0.0

    @property
    def notified(self) -> bool:
        return self.last_sent_at > 0


@dataclass(frozen=True)
class FlushPlan:
    """Whether to notify now, and whether it is a repeat of an unchanged state."""

    send: bool
    repeat: bool = False


def plan_flush(
    state: GroupState,
    *,
    firing_hash: str,
    resolved: int,
    now: float,
    repeat_interval: float,
) -> FlushPlan:
    """Decide a flush. Resolved alerts are only news to a group that notified before."""
    if resolved and state.notified:
        return FlushPlan(True)
    if firing_hash and firing_hash != state.last_firing:
        return FlushPlan(True)
    if firing_hash and now - state.last_sent_at >= repeat_interval:
        return FlushPlan(True, repeat=True)
    return FlushPlan(False)


def digest(
    firing: Sequence[GroupedAlert], resolved: Sequence[GroupedAlert], threshold: int, sample: int
) -> tuple[list[GroupedAlert], bool]:
    """The alerts to list and whether the list is truncated; firing ones always come first."""
    ordered = [*firing, *resolved]
    if len(ordered) <= threshold:
        return ordered, False
    return ordered[:sample], True


@dataclass(frozen=True)
class GroupSnapshot:
    """A group as a flush read it: its alerts (with their raw records) and its state."""

    alerts: dict[str, GroupedAlert]
    raw: dict[str, bytes]
    state: GroupState


class Groups:
    """The Redis-held groups: alerts per group, flush scheduling, notified state.

    Flushes are due-times on the queue of `due`: the step that marks a group's
    flush as scheduled is the step that schedules it.
    """

    def __init__(self, redis: Redis, due: DueTimes) -> None:
        self._redis = redis
        self._due = due
        self._add = redis.register_script(_ADD)
        self._read = redis.register_script(_READ)
        self._commit = redis.register_script(_COMMIT)

    def add(
        self, key: str, item: GroupedAlert, timers: GroupTimers, flush: Handoff, now: float
    ) -> tuple[bool, GroupState]:
        """Put `item` in the group unless it holds a newer transition of the same alert,
        and schedule `flush` unless a flush of the group is already scheduled.

        Returns whether `flush` was scheduled, and the group state.
        """
        scheduled, flat = self._add(
            keys=[
                keys.notify_group_alerts(key),
                keys.notify_group_pending(key),
                keys.notify_group(key),
                *self._due.keys.as_list(),
            ],
            args=[
                item.alert.fingerprint,
                _encoder.encode(item),
                repr(item.at),
                _ms(timers.pending_ttl),
                flush.message_id,
                flush.data,
                _ms(timers.group_wait),
                _ms(timers.group_interval),
                repr(now),
                WAKEUP_TOKENS_KEPT,
            ],
        )
        meta = dict(zip(flat[::2], flat[1::2], strict=True))
        return bool(scheduled), _state(meta)

    def read(self, key: str, token: str) -> GroupSnapshot:
        """Start the flush `token`: read the group, clearing its pending mark if it is ours."""
        raw_flat, meta_flat = self._read(
            keys=[
                keys.notify_group_alerts(key),
                keys.notify_group_pending(key),
                keys.notify_group(key),
            ],
            args=[token],
        )
        raw = dict(zip(raw_flat[::2], raw_flat[1::2], strict=True))
        meta = dict(zip(meta_flat[::2], meta_flat[1::2], strict=True))
        decoded = {k.decode(): _alert_decoder.decode(v) for k, v in raw.items()}
        return GroupSnapshot(decoded, {k.decode(): v for k, v in raw.items()}, _state(meta))

    def commit(
        self,
        key: str,
        *,
        send: Handoff | None,
        firing_hash: str,
        now: float,
        forget: dict[str, bytes],
        timers: GroupTimers,
        next_flush: Handoff,
    ) -> int:
        """Record the flush, hand `send` over, and schedule `next_flush` if alerts are left."""
        args: list[str | bytes | float | int] = [
            send.message_id if send else "",
            send.data if send else b"",
            firing_hash,
            repr(now),
            next_flush.message_id,
            next_flush.data,
            _ms(timers.group_interval),
            _ms(timers.pending_ttl),
            WAKEUP_TOKENS_KEPT,
        ]
        for fingerprint, raw in forget.items():
            args.extend((fingerprint, raw))
        return int(
            self._commit(
                keys=[
                    keys.notify_group(key),
                    keys.notify_group_alerts(key),
                    keys.notify_group_pending(key),
                    *self._due.keys.as_list(),
                    *queue_keys(self._due.queue).as_list(),
                    keys.notify_group_commit(next_flush.message_id),
                ],
                args=args,
            )
        )


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _state(meta: dict[bytes, bytes]) -> GroupState:
    if not meta:
        return GroupState()
    return GroupState(
        seq=int(meta.get(b"seq", b"0")),
        last_firing=meta.get(b"last_firing", b"").decode(),
        last_sent_at=float(meta.get(b"last_sent_at", b"0")),
    )
