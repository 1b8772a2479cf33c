"""Daily analytics: one UTC day's alerts summed up, stored per day.

The day's alerts are those first seen during it. Times to acknowledge and to
resolve are measured from first seen; p95 is the nearest-rank percentile.
Notifications come from the notifier's per-alert log: attempts sent, retried
and finally failed per receiver. When no log entry exists for the day's alerts
(no notifier ran, or its log expired) they are zeros and
`notifications.available` is false.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from redis import Redis

from tocsin.common import keys
from tocsin.common.models import rfc3339
from tocsin.scheduler import alertdata
from tocsin.scheduler.alertdata import AlertRecord, NotificationAttempt

__all__ = ["compute_daily", "day_bounds", "duration_stats", "run_daily_analytics", "summarize"]


def day_bounds(day: date) -> tuple[float, float]:
    """The UTC day as [start, end) in Unix seconds."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start.timestamp(), (start + timedelta(days=1)).timestamp()


def duration_stats(values: list[float]) -> dict[str, Any]:
    """Count, mean and nearest-rank p95 of durations in seconds (None when empty)."""
    if not values:
        return {"count": 0, "mean_seconds": None, "p95_seconds": None}
    ordered = sorted(values)
    rank = max(1, math.ceil(0.95 * len(ordered)))
    return {
        "count": len(ordered),
        "mean_seconds": round(sum(ordered) / len(ordered), 3),
        "p95_seconds": round(ordered[rank - 1], 3),
    }


def summarize(
    day: date,
    alerts: Iterable[AlertRecord],
    attempts: Iterable[NotificationAttempt],
    *,
    top_n: int = 10,
) -> dict[str, Any]:
    """The analytics of `day` from the alerts first seen on it and their notification attempts."""
    day_alerts = list(alerts)
    by: dict[str, Counter[str]] = {
        "severity": Counter(),
        "service": Counter(),
        "team": Counter(),
        "source": Counter(),
    }
    to_ack: list[float] = []
    to_resolve: list[float] = []
    occurrences: Counter[str] = Counter()
    incidents: Counter[str] = Counter()
    names: dict[str, tuple[str, str]] = {}
    for alert in day_alerts:
        by["severity"][alert.severity] += 1
        by["service"][alert.service or "(none)"] += 1
        by["team"][alert.team or "(none)"] += 1
        by["source"][alert.source or alert.producer or "(none)"] += 1
        if alert.acknowledged_at is not None:
            to_ack.append(max(0.0, alert.acknowledged_at - alert.first_seen))
        if alert.resolved_at is not None:
            to_resolve.append(max(0.0, alert.resolved_at - alert.first_seen))
        occurrences[alert.fingerprint] += alert.count
        incidents[alert.fingerprint] += 1
        names.setdefault(alert.fingerprint, (alert.name, alert.service))
    receivers: defaultdict[str, dict[str, int]] = defaultdict(
        lambda: {"sent": 0, "failed": 0, "retried": 0}
    )
    for attempt in attempts:
        receivers[attempt.receiver][attempt.result] += 1
    noisy = sorted(occurrences.items(), key=lambda item: (-item[1], item[0]))[:top_n]
    return {
        "date": day.isoformat(),
        "alerts": len(day_alerts),
        "occurrences": sum(occurrences.values()),
        "by_severity": dict(sorted(by["severity"].items())),
        "by_service": dict(sorted(by["service"].items())),
        "by_team": dict(sorted(by["team"].items())),
        "by_source": dict(sorted(by["source"].items())),
        "time_to_acknowledge": duration_stats(to_ack),
        "time_to_resolve": duration_stats(to_resolve),
        "notifications": {
            "available": bool(receivers),
            "sent": sum(r["sent"] for r in receivers.values()),
            "failed": sum(r["failed"] for r in receivers.values()),
            "retried": sum(r["retried"] for r in receivers.values()),
            "by_receiver": dict(sorted(receivers.items())),
        },
        "top_noisy_fingerprints": [
            {
                "fingerprint": fingerprint,
                "name": names[fingerprint][0],
                "service": names[fingerprint][1],
                "occurrences": count,
                "incidents": incidents[fingerprint],
            }
            for fingerprint, count in noisy
        ],
    }


def compute_daily(redis: Redis, day: date, *, top_n: int = 10, batch: int = 200) -> dict[str, Any]:
    """Read the day's alerts from Redis and summarize them."""
    start, end = day_bounds(day)
    seen: dict[str, AlertRecord] = {}
    # An alert first seen on the day changed on or after the day's start.
    for alert in alertdata.alerts_changed_since(redis, start, batch):
        if start <= alert.first_seen < end:
            seen[alert.id] = alert
    ids = list(seen)
    attempts: list[NotificationAttempt] = []
    for offset in range(0, len(ids), batch):
        attempts.extend(alertdata.notification_attempts(redis, ids[offset : offset + batch]))
    return summarize(day, seen.values(), attempts, top_n=top_n)


def run_daily_analytics(
    redis: Redis, fire: int, params: dict[str, Any], *, top_n: int, batch: int
) -> dict[str, Any]:
    """The job: analytics of the day before the fire time (or `params["date"]`), stored."""
    if "date" in params:
        day = date.fromisoformat(str(params["date"]))
    else:
        day = datetime.fromtimestamp(fire, UTC).date() - timedelta(days=1)
    report = compute_daily(redis, day, top_n=top_n, batch=batch)
    report["computed_at"] = rfc3339(time.time())
    redis.set(keys.analytics_daily(day.isoformat()), json.dumps(report))
    return {"date": day.isoformat(), "alerts": report["alerts"]}
