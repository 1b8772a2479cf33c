"""The prediction jobs against a real Redis-compatible server: history, storage, events."""

from __future__ import annotations

import json
import math
import random

import pytest
from redis import Redis

from tocsin.client.devserver import RedisServer
from tocsin.common import keys
from tocsin.common.redis import sync_client
from tocsin.scheduler.prediction.actors import PredictionRules, Predictor
from tocsin.scheduler.prediction.volume import HOUR

NOW = 1_800_000_000.0


def store_alert(
    redis: Redis,
    alert_id: str,
    *,
    first_seen: float,
    resolved_at: float | None = None,
    resolved_by: str = "am",
    fingerprint: str = "fp-disk",
    name: str = "DiskFull",
    service: str = "db",
    count: int = 2,
) -> None:
    """An alert record as the processor's apply step stores and indexes it."""
    record = {
        "id": alert_id, "fingerprint": fingerprint, "name": name, "severity": "critical",
        "status": "resolved" if resolved_at else "firing", "source": "", "service": service,
        "summary": "", "labels": {}, "annotations": {}, "producer": "am", "count": count,
        "first_seen": "", "last_seen": "", "first_seen_ts": first_seen,
        "last_seen_ts": resolved_at or first_seen,
        "resolved_at": None if resolved_at is None else
        __import__("datetime").datetime.fromtimestamp(resolved_at, __import__("datetime").UTC)
        .isoformat().replace("+00:00", "Z"),
        "resolved_by": resolved_by if resolved_at else None,
    }  # fmt: skip
    redis.set(keys.alert(alert_id), json.dumps(record))
    redis.zadd(keys.alert_index(), {alert_id: resolved_at or first_seen})


@pytest.fixture
def redis(redis_server: RedisServer) -> Redis:
    return sync_client(redis_server.url)


def test_predict_stores_and_publishes_from_the_refreshed_history(redis: Redis) -> None:
    for n in range(30):
        start = NOW - 86_400 + n * 1000
        store_alert(redis, f"past-{n}", first_seen=start, resolved_at=start + 120)
    store_alert(redis, "current", first_seen=NOW - 3)
    predictor = Predictor(redis, PredictionRules(), clock=lambda: NOW)
    summary = predictor.history.refresh(NOW)
    assert summary.records == 31
    assert summary.new_episodes == 31

    prediction = predictor.predict("current", now=NOW)
    assert prediction is not None
    assert prediction.level == "fingerprint"
    assert prediction.episodes == 30
    assert prediction.transient_probability == 1.0
    assert prediction.median_seconds == 120.0

    stored = json.loads(redis.get(keys.prediction("current")))  # type: ignore[arg-type]
    assert stored["median_seconds"] == 120.0
    assert stored["alert_id"] == "current"
    assert 0 < redis.ttl(keys.prediction("current")) <= 30 * 86_400
    [(_, fields)] = redis.xrange(keys.channel_stream("alerts.service.db"))
    frame = json.loads(fields[b"f"])["data"]
    assert frame["type"] == "alert.predicted"
    assert frame["alert_id"] == "current"
    assert frame["prediction"]["transient_probability"] == 1.0


