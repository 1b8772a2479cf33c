"""The alert lifecycle as pure functions: (record, fingerprint state, message, now) -> decision.

This module is the one statement of the rules (docs/lifecycle.md says them in
prose); it does no I/O. `tocsin.processor.lifecycle` reads what a decision
needs from Redis, calls these functions, and has a small Lua step write the
decision atomically, guarded by the fingerprint's version.

The rules, per message:

- **Order**: a message never moves an alert backwards. Producer time decides
  where the format carries it (`starts_at`, `ends_at`), else `received_at`. A
  firing message of an incident already resolved (same `starts_at`, or older
  than the resolution) is recorded on the timeline as `stale` and changes
  nothing else; a resolve older than the open incident likewise.
- **Incidents, not messages**: a re-send of an open incident is a duplicate
  (`count` + 1) however late it comes when it carries `starts_at`; without
  `starts_at`, a repeat after the dedup window is a new firing.
- **Resolution, per path**: a message resolves; a deadline (`due`) resolves
  too, when the path has one: `ends_at`, else the resolve timeout (native and
  `/api/v2/alerts`), the optional Alertmanager fallback timeout (webhook, off
  by default: Alertmanager owns resolution), never for PagerDuty. A resolve is
  not an occurrence (`count` unchanged); a PagerDuty resolve of an unknown
  dedup key creates nothing.
- **Streaming**: `alert.updated` events of duplicates are throttled to one per
  `update_interval`; a merged one is owed (`Decision.merged`), and
  `decide_trailing_update` publishes it later.

Over 400 lines: it is the whole rule set, kept in one module so that it reads as
one statement beside docs/lifecycle.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import msgspec

from tocsin.common.models import AlertAction, QueuedAlert, StoredAlert, rfc3339

__all__ = [
    "Decision",
    "FingerprintState",
    "Policy",
    "TimelineEntry",
    "decide_action",
    "decide_alert",
    "decide_expiry",
    "decide_trailing_update",
    "fingerprint_rule",
    "to_stored",
]

RANK = {"info": 1, "warning": 2, "error": 3, "critical": 4}
AUTO_RESOLVER = "auto-resolve"


@dataclass(frozen=True, slots=True)
class Policy:
    """The settings the rules read."""

    window: float = 300.0
    flap_count: int = 4
    flap_window: float = 600.0
    # Native and /api/v2/alerts alerts without ends_at resolve this long after
    # their last message (0: never).
    resolve_timeout: float = 300.0
    # Alertmanager webhook alerts: 0 (Alertmanager owns resolution), or a
    # fallback for receivers with `send_resolved: false`.
    alertmanager_resolve_timeout: float = 0.0
    update_interval: float = 1.0


@dataclass(slots=True)
class FingerprintState:
    """What the lifecycle keeps per fingerprint beside the record (`tocsin:dedup:{fp}`)."""

    alert_id: str = ""
    flips: tuple[float, ...] = ()
    flapping: bool = False
    published: float = 0.0  # when an `alert.updated` of a duplicate was last published
    version: str = ""  # the token of the last write: the optimistic-concurrency check
    starts: float = 0.0  # producer start of the current incident (0: not given)
    resolved: float = 0.0  # when the current alert was resolved (producer time if given)
    due: float = 0.0  # when the current alert resolves by itself (0: never)

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes]) -> FingerprintState:
        def number(name: bytes) -> float:
            value = raw.get(name)
            return float(value) if value else 0.0

        flips = raw.get(b"flips", b"").split()
        return cls(
            alert_id=raw.get(b"id", b"").decode(),
            flips=tuple(float(flip) for flip in flips),
            flapping=raw.get(b"flapping") == b"1",
            published=number(b"pub"),
            version=raw.get(b"v", b"").decode(),
            starts=number(b"starts"),
            resolved=number(b"resolved"),
            due=number(b"due"),
        )

    # The hash's field names, in the order of `to_values`.
    FIELDS = ("id", "flips", "flapping", "pub", "v", "starts", "resolved", "due")

    def to_values(self) -> list[str]:
        """The values of `FIELDS`, as the apply step writes them."""
        return [
            self.alert_id,
            " ".join(repr(flip) for flip in self.flips),
            "1" if self.flapping else "0",
            repr(self.published),
            self.version,
            repr(self.starts),
            repr(self.resolved),
            repr(self.due),
        ]

    def copy(self) -> FingerprintState:
        return FingerprintState(
            self.alert_id,
            self.flips,
            self.flapping,
            self.published,
            self.version,
            self.starts,
            self.resolved,
            self.due,
        )


class TimelineEntry(msgspec.Struct):
    """One transition on an alert's timeline; `seq` is its position (1-based)."""

    seq: int
    kind: str
    at: str
    by: str
    comment: str


