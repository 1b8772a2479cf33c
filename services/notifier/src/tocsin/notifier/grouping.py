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

from tocsin.notifier import keys
from tocsin.notifier.message import GroupedAlert

__all__ = [
    "FlushPlan",
    "GroupFlush",
    "GroupSnapshot",
    "GroupState",
    "Groups",
    "digest",
    "group_key",
    "plan_flush",
    "state_hash",
]

_ADD = (Path(__file__).parent / "grouping" / "add.lua").read_text()
_COMMIT = (Path(__file__).parent / "grouping" / "commit.lua").read_text()
_encoder = msgspec.json.Encoder()
_alert_decoder = msgspec.json.Decoder(GroupedAlert)


class GroupFlush(msgspec.Struct, kw_only=True):
    """The `flush_notification_group` message: which group, for which route and receiver."""

    group_key: str
    receiver: str
    route: str
    group_labels: dict[str, str]


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
    """The Redis-held groups: alerts per group, flush scheduling, notified state."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._add = redis.register_script(_ADD)
        self._commit = redis.register_script(_COMMIT)

    def add(self, key: str, item: GroupedAlert, pending_ttl: float) -> tuple[bool, GroupState]:
        """Put `item` in the group unless it holds a newer transition of the same alert.

        Returns whether this call must schedule the group's flush, and the group state.
        """
        scheduled, flat = self._add(
            keys=[keys.group_alerts(key), keys.group_pending(key), keys.group(key)],
            args=[
                item.alert.fingerprint,
                _encoder.encode(item),
                repr(item.at),
                max(1, int(pending_ttl * 1000)),
            ],
        )
        meta = dict(zip(flat[::2], flat[1::2], strict=True))
        return bool(scheduled), _state(meta)

    def reserve_flush(self, key: str, pending_ttl: float) -> bool:
        """Mark a flush as scheduled unless one already is."""
        return bool(
            self._redis.set(
                keys.group_pending(key), b"1", nx=True, px=max(1, int(pending_ttl * 1000))
            )
        )

    def read(self, key: str) -> GroupSnapshot:
        """Start a flush: clear the pending mark first, so alerts added from now on reschedule."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.delete(keys.group_pending(key))
        pipe.hgetall(keys.group_alerts(key))
        pipe.hgetall(keys.group(key))
        _, raw, meta = pipe.execute()
        decoded = {k.decode(): _alert_decoder.decode(v) for k, v in raw.items()}
        return GroupSnapshot(decoded, {k.decode(): v for k, v in raw.items()}, _state(meta))

    def commit(
        self, key: str, *, sent: bool, firing_hash: str, now: float, forget: dict[str, bytes]
    ) -> int:
        args: list[str | bytes | float] = ["1" if sent else "0", firing_hash, now]
        for fingerprint, raw in forget.items():
            args.extend((fingerprint, raw))
        return int(self._commit(keys=[keys.group(key), keys.group_alerts(key)], args=args))


def _state(meta: dict[bytes, bytes]) -> GroupState:
    if not meta:
        return GroupState()
    return GroupState(
        seq=int(meta.get(b"seq", b"0")),
        last_firing=meta.get(b"last_firing", b"").decode(),
        last_sent_at=float(meta.get(b"last_sent_at", b"0")),
    )
