"""The alert lifecycle: one atomic Lua step per message, pipelined per batch.

The script (`lifecycle/lifecycle.lua`) owns every decision that reads state:
message-id idempotency, the dedup window, transitions, flapping, the timeline,
indexes, the event and the notification enqueue. Python prepares what needs no
state (the new record, the silence verdict, timestamps) and reads the outcome.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import msgspec
from redis import Redis
from redis.exceptions import NoScriptError

from tocsin.common import keys
from tocsin.common.broker import DELIVER_NOTIFICATION_ACTOR, NOTIFICATIONS_QUEUE
from tocsin.common.models import AlertAction, QueuedAlert, StoredAlert
from tocsin.common.silences import SilenceSet

__all__ = [
    "AlertLifecycle",
    "LifecycleConfig",
    "Outcome",
    "matching_labels",
    "rfc3339",
    "to_stored",
]

_PUBLISH_LUA = resources.files("tocsin.common").joinpath("events/publish.lua").read_text()
_LIFECYCLE_LUA = resources.files("tocsin.processor").joinpath("lifecycle/lifecycle.lua").read_text()
# The shared publish step becomes a local function: its KEYS/ARGV are parameters.
SCRIPT = "local function publish_event(KEYS, ARGV)\n" + _PUBLISH_LUA + "\nend\n" + _LIFECYCLE_LUA

_encoder = msgspec.json.Encoder()


def rfc3339(timestamp: float) -> str:
    return (
        datetime.fromtimestamp(timestamp, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


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
        count=1,
        first_seen=seen,
        last_seen=seen,
        starts_at=alert.starts_at.isoformat() if alert.starts_at else None,
        ends_at=alert.ends_at.isoformat() if alert.ends_at else None,
        generator_url=alert.generator_url,
        fingerprint_rule=fingerprint_rule(queued),
        first_seen_ts=queued.received_at,
        last_seen_ts=queued.received_at,
    )


def fingerprint_rule(queued: QueuedAlert) -> str:
    """Which rule produced the fingerprint: the producer's key, or a versioned hash."""
    if queued.alert.dedup_key and queued.fingerprint == queued.alert.dedup_key:
        return "dedup_key"
    head, sep, _ = queued.fingerprint.partition(":")
    return head if sep and head.startswith("v") else "other"


def matching_labels(alert: QueuedAlert) -> dict[str, str]:
    """The labels silences match: the alert's labels plus its identifying fields."""
    body = alert.alert
    labels = {"alertname": body.name, "severity": body.severity}
    if body.service:
        labels["service"] = body.service
    if body.source:
        labels["source"] = body.source
    labels.update(body.labels)
    return labels


@dataclass(frozen=True)
class LifecycleConfig:
    """The knobs the script reads."""

    window: float = 300.0
    flap_count: int = 4
    flap_window: float = 600.0
    applied_ttl: int = 86_400
    state_ttl: int = 30 * 86_400
    timeline_cap: int = 100
    stream_cap: int = 10_000
    update_interval: float = 1.0

    def as_json(self) -> str:
        return json.dumps(
            {
                "window": self.window,
                "flap_count": self.flap_count,
                "flap_window": self.flap_window,
                "applied_ttl": self.applied_ttl,
                "state_ttl": self.state_ttl,
                "timeline_cap": self.timeline_cap,
                "stream_cap": self.stream_cap,
                "update_interval": self.update_interval,
                "notify_key": f"{keys.DRAMATIQ_NAMESPACE}:{NOTIFICATIONS_QUEUE}",
                "notify_wake": keys.queue_wakeup(NOTIFICATIONS_QUEUE),
                "notify_queue": NOTIFICATIONS_QUEUE,
                "notify_actor": DELIVER_NOTIFICATION_ACTOR,
            }
        )


@dataclass(frozen=True)
class Outcome:
    """What one message did: `created`, `duplicate`, `replayed`, `resolved`, ..."""

    outcome: str
    alert_id: str
    notified: tuple[str, ...]


def _outcome(raw: Sequence[Any]) -> Outcome:
    def text(value: Any) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    notified = text(raw[2])
    return Outcome(text(raw[0]), text(raw[1]), tuple(notified.split()) if notified else ())


class AlertLifecycle:
    """Applies alerts, user actions and timeouts to stored state through the script."""

    def __init__(self, redis: Redis, config: LifecycleConfig) -> None:
        self._redis = redis
        self._config_json = config.as_json()
        self._sha = self._load()

    def _load(self) -> str:
        return str(self._redis.script_load(SCRIPT))

    def _run(self, calls: list[list[Any]]) -> list[Outcome]:
        # Every call is idempotent, so a batch that meets a Redis that lost the
        # script (a restart) is simply run again after reloading it.
        for attempt in range(2):
            pipe = self._redis.pipeline(transaction=False)
            for args in calls:
                pipe.evalsha(self._sha, 0, keys.PREFIX, self._config_json, *args)
            try:
                results = pipe.execute()
            except NoScriptError:
                if attempt:
                    raise
                self._sha = self._load()
                continue
            return [_outcome(result) for result in results]
        raise AssertionError("unreachable")

    def apply_alerts(
        self,
        batch: Sequence[QueuedAlert],
        silences: SilenceSet,
        traceparent: str | Sequence[str] = "",
        silence_version: str = "",
    ) -> list[Outcome]:
        """Apply `batch`; an outcome is `stale` (and nothing changed for that alert) when
        the silences moved on from `silence_version`: reload them and apply those again.

        `traceparent` is one for the whole batch, or one per alert (a batch merged
        from several queue messages).
        """
        traces = [traceparent] * len(batch) if isinstance(traceparent, str) else traceparent
        calls: list[list[Any]] = []
        for queued, trace in zip(batch, traces, strict=True):
            received = queued.received_at
            silenced = silences.mutes(matching_labels(queued), received) if silences else False
            calls.append(
                [
                    "alert",
                    queued.id,
                    queued.fingerprint,
                    _encoder.encode(to_stored(queued)),
                    repr(received),
                    rfc3339(received),
                    "1" if silenced else "0",
                    trace,
                    repr(received),
                    silence_version,
                ]
            )
        return self._run(calls)

    def apply_action(self, action: AlertAction, now: float, traceparent: str = "") -> Outcome:
        at = action.at or now
        [result] = self._run(
            [
                [
                    "action",
                    action.id,
                    action.action,
                    action.alert_id or "",
                    action.fingerprint or "",
                    action.by,
                    action.comment,
                    repr(now),
                    rfc3339(now),
                    traceparent,
                    repr(at),
                ]
            ]
        )
        return result

    def expire_stale(self, now: float, timeout: float, limit: int = 1000) -> list[Outcome]:
        """Auto-resolve open alerts whose producer stopped re-sending for `timeout`."""
        stale: list[bytes] = self._redis.zrangebyscore(  # type: ignore[assignment]
            keys.open_alerts(), "-inf", now - timeout, start=0, num=limit
        )
        if not stale:
            return []
        calls: list[list[Any]] = [
            ["expire", alert_id.decode(), repr(now), rfc3339(now), repr(timeout)]
            for alert_id in stale
        ]
        return self._run(calls)