@dataclass(slots=True)
class Decision:
    """What one message, action, deadline or trailing update does.

    `alert` is the record to write (None: none) and `before` the record as it was
    read (None: a new record), so the apply step can move it between indexes.
    `state` is the fingerprint state to write (None: nothing is written at all).
    """

    outcome: str
    alert_id: str = ""
    alert: StoredAlert | None = None
    before: StoredAlert | None = None
    state: FingerprintState | None = None
    timeline: list[TimelineEntry] = field(default_factory=list)
    event: str = ""  # the event kind published with the final record ("" none)
    notifications: list[tuple[str, int]] = field(default_factory=list)  # (transition, seq)
    transition: bool = False  # a reader-visible change: indexes and cache tag move
    merged: bool = False  # a throttled `alert.updated` is owed (see decide_trailing_update)

    @property
    def notified(self) -> tuple[str, ...]:
        return tuple(kind for kind, _ in self.notifications)


def _ts(moment: datetime | None) -> float:
    return moment.timestamp() if moment is not None else 0.0


def fingerprint_rule(queued: QueuedAlert) -> str:
    """Which rule produced the fingerprint: the producer's key, or the label set."""
    if queued.alert.dedup_key and queued.fingerprint == queued.alert.dedup_key:
        return "dedup_key"
    return "labels"


def to_stored(queued: QueuedAlert) -> StoredAlert:
    """The record a first message of an incident creates."""
    alert = queued.alert
    seen = rfc3339(queued.received_at)
    return StoredAlert(
        id=queued.id,
        fingerprint=queued.fingerprint,
        name=alert.name,
        severity=alert.severity,
        status=alert.status,
        source=alert.source,
        service=alert.service,
        summary=alert.summary,
        labels=alert.labels,
        annotations=alert.annotations,
        producer=queued.producer,
        count=1 if alert.status == "firing" else 0,
        first_seen=seen,
        last_seen=seen,
        starts_at=rfc3339(alert.starts_at.timestamp()) if alert.starts_at else None,
        ends_at=rfc3339(alert.ends_at.timestamp()) if alert.ends_at else None,
        generator_url=alert.generator_url,
        fingerprint_rule=fingerprint_rule(queued),
        first_seen_ts=queued.received_at,
        last_seen_ts=queued.received_at,
    )


def due_of(queued: QueuedAlert, policy: Policy) -> float:
    """When a firing message's alert resolves by itself if nothing refreshes it (0: never)."""
    if queued.path == "pagerduty":
        return 0.0
    if queued.path == "alertmanager":
        timeout = policy.alertmanager_resolve_timeout
        return queued.received_at + timeout if timeout > 0 else 0.0
    if queued.alert.ends_at is not None:
        return queued.alert.ends_at.timestamp()
    timeout = policy.resolve_timeout
    return queued.received_at + timeout if timeout > 0 else 0.0


class _Change:
    """A record and its fingerprint state being changed by one decision."""

    def __init__(
        self, record: StoredAlert, state: FingerprintState, now: float, policy: Policy
    ) -> None:
        self.record = record
        self.state = state
        self.now = now
        self.policy = policy
        self.timeline: list[TimelineEntry] = []
        self.notifications: list[tuple[str, int]] = []

    def mark(self, kind: str, at: float, by: str = "", comment: str = "") -> int:
        record = self.record
        record.transitions += 1
        record.updated_ts = self.now
        self.timeline.append(TimelineEntry(record.transitions, kind, rfc3339(at), by, comment))
        return record.transitions

    def notify(self, kind: str, seq: int | None = None) -> None:
        """Notify unless silenced or held by flapping."""
        if self.record.silenced or self.state.flapping:
            return
        self.notifications.append((kind, seq if seq is not None else self.record.transitions))

    def flip(self, at: float, flip_time: float) -> bool:
        """A change between firing and resolved: count it, decide flapping; True if held."""
        state, policy = self.state, self.policy
        state.flips = (
            *(flip for flip in state.flips if flip > flip_time - policy.flap_window),
            flip_time,
        )
        if len(state.flips) > policy.flap_count:
            if not state.flapping:
                state.flapping = self.record.flapping = True
                self.mark("flapping", at)
                if not self.record.silenced:
                    self.notifications.append(("flapping", self.record.transitions))
        elif state.flapping:
            state.flapping = self.record.flapping = False
            self.mark("settled", at)
        return state.flapping

    def resolve(self, by: str, comment: str, at: float, flip_time: float) -> None:
        record = self.record
        record.status = "resolved"
        record.resolved_at = rfc3339(at)
        record.resolved_by = by
        seq = self.mark("resolved", at, by, comment)
        held = self.flip(at, flip_time)
        if not held and not record.silenced:
            self.notifications.append(("resolved", seq))
        self.state.resolved = at
        self.state.due = 0.0

    def decision(
        self,
        outcome: str,
        before: StoredAlert | None,
        event: str = "",
        *,
        transition: bool = True,
        merged: bool = False,
    ) -> Decision:
        return Decision(
            outcome,
            self.record.id,
            self.record,
            before,
            self.state,
            self.timeline,
            event,
            self.notifications,
            transition,
            merged,
        )