def test_history_refresh_is_idempotent_and_follows_resolves(redis: Redis) -> None:
    predictor = Predictor(redis, PredictionRules(), clock=lambda: NOW)
    store_alert(redis, "a", first_seen=NOW - 600)
    assert predictor.history.refresh(NOW - 500).new_episodes == 1
    store_alert(redis, "a", first_seen=NOW - 600, resolved_at=NOW - 480)
    again = predictor.history.refresh(NOW)
    assert again.new_episodes == 0  # the same episode, now ended: not counted twice
    [episode] = predictor.history.history("fp-disk", "DiskFull", "db")[next(iter(
        predictor.history.history("fp-disk", "DiskFull", "db")))]  # fmt: skip
    assert episode.end == pytest.approx(NOW - 480)
    assert episode.self_resolved
    counts = redis.hgetall(keys.prediction_counts("db"))
    assert counts == {str(int((NOW - 600) // HOUR * HOUR)).encode(): b"1"}


def test_a_person_resolving_and_auto_resolve_are_recorded_as_such(redis: Redis) -> None:
    predictor = Predictor(redis, PredictionRules(), clock=lambda: NOW)
    store_alert(redis, "manual", first_seen=NOW - 900, resolved_at=NOW - 800, resolved_by="alice")
    store_alert(redis, "quiet", first_seen=NOW - 900, resolved_at=NOW - 100,
                resolved_by="auto-resolve")  # fmt: skip
    store_alert(redis, "born-resolved", first_seen=NOW - 50, resolved_at=NOW - 50, count=0)
    predictor.history.refresh(NOW)
    episodes = {e.alert_id: e for level in predictor.history.history("fp-disk", "DiskFull", "db")
                .values() for e in level}  # fmt: skip
    assert not episodes["manual"].self_resolved
    # Auto-resolve ends an episode at its last repeat, stored as last_seen_ts.
    assert episodes["quiet"].self_resolved
    assert episodes["quiet"].end == pytest.approx(NOW - 100)
    assert "born-resolved" not in episodes


def test_history_keeps_at_most_its_cap_newest_first(redis: Redis) -> None:
    predictor = Predictor(redis, PredictionRules(history_cap=10), clock=lambda: NOW)
    for n in range(16):
        store_alert(redis, f"e{n:02}", first_seen=NOW - 10_000 + n * 100, resolved_at=NOW - 5000)
    predictor.history.refresh(NOW)
    kept = predictor.history.history("fp-disk", "DiskFull", "db")
    assert all(len(episodes) == 10 for episodes in kept.values())
    assert min(e.alert_id for e in next(iter(kept.values()))) == "e06"


def test_a_resolved_or_missing_incident_gets_no_prediction(redis: Redis) -> None:
    predictor = Predictor(redis, PredictionRules(), clock=lambda: NOW)
    store_alert(redis, "over", first_seen=NOW - 100, resolved_at=NOW - 10)
    assert predictor.predict("over", now=NOW) is None
    assert predictor.predict("never-stored", now=NOW) is None
    assert redis.get(keys.prediction("over")) is None


def test_volume_forecast_is_stored_published_and_flags_a_storm(redis: Redis) -> None:
    rng = random.Random(3)
    current = int(NOW // HOUR * HOUR)
    for service, storm in (("db", True), ("web", False)):
        counts = {}
        for h in range(14 * 24):
            hour = current - (14 * 24 - h) * HOUR
            mean = 20 + 15 * math.sin(2 * math.pi * (hour // HOUR % 24) / 24)
            counts[str(hour)] = max(0, round(rng.gauss(mean, math.sqrt(mean))))
        if storm:
            counts[str(current - HOUR)] = 250
        redis.hset(keys.prediction_counts(service), mapping=counts)
        redis.sadd(keys.prediction_counted_services(), service)
    redis.hset(keys.prediction_counts("new"), str(current - HOUR), 5)
    redis.sadd(keys.prediction_counted_services(), "new")

    result = Predictor(redis, PredictionRules(), clock=lambda: NOW).forecast_volume(now=NOW)
    assert result.storms == ["db"]
    assert [s.service for s in result.services] == ["db", "web"]
    assert "new" in result.skipped
    web = result.services[1]
    assert len(web.expected) == 24
    assert all(lo <= e <= hi for lo, e, hi in zip(web.lower, web.expected, web.upper, strict=False))
    stored = json.loads(redis.get(keys.prediction_volume()))  # type: ignore[arg-type]
    assert stored["storms"] == ["db"]
    [(_, fields)] = redis.xrange(keys.channel_stream("system"))
    assert json.loads(fields[b"f"])["data"]["type"] == "volume.forecast"
