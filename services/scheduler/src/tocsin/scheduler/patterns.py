"""Pattern detection: flapping alerts, storms, noisy sources and recurring alerts.

- **flapping**: a fingerprint that fired at least `flap_episodes` times in the
  window and was resolved in between (from the alerts' timelines);
- **storm**: a service whose new alerts in the last `storm_window` reach
  `storm_min_alerts` and exceed `storm_factor` times its baseline rate, the
  rate over the rest of the window scaled to the storm window;
- **noisy source**: a source (or producer, when the alert names no source)
  whose duplicate occurrences make up at least `noisy_duplicate_ratio` of its
  occurrences, once it has `noisy_min_occurrences`;
- **recurring**: a fingerprint that fired in the same UTC hour on at least
  `recurring_days` distinct days of the look-back.

Findings are stored at `tocsin:patterns` and published on the `system` channel.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis import Redis

from tocsin.common import keys
from tocsin.common.events import SYSTEM_CHANNEL, EventPublisher
from tocsin.common.models import rfc3339
from tocsin.scheduler import alertdata
from tocsin.scheduler.alertdata import AlertRecord

__all__ = ["PatternRules", "detect", "run_pattern_detection"]


@dataclass(frozen=True)
class PatternRules:
    """The thresholds of pattern detection (see the settings for each)."""

    window_seconds: int = 3600
    flap_episodes: int = 4
    storm_window_seconds: int = 300
    storm_factor: float = 5.0
    storm_min_alerts: int = 20
    noisy_duplicate_ratio: float = 0.8
    noisy_min_occurrences: int = 20
    recurring_days: int = 3
    recurring_lookback_days: int = 14

    @property
    def lookback_seconds(self) -> int:
        return max(self.window_seconds, self.recurring_lookback_days * 86400)


def detect(
    alerts: Iterable[AlertRecord],
    timelines: Mapping[str, list[tuple[str, float]]],
    now: float,
    rules: PatternRules,
) -> dict[str, list[dict[str, Any]]]:
    """Findings from the alerts changed in the look-back and their timelines."""
    window_start = now - rules.window_seconds
    storm_start = now - rules.storm_window_seconds
    lookback_start = now - rules.recurring_lookback_days * 86400
    fired: defaultdict[str, int] = defaultdict(int)
    resolved: defaultdict[str, int] = defaultdict(int)
    fire_hours: defaultdict[tuple[str, int], set[str]] = defaultdict(set)
    names: dict[str, tuple[str, str]] = {}
    recent: Counter[str] = Counter()
    baseline: Counter[str] = Counter()
    occurrences: Counter[str] = Counter()
    duplicates: Counter[str] = Counter()
    for alert in alerts:
        names.setdefault(alert.fingerprint, (alert.name, alert.service))
        fire_times = [at for kind, at in timelines.get(alert.id, []) if kind == "firing"]
        if not fire_times:
            fire_times = [alert.first_seen]
        for kind, at in timelines.get(alert.id, []):
            if at >= window_start and kind == "resolved":
                resolved[alert.fingerprint] += 1
        for at in fire_times:
            if at >= window_start:
                fired[alert.fingerprint] += 1
            if at >= lookback_start:
                moment = datetime.fromtimestamp(at, UTC)
                fire_hours[(alert.fingerprint, moment.hour)].add(moment.date().isoformat())
        service = alert.service or "(none)"
        if alert.first_seen >= storm_start:
            recent[service] += 1
        elif alert.first_seen >= window_start:
            baseline[service] += 1
        if alert.last_seen >= window_start:
            source = alert.source or alert.producer or "(none)"
            occurrences[source] += alert.count
            duplicates[source] += alert.count - 1

    flapping = [
        {
            "fingerprint": fp,
            "name": names[fp][0],
            "service": names[fp][1],
            "fired": fired[fp],
            "resolved": resolved[fp],
        }
        for fp in sorted(fired)
        if fired[fp] >= rules.flap_episodes and resolved[fp] >= rules.flap_episodes - 1
    ]
    baseline_span = max(1, rules.window_seconds - rules.storm_window_seconds)
    storms = []
    for service in sorted(recent):
        expected = baseline[service] * rules.storm_window_seconds / baseline_span
        if recent[service] >= rules.storm_min_alerts and recent[service] > (
            rules.storm_factor * expected
        ):
            storms.append(
                {
                    "service": service,
                    "alerts": recent[service],
                    "baseline": round(expected, 3),
                    "window_seconds": rules.storm_window_seconds,
                }
            )
    noisy = []
    for source in sorted(occurrences):
        ratio = duplicates[source] / occurrences[source] if occurrences[source] else 0.0
        if occurrences[source] >= rules.noisy_min_occurrences and (
            ratio >= rules.noisy_duplicate_ratio
        ):
            noisy.append(
                {
                    "source": source,
                    "occurrences": occurrences[source],
                    "duplicates": duplicates[source],
                    "duplicate_ratio": round(ratio, 3),
                }
            )
    recurring = [
        {
            "fingerprint": fp,
            "name": names[fp][0],
            "service": names[fp][1],
            "hour_utc": hour,
            "days": sorted(days),
        }
        for (fp, hour), days in sorted(fire_hours.items())
        if len(days) >= rules.recurring_days
    ]
    return {
        "flapping": flapping,
        "storms": storms,
        "noisy_sources": noisy,
        "recurring": recurring,
    }


def run_pattern_detection(
    redis: Redis, now: float, rules: PatternRules, *, batch: int, run_id: str
) -> dict[str, Any]:
    """The job: detect, store the findings, publish them on the `system` channel."""
    since = now - rules.lookback_seconds
    alerts = {a.id: a for a in alertdata.alerts_changed_since(redis, since, batch)}
    ids = list(alerts)
    timelines: dict[str, list[tuple[str, float]]] = {}
    for offset in range(0, len(ids), batch):
        timelines.update(alertdata.timeline_kinds(redis, ids[offset : offset + batch]))
    findings = detect(alerts.values(), timelines, now, rules)
    report: dict[str, Any] = {
        "detected_at": rfc3339(now),
        "run_id": run_id,
        "window_seconds": rules.window_seconds,
        **findings,
    }
    encoded = json.dumps(report)
    redis.set(keys.pattern_findings(), encoded)
    counts = {kind: len(items) for kind, items in findings.items()}
    if any(counts.values()):
        event = json.dumps({"type": "patterns.detected", "patterns": report})
        EventPublisher(redis).publish([SYSTEM_CHANNEL], event)
    return counts