def _copy(record: StoredAlert) -> StoredAlert:
    return msgspec.structs.replace(record)


def _new_incident(
    queued: QueuedAlert,
    previous: StoredAlert | None,
    state: FingerprintState,
    silenced: bool,
    now: float,
    policy: Policy,
) -> Decision:
    alert = queued.alert
    record = to_stored(queued)
    record.silenced = silenced
    record.flapping = state.flapping
    state.alert_id = record.id
    state.starts = _ts(alert.starts_at)
    state.resolved = 0.0
    state.due = 0.0
    change = _Change(record, state, now, policy)
    if alert.status == "resolved":
        ended = _ts(alert.ends_at) or queued.received_at
        record.resolved_at = rfc3339(ended)
        record.resolved_by = queued.producer
        change.mark("resolved", ended, queued.producer, "first seen resolved")
        state.resolved = ended
    else:
        state.due = due_of(queued, policy)
        seq = change.mark("firing", queued.received_at, queued.producer)
        held = change.flip(queued.received_at, queued.received_at) if previous else False
        if not held and not silenced:
            change.notifications.append(("firing", seq))
    return change.decision("created", None, "alert.created")


def decide_alert(
    record: StoredAlert | None,
    state: FingerprintState,
    queued: QueuedAlert,
    silenced: bool,
    now: float,
    policy: Policy,
) -> Decision:
    """What a producer's message does to the alert of its fingerprint."""
    state = state.copy()
    alert = queued.alert
    at = queued.received_at
    current = record if record is not None and record.id == state.alert_id else None
    if alert.status == "resolved":
        if current is None:
            if queued.path == "pagerduty":
                # PagerDuty answers 202 to a resolve of an unknown key and does nothing.
                return Decision("unknown")
            return _new_incident(queued, None, state, silenced, now, policy)
        return _resolve_message(current, state, queued, now, policy)
    if current is None:
        return _new_incident(queued, None, state, silenced, now, policy)
    starts = _ts(alert.starts_at)
    if current.status == "resolved":
        if starts:
            stale = starts == state.starts or starts <= state.resolved
        else:
            stale = at < state.resolved
        if stale:
            change = _Change(_copy(current), state, now, policy)
            change.mark("stale", at, queued.producer, "a firing message older than the resolve")
            return change.decision("outdated", current, transition=False)
        return _new_incident(queued, current, state, silenced, now, policy)
    return _repeat(current, state, queued, silenced, now, policy)


