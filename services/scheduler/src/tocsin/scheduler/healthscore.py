"""Tocsin's 0-100 health score: seven components, each with a weight and a curve.

The formula is documented in docs/health.md; this module is its single
implementation. Over the last five minutes (`WINDOW_SECONDS`):

| component | value | good (1.0) | bad (0.0) | weight |
| --- | --- | --- | --- | --- |
| `e2e_latency_p95` | p95 of ingest receipt -> socket send, seconds | <= 0.1 | >= 0.5 | 25 |
| `job_success_rate` | jobs succeeded / jobs finished | >= 0.995 | <= 0.95 | 20 |
| `queue_backlog_age` | age of the oldest waiting message, seconds | <= 5 | >= 60 | 15 |
| `cache_hit_rate` | cache hits / lookups | >= 0.8 | <= 0.4 | 10 |
| `dead_letter_growth` | dead letters added in the window | 0 | >= 10 | 10 |
| `disconnect_rate` | abnormal WebSocket disconnects per minute | <= 1 | >= 20 | 10 |
| `redis_reachable` | 1 when Redis answers PING | 1 | 0 | 10 |

Between good and bad a component's score falls linearly; its contribution is
`weight * score`, and the health score is the sum, rounded to an integer. A
component with no data in the window (no jobs, no cache lookups, no
deliveries) scores 1: silence is not sickness, and the backlog and
dead-letter components still catch a stalled pipeline.

Inputs come from `tocsin.common.metrics.health_signals` (counted by every
process, added to Redis per minute) and from Redis itself (queues, dead
letters). `compute_and_store` runs every 15 s in exactly one process (the
scheduler's `health_score` job): it stores the report (`tocsin.common.health`,
which the gateway serves) at `tocsin:health`, sets the `tocsin_health_score`
gauge and publishes a `health.changed` event on the `system` channel when the
integer score changes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Gauge
from redis import Redis, RedisError

from tocsin.common import keys
from tocsin.common.broker import ALERTS_QUEUE, NOTIFICATIONS_QUEUE
from tocsin.common.events import SYSTEM_CHANNEL, EventPublisher
from tocsin.common.health import ComponentScore, HealthReport, load_report
from tocsin.common.metrics import E2E_LATENCY_BUCKETS, count_redis_error
from tocsin.common.queue.gauges import queue_state

__all__ = [
    "COMPONENTS",
    "MIN_CACHE_LOOKUPS",
    "WINDOW_SECONDS",
    "Component",
    "Signals",
    "compute_and_store",
    "gauges",
    "linear_score",
    "read_signals",
    "score",
]

WINDOW_SECONDS = 300
# Fewer cache lookups than this in the window are too few to judge: an idle
# console's first page of each query is a miss, which alone scored 0 on the
# component (health 90 on an idle stack, with nothing wrong).
MIN_CACHE_LOOKUPS = 20
DEFAULT_QUEUES = (ALERTS_QUEUE, NOTIFICATIONS_QUEUE)
# Dead-letter samples older than this are dropped; a bit more than the window.
_SAMPLE_RETENTION_SECONDS = WINDOW_SECONDS * 2


@dataclass(frozen=True)
class Component:
    """One input of the score: the value where it is fully good, fully bad, and its weight."""

    name: str
    weight: float
    good: float
    bad: float
    unit: str
    description: str


COMPONENTS: tuple[Component, ...] = (
    Component("e2e_latency_p95", 25, 0.1, 0.5, "seconds", "p95 ingest receipt to socket send"),
    Component("job_success_rate", 20, 0.995, 0.95, "ratio", "jobs succeeded / finished"),
    Component("queue_backlog_age", 15, 5.0, 60.0, "seconds", "oldest waiting message"),
    Component("cache_hit_rate", 10, 0.8, 0.4, "ratio", "cache hits / lookups"),
    Component("dead_letter_growth", 10, 0.0, 10.0, "messages", "dead letters added in window"),
    Component("disconnect_rate", 10, 1.0, 20.0, "per_minute", "abnormal WebSocket disconnects"),
    Component("redis_reachable", 10, 1.0, 0.0, "bool", "Redis answers PING"),
)


def linear_score(value: float | None, good: float, bad: float) -> float:
    """1.0 at or beyond `good`, 0.0 at or beyond `bad`, linear between; 1.0 for no data."""
    if value is None:
        return 1.0
    if good == bad:
        return 1.0 if value == good else 0.0
    fraction = (value - bad) / (good - bad)
    return min(1.0, max(0.0, fraction))


@dataclass(frozen=True)
class Signals:
    """The raw inputs over one window; `None` where there was nothing to measure."""

    e2e_latency_p95: float | None = None
    job_success_rate: float | None = None
    queue_backlog_age: float | None = None
    cache_hit_rate: float | None = None
    dead_letter_growth: float | None = None
    disconnect_rate: float | None = None
    redis_reachable: float | None = None


def score(signals: Signals, now: float | None = None) -> HealthReport:
    """The health report for `signals` (pure: no I/O)."""
    parts: list[ComponentScore] = []
    for component in COMPONENTS:
        value = getattr(signals, component.name)
        part = linear_score(value, component.good, component.bad)
        parts.append(
            ComponentScore(
                name=component.name,
                value=value,
                unit=component.unit,
                score=round(part, 4),
                weight=component.weight,
                contribution=round(component.weight * part, 2),
            )
        )
    total = sum(part.weight * part.score for part in parts)
    return HealthReport(
        score=round(total),
        computed_at=time.time() if now is None else now,
        window_seconds=WINDOW_SECONDS,
        components=tuple(parts),
        pulled_down_by=_reasons(parts),
    )


def _reasons(parts: Sequence[ComponentScore]) -> tuple[str, ...]:
    """One sentence per component that costs points, the costliest first."""
    costly = sorted(
        (part for part in parts if part.weight - part.contribution >= 0.005),
        key=lambda part: part.contribution - part.weight,
    )
    reasons = []
    for part in costly:
        component = next(c for c in COMPONENTS if c.name == part.name)
        better = ">=" if component.good > component.bad else "<="
        reasons.append(
            f"{part.name} is {part.value:g} {part.unit} ({component.description}): "
            f"costs {part.weight - part.contribution:g} of {part.weight:g} points "
            f"(full at {better} {component.good:g})"
        )
    return tuple(reasons)


def _latency_p95(counts: dict[str, int]) -> float | None:
    """The p95 from cumulative bucket counts: the upper bound of the bucket holding it."""
    total = counts.get("e2e_count", 0)
    if total <= 0:
        return None
    rank = 0.95 * total
    for bound in E2E_LATENCY_BUCKETS:
        if counts.get(f"e2e_le_{bound}", 0) >= rank:
            return bound
    # Beyond the last bucket: report twice its bound, which is past every curve.
    return E2E_LATENCY_BUCKETS[-1] * 2


def _ratio(good: int, bad: int) -> float | None:
    total = good + bad
    return good / total if total > 0 else None


def _window_counts(redis: Redis, now: float) -> dict[str, int]:
    current = int(now // 60)
    minutes = range(current - WINDOW_SECONDS // 60 + 1, current + 1)
    pipe = redis.pipeline(transaction=False)
    for minute in minutes:
        pipe.hgetall(keys.health_signals(minute))
    totals: dict[str, int] = {}
    for hashed in pipe.execute():
        for name, value in hashed.items():
            field = name.decode() if isinstance(name, bytes) else str(name)
            totals[field] = totals.get(field, 0) + int(value)
    return totals


def _dead_letter_growth(redis: Redis, dead: int, now: float) -> float:
    """Dead letters added over the window, from samples this job keeps in a sorted set."""
    pipe = redis.pipeline(transaction=False)
    pipe.zadd(keys.HEALTH_DEAD_LETTER_SAMPLES, {f"{now:.3f}:{dead}": now})
    pipe.zremrangebyscore(keys.HEALTH_DEAD_LETTER_SAMPLES, 0, now - _SAMPLE_RETENTION_SECONDS)
    pipe.zrangebyscore(keys.HEALTH_DEAD_LETTER_SAMPLES, now - WINDOW_SECONDS, "+inf", 0, 1)
    _, _, oldest = pipe.execute()
    baseline = int(oldest[0].decode().rsplit(":", 1)[1]) if oldest else dead
    # A purge of the dead-letter queue is not negative growth.
    return float(max(0, dead - baseline))


def read_signals(
    redis: Redis, queues: Sequence[str] = DEFAULT_QUEUES, now: float | None = None
) -> Signals:
    """Gather the inputs of the last window from Redis; Redis down gives `redis_reachable=0`."""
    at = time.time() if now is None else now
    try:
        redis.ping()
        counts = _window_counts(redis, at)
        states = [queue_state(redis, queue) for queue in queues]
        waiting = [at - oldest for _, oldest in states if oldest > 0]
        growth = _dead_letter_growth(redis, sum(sizes["dead"] for sizes, _ in states), at)
    except RedisError as exc:
        count_redis_error(exc)
        return Signals(redis_reachable=0.0)
    minutes = WINDOW_SECONDS / 60
    disconnects = counts.get("ws_disconnects_abnormal")
    hits, misses = counts.get("cache_hits", 0), counts.get("cache_misses", 0)
    return Signals(
        e2e_latency_p95=_latency_p95(counts),
        job_success_rate=_ratio(counts.get("jobs_success", 0), counts.get("jobs_failed", 0)),
        queue_backlog_age=max(waiting) if waiting else 0.0,
        cache_hit_rate=_ratio(hits, misses) if hits + misses >= MIN_CACHE_LOOKUPS else None,
        dead_letter_growth=growth,
        disconnect_rate=None if disconnects is None else disconnects / minutes,
        redis_reachable=1.0,
    )


class _Gauges:
    """The score gauges, registered by the first `compute_and_store` of a process.

    Only the process that computes the score exposes them; a process that just
    reads the stored report (the gateway's `GET /v1/health`) shows no stale 0.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._score: Gauge | None = None
        self._component: Gauge | None = None

    def set(self, report: HealthReport) -> None:
        with self._lock:
            if self._score is None or self._component is None:
                self._score = Gauge(
                    "tocsin_health_score", "Tocsin's health score, 0-100 (see docs/health.md)."
                )
                self._component = Gauge(
                    "tocsin_health_component_score",
                    "Score of one health component, 0-1, before its weight.",
                    ["component"],
                )
        self._score.set(report.score)
        for part in report.components:
            self._component.labels(part.name).set(part.score)

    def score(self) -> float | None:
        """The exposed score, or None before the first computation."""
        return None if self._score is None else self._score._value.get()


gauges = _Gauges()


def compute_and_store(
    redis: Redis,
    queues: Sequence[str] = DEFAULT_QUEUES,
    publisher: EventPublisher | None = None,
    now: float | None = None,
) -> HealthReport:
    """Compute the score, store it at `tocsin:health`, set the gauges, publish when it changed.

    Meant to run every 15 s in one process (the scheduler's leader); safe to
    run anywhere, since it only reads shared inputs and overwrites one key.
    """
    report = score(read_signals(redis, queues, now), now)
    gauges.set(report)
    encoded = report.to_json()
    try:
        stored: Any = redis.set(keys.HEALTH, encoded, get=True)
        previous = load_report(stored)
        if previous is None or previous.get("score") != report.score:
            event = json.dumps({"type": "health.changed", "health": json.loads(encoded)})
            (publisher or EventPublisher(redis)).publish([SYSTEM_CHANNEL], event)
    except RedisError as exc:
        count_redis_error(exc)
    return report
