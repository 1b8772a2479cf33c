"""The processor's and notifier's stored data, as the scheduler's jobs read it.

This module is the one place that knows their Redis layout (tocsin.common.keys):

- `tocsin:alert:{id}`: the alert record, JSON. Fields used: id, fingerprint,
  name, severity, status (firing, acknowledged, resolved), source, service,
  labels.team, producer, count (occurrences merged into it), first_seen_ts,
  last_seen_ts, updated_ts (epoch s), acknowledged_at and resolved_at (RFC 3339),
  resolved_by (the producer, `auto-resolve`, or the person who resolved it).
- `tocsin:timeline:{id}`: the alert's transitions, JSON entries with kind and at.
- `tocsin:idx:all`: every alert id scored by its last change (epoch s), plus the
  per-dimension indexes and `tocsin:open`, which retention must also clean.
- `tocsin:notify:alertlog:{id}`: the notifier's per-alert log of delivery
  attempts (JSON entries with receiver, outcome, at; outcome `sent`,
  `failed-temporary` for a retried attempt, `dead-lettered:{reason}` for a final
  failure).

Reads go through the time index in pages of `batch` ids, so no call touches
more than `batch` keys.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis import Redis

from tocsin.common import keys

__all__ = [
    "AlertRecord",
    "NotificationAttempt",
    "alerts_changed_since",
    "decode_alert",
    "delete_alerts",
    "notification_attempts",
    "timeline_kinds",
]

INDEX_DIMENSIONS = ("status", "severity", "service", "team")


@dataclass(frozen=True)
class AlertRecord:
    """The fields of a stored alert that analytics and pattern detection use."""

    id: str
    fingerprint: str
    name: str
    severity: str
    status: str
    source: str
    service: str
    team: str
    producer: str
    count: int
    first_seen: float
    last_seen: float
    acknowledged_at: float | None
    resolved_at: float | None
    resolved_by: str = ""


def _timestamp(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def decode_alert(raw: bytes | str) -> AlertRecord | None:
    """An alert record from its stored JSON; None if it is not one."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict) or "id" not in data:
        return None
    raw_labels = data.get("labels")
    labels: dict[str, Any] = raw_labels if isinstance(raw_labels, dict) else {}
    first_seen = _timestamp(data.get("first_seen_ts")) or _timestamp(data.get("first_seen"))
    last_seen = _timestamp(data.get("last_seen_ts")) or _timestamp(data.get("last_seen"))
    if first_seen is None:
        return None
    return AlertRecord(
        id=str(data["id"]),
        fingerprint=str(data.get("fingerprint", "")),
        name=str(data.get("name", "")),
        severity=str(data.get("severity", "")),
        status=str(data.get("status", "")),
        source=str(data.get("source", "")),
        service=str(data.get("service", "")),
        team=str(labels.get("team", "")),
        producer=str(data.get("producer", "")),
        count=int(data.get("count", 1)),
        first_seen=first_seen,
        last_seen=last_seen or first_seen,
        acknowledged_at=_timestamp(data.get("acknowledged_at")),
        resolved_at=_timestamp(data.get("resolved_at")),
        resolved_by=str(data.get("resolved_by") or ""),
    )


def alerts_changed_since(redis: Redis, since: float, batch: int = 200) -> Iterator[AlertRecord]:
    """Every alert whose last change is at or after `since`, oldest change first.

    Pages follow a score cursor, not an offset: an alert changed during the
    walk moves to the end of the index and is met again there (callers keep
    the last copy by id) instead of shifting the pages and being skipped.
    """
    index = keys.alert_index()
    low = since
    done_at_low: set[bytes] = set()
    while True:
        wanted = batch + len(done_at_low)
        rows: list[tuple[bytes, float]] = redis.zrangebyscore(  # type: ignore[assignment]
            index, low, "+inf", start=0, num=wanted, withscores=True
        )
        fresh = [(m, score) for m, score in rows if not (score == low and m in done_at_low)]
        if fresh:
            raws: list[bytes | None] = redis.mget(  # type: ignore[assignment]
                [keys.alert(m.decode()) for m, _ in fresh]
            )
            for raw in raws:
                record = None if raw is None else decode_alert(raw)
                if record is not None:
                    yield record
        if len(rows) < wanted or not fresh:
            return
        top = fresh[-1][1]
        if top != low:
            done_at_low = set()
            low = top
        done_at_low |= {m for m, score in fresh if score == top}


def timeline_kinds(redis: Redis, alert_ids: list[str]) -> dict[str, list[tuple[str, float]]]:
    """Each alert's transitions as (kind, epoch seconds), in order."""
    pipe = redis.pipeline(transaction=False)
    for alert_id in alert_ids:
        pipe.lrange(keys.timeline(alert_id), 0, -1)
    result: dict[str, list[tuple[str, float]]] = {}
    for alert_id, entries in zip(alert_ids, pipe.execute(), strict=True):
        transitions: list[tuple[str, float]] = []
        for entry in entries:
            try:
                item = json.loads(entry)
            except ValueError:
                continue
            at = _timestamp(item.get("at")) if isinstance(item, dict) else None
            if at is not None:
                transitions.append((str(item.get("kind", "")), at))
        result[alert_id] = transitions
    return result


@dataclass(frozen=True)
class NotificationAttempt:
    """One delivery attempt from the notifier's log: `sent`, `retried` or `failed` (final)."""

    receiver: str
    result: str
    at: float | None


def _attempt_result(outcome: str) -> str:
    if outcome == "sent":
        return "sent"
    if outcome.startswith(("dead-lettered", "failed-permanent")) or outcome == "failed":
        return "failed"
    return "retried"


def notification_attempts(redis: Redis, alert_ids: list[str]) -> Iterator[NotificationAttempt]:
    """The logged delivery attempts of `alert_ids`."""
    pipe = redis.pipeline(transaction=False)
    for alert_id in alert_ids:
        pipe.lrange(keys.notification_log(alert_id), 0, -1)
    for entries in pipe.execute():
        for entry in entries:
            try:
                item = json.loads(entry)
            except ValueError:
                continue
            if not isinstance(item, dict) or item.get("status") == "paused":
                continue  # auto-pause's notes (held, resolved during pause) are not attempts
            yield NotificationAttempt(
                receiver=str(item.get("receiver", "")),
                result=_attempt_result(str(item.get("outcome", ""))),
                at=_timestamp(item.get("at")),
            )


def delete_alerts(redis: Redis, alert_ids: list[str]) -> int:
    """Remove alerts with their timelines, notification logs and index entries; one pipeline.

    UNLINK frees memory off the main thread, so a batch costs Redis little.
    """
    if not alert_ids:
        return 0
    raws: list[bytes | None] = redis.mget(  # type: ignore[assignment]
        [keys.alert(i) for i in alert_ids]
    )
    pipe = redis.pipeline(transaction=False)
    for alert_id, raw in zip(alert_ids, raws, strict=True):
        pipe.unlink(keys.alert(alert_id), keys.timeline(alert_id), keys.notification_log(alert_id))
        pipe.zrem(keys.alert_index(), alert_id)
        pipe.zrem(keys.open_alerts(), alert_id)
        record = None if raw is None else decode_alert(raw)
        if record is not None:
            values = {
                "status": record.status,
                "severity": record.severity,
                "service": record.service,
                "team": record.team,
            }
            for dimension in INDEX_DIMENSIONS:
                if values[dimension]:
                    pipe.zrem(keys.alert_index(dimension, values[dimension]), alert_id)
    pipe.execute()
    return len(alert_ids)