def _repeat(
    current: StoredAlert,
    state: FingerprintState,
    queued: QueuedAlert,
    silenced: bool,
    now: float,
    policy: Policy,
) -> Decision:
    """A firing message of the open incident.

    Takes `decide_alert`'s arguments one by one, not bundled: a bundle would be one
    more object per message on the processor's hot path.
    """
    alert = queued.alert
    at = queued.received_at
    record = _copy(current)
    change = _Change(record, state, now, policy)
    record.count += 1
    if at < current.last_seen_ts:
        # Older than what is known: an occurrence, but no say in the state.
        return change.decision("duplicate", current, transition=False)
    record.last_seen = rfc3339(at)
    record.last_seen_ts = at
    if alert.ends_at is not None:
        record.ends_at = rfc3339(alert.ends_at.timestamp())
    state.due = due_of(queued, policy)
    was_silenced = record.silenced
    record.silenced = silenced
    if alert.starts_at is None and at - current.last_seen_ts > policy.window:
        # Without a producer start, a repeat after the window is a new firing.
        record.status = "firing"
        record.severity = alert.severity
        record.acknowledged_at = None
        record.acknowledged_by = None
        change.mark("firing", at, queued.producer, "repeated after the dedup window")
        change.notify("firing")
        return change.decision("refired", current, "alert.updated")
    if alert.severity != current.severity:
        up = RANK[alert.severity] > RANK[current.severity]
        record.severity = alert.severity
        change.mark("severity", at, queued.producer, f"{current.severity} -> {alert.severity}")
        if up:
            change.notify("escalated")
        return change.decision("severity", current, "alert.updated")
    if was_silenced and not silenced and record.status == "firing":
        # Its firing was never notified while silenced: notify now.
        change.mark("unsilenced", at)
        change.notify("firing")
        return change.decision("unsilenced", current, "alert.updated")
    if now - state.published >= policy.update_interval:
        state.published = now
        return change.decision("duplicate", current, "alert.updated", transition=False)
    return change.decision("duplicate", current, transition=False, merged=True)


def _resolve_message(
    current: StoredAlert,
    state: FingerprintState,
    queued: QueuedAlert,
    now: float,
    policy: Policy,
) -> Decision:
    alert = queued.alert
    if current.status == "resolved":
        return Decision("unchanged", current.id)
    ended = _ts(alert.ends_at) or queued.received_at
    starts = _ts(alert.starts_at)
    opened = state.starts or current.first_seen_ts
    if (starts and state.starts and starts < state.starts) or ended < opened:
        change = _Change(_copy(current), state, now, policy)
        change.mark(
            "stale", queued.received_at, queued.producer, "a resolve older than the incident"
        )
        return change.decision("outdated", current, transition=False)
    change = _Change(_copy(current), state, now, policy)
    change.resolve(queued.producer, "", ended, queued.received_at)
    return change.decision("resolved", current, "alert.resolved")


def decide_action(
    record: StoredAlert | None,
    state: FingerprintState,
    action: AlertAction,
    now: float,
    policy: Policy,
) -> Decision:
    """What a user's (or PagerDuty's) acknowledge, unacknowledge or resolve does."""
    if record is None:
        return Decision("unknown", action.alert_id or "")
    state = state.copy()
    change = _Change(_copy(record), state, now, policy)
    updated = change.record
    if action.action == "acknowledge" and record.status == "firing":
        updated.status = "acknowledged"
        updated.acknowledged_at = rfc3339(now)
        updated.acknowledged_by = action.by
        change.mark("acknowledged", now, action.by, action.comment)
        change.notify("acknowledged")
        return change.decision("acknowledged", record, "alert.acknowledged")
    if action.action == "unacknowledge" and record.status == "acknowledged":
        updated.status = "firing"
        updated.acknowledged_at = None
        updated.acknowledged_by = None
        change.mark("unacknowledged", now, action.by, action.comment)
        return change.decision("unacknowledged", record, "alert.unacknowledged")
    if action.action == "resolve" and record.status != "resolved":
        change.resolve(action.by, action.comment, action.at or now, now)
        return change.decision("resolved", record, "alert.resolved")
    return Decision("unchanged", record.id)


def decide_expiry(
    record: StoredAlert | None, state: FingerprintState, now: float, policy: Policy
) -> Decision:
    """Resolve an open alert whose deadline (`ends_at` or a resolve timeout) has passed."""
    if record is None:
        return Decision("unknown")
    if record.status == "resolved" or state.alert_id != record.id or not state.due:
        return Decision("unchanged", record.id)
    if state.due > now:
        return Decision("pending", record.id)
    state = state.copy()
    change = _Change(_copy(record), state, now, policy)
    comment = "endsAt passed" if record.ends_at else "no repeat within the resolve timeout"
    change.resolve(AUTO_RESOLVER, comment, state.due, now)
    return change.decision("resolved", record, "alert.resolved")


def decide_trailing_update(
    record: StoredAlert | None, state: FingerprintState, since: float, now: float
) -> Decision:
    """Publish the record's last state if no `alert.updated` went out since `since`."""
    if record is None or state.alert_id != record.id or state.published > since:
        return Decision("unchanged", record.id if record else "")
    state = state.copy()
    state.published = now
    return Decision(
        "updated", record.id, record, record, state, event="alert.updated", transition=False
    )
