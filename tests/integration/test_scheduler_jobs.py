"""The scheduler's jobs on seeded data in a real Redis: known alerts give known results.

Alerts are seeded in the processor's layout (record, time index, per-value
indexes, timeline) and notification attempts in the notifier's log layout, as
`tocsin.scheduler.alertdata` documents them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
import redis
from conftest import ServiceFactory
from tests.support import wait_until

from tocsin.client.devserver import RedisServer
from tocsin.common import keys
from tocsin.common.apikeys import ApiKeyStore
from tocsin.scheduler import alertdata
from tocsin.scheduler.analytics import compute_daily
from tocsin.scheduler.cachehealth import check_cache_health
from tocsin.scheduler.patterns import PatternRules, run_pattern_detection
from tocsin.scheduler.retention import RetentionPolicy, enforce_retention

DEADLINE = 60.0

pytestmark = pytest.mark.integration


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def seed_alert(
    client: redis.Redis,
    alert_id: str,
    *,
    fingerprint: str,
    first_seen: float,
    severity: str = "warning",
    service: str = "",
    team: str = "",
    source: str = "",
    producer: str = "prod",
    count: int = 1,
    last_seen: float | None = None,
    acknowledged_at: float | None = None,
    resolved_at: float | None = None,
    timeline: list[tuple[str, float]] | None = None,
) -> None:
    """Write one alert the way the processor stores it."""
    last = last_seen if last_seen is not None else first_seen
    changes = [first_seen, last, acknowledged_at or 0, resolved_at or 0]
    updated = max(changes)
    status = "resolved" if resolved_at else ("acknowledged" if acknowledged_at else "firing")
    record: dict[str, Any] = {
        "id": alert_id,
        "fingerprint": fingerprint,
        "name": f"name-{fingerprint}",
        "severity": severity,
        "status": status,
        "source": source,
        "service": service,
        "summary": "",
        "labels": {"team": team} if team else {},
        "annotations": {},
        "producer": producer,
        "count": count,
        "first_seen": _rfc3339(first_seen),
        "last_seen": _rfc3339(last),
        "first_seen_ts": first_seen,
        "last_seen_ts": last,
        "updated_ts": updated,
        "acknowledged_at": _rfc3339(acknowledged_at) if acknowledged_at else None,
        "resolved_at": _rfc3339(resolved_at) if resolved_at else None,
    }
    pipe = client.pipeline()
    pipe.set(keys.alert(alert_id), json.dumps(record))
    pipe.zadd("tocsin:idx:all", {alert_id: updated})
    pipe.zadd(f"tocsin:idx:status:{status}", {alert_id: updated})
    pipe.zadd(f"tocsin:idx:severity:{severity}", {alert_id: updated})
    if service:
        pipe.zadd(f"tocsin:idx:service:{service}", {alert_id: updated})
    if team:
        pipe.zadd(f"tocsin:idx:team:{team}", {alert_id: updated})
    if status != "resolved":
        pipe.zadd("tocsin:open", {alert_id: last})
    entries = timeline or [("firing", first_seen)] + (
        [("resolved", resolved_at)] if resolved_at else []
    )
    for seq, (kind, at) in enumerate(entries, 1):
        pipe.rpush(
            keys.timeline(alert_id),
            json.dumps({"seq": seq, "kind": kind, "at": _rfc3339(at), "by": "", "comment": ""}),
        )
    pipe.execute()


def seed_attempt(client: redis.Redis, alert_id: str, receiver: str, outcome: str) -> None:
    entry = {"notification_id": "n", "receiver": receiver, "receiver_type": "webhook",
             "group_key": "g", "status": "firing", "outcome": outcome, "attempt": 0,
             "at": time.time()}  # fmt: skip
    client.lpush(f"tocsin:notify:alertlog:{alert_id}", json.dumps(entry))


def seed_analytics_day(client: redis.Redis) -> None:
    """Four alerts first seen on 2026-11-20, one the day before, one the day after."""
    fp1 = dict(fingerprint="fp-api", severity="critical", service="api", team="core",
               source="prometheus")  # fmt: skip
    start = _ts("2026-11-20T01:00:00")
    seed_alert(client, "a1", **fp1, first_seen=start, count=3,
               acknowledged_at=start + 60, resolved_at=start + 600)  # fmt: skip
    start = _ts("2026-11-20T05:00:00")
    seed_alert(client, "a2", **fp1, first_seen=start, count=2,
               acknowledged_at=start + 120, resolved_at=start + 1200)  # fmt: skip
    start = _ts("2026-11-20T10:00:00")
    seed_alert(client, "a3", fingerprint="fp-db", severity="warning", service="db",
               team="data", source="grafana", first_seen=start, count=10,
               acknowledged_at=start + 30)  # fmt: skip
    start = _ts("2026-11-20T23:59:59")
    seed_alert(client, "a4", fingerprint="fp-script", severity="info", producer="script",
               first_seen=start, resolved_at=start + 10)  # fmt: skip
    # Changed on the day but first seen before it; first seen the day after.
    seed_alert(client, "a0", fingerprint="fp-old", severity="critical",
               first_seen=_ts("2026-11-19T23:00:00"),
               resolved_at=_ts("2026-11-20T00:30:00"))  # fmt: skip
    seed_alert(client, "a5", fingerprint="fp-new", severity="critical",
               first_seen=_ts("2026-11-21T00:00:01"))  # fmt: skip
    seed_attempt(client, "a1", "ops-slack", "sent")
    seed_attempt(client, "a1", "ops-webhook", "failed-temporary")
    seed_attempt(client, "a1", "ops-webhook", "dead-lettered:retries-exhausted")
    seed_attempt(client, "a3", "ops-slack", "sent")
    seed_attempt(client, "a0", "ops-slack", "sent")  # not the day's alert


def test_daily_analytics_of_seeded_day_counts_times_notifications_and_noisy_fingerprints(
    redis_server: RedisServer,
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    seed_analytics_day(client)

    report = compute_daily(client, date(2026, 11, 20), top_n=2, batch=2)

    assert report["alerts"] == 4
    assert report["occurrences"] == 16
    assert report["by_severity"] == {"critical": 2, "info": 1, "warning": 1}
    assert report["by_service"] == {"(none)": 1, "api": 2, "db": 1}
    assert report["by_team"] == {"(none)": 1, "core": 2, "data": 1}
    assert report["by_source"] == {"grafana": 1, "prometheus": 2, "script": 1}
    assert report["time_to_acknowledge"] == {"count": 3, "mean_seconds": 70.0, "p95_seconds": 120.0}
    assert report["time_to_resolve"] == {
        "count": 3, "mean_seconds": 603.333, "p95_seconds": 1200.0,
    }  # fmt: skip
    assert report["notifications"] == {
        "available": True,
        "sent": 2,
        "failed": 1,
        "retried": 1,
        "by_receiver": {
            "ops-slack": {"sent": 2, "failed": 0, "retried": 0},
            "ops-webhook": {"sent": 0, "failed": 1, "retried": 1},
        },
    }
    noisy = [(f["fingerprint"], f["occurrences"], f["incidents"])
             for f in report["top_noisy_fingerprints"]]  # fmt: skip
    assert noisy == [("fp-db", 10, 1), ("fp-api", 5, 2)]


def test_daily_analytics_without_notification_log_reports_zeros_and_says_so(
    redis_server: RedisServer,
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    seed_alert(client, "b1", fingerprint="fp", first_seen=_ts("2026-11-20T12:00:00"))

    report = compute_daily(client, date(2026, 11, 20))

    assert report["alerts"] == 1
    assert report["notifications"]["available"] is False
    assert report["notifications"]["sent"] == report["notifications"]["failed"] == 0


def test_alert_walk_meets_every_alert_once_across_pages_of_equal_change_times(
    redis_server: RedisServer,
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    for index in range(7):
        seed_alert(client, f"tie{index}", fingerprint="fp", first_seen=1000.0)
    seed_alert(client, "later", fingerprint="fp", first_seen=2000.0)
    seed_alert(client, "before", fingerprint="fp", first_seen=500.0)

    walked = [a.id for a in alertdata.alerts_changed_since(client, 1000.0, batch=2)]

    assert sorted(walked) == sorted([f"tie{i}" for i in range(7)] + ["later"])


def seed_patterns(client: redis.Redis, now: float) -> None:
    # Flapping: four incidents of one fingerprint in the last hour, each resolved.
    for i in range(4):
        start = now - 3000 + i * 600
        seed_alert(client, f"flap{i}", fingerprint="fp-flap", service="web",
                   first_seen=start, resolved_at=start + 60)  # fmt: skip
    # Storm: 25 new alerts for `db` in the last five minutes, none before.
    for i in range(25):
        seed_alert(client, f"storm{i}", fingerprint=f"fp-storm-{i}", service="db",
                   first_seen=now - 200 + i)  # fmt: skip
    # Not a storm: `cache` has 20 new alerts, but its baseline rate is 5 per five
    # minutes (55 over the 55 minutes before), and 20 is not over 5 x 5.
    for i in range(55):
        seed_alert(client, f"steady{i}", fingerprint=f"fp-steady-{i}", service="cache",
                   first_seen=now - 3500 + i * 50)  # fmt: skip
    for i in range(20):
        seed_alert(client, f"busy{i}", fingerprint=f"fp-busy-{i}", service="cache",
                   first_seen=now - 250 + i)  # fmt: skip
    # Noisy source: 50 occurrences, 49 of them duplicates.
    seed_alert(client, "noisy", fingerprint="fp-noisy", source="chatty", service="batch",
               first_seen=now - 1000, last_seen=now - 10, count=50)  # fmt: skip
    # Recurring: fired at 03:xx UTC on three different days (and once at another hour).
    base = datetime.fromtimestamp(now - 5 * 86400, UTC).replace(hour=3, minute=10)
    for day in range(3):
        start = base.timestamp() + day * 86400
        seed_alert(client, f"cron{day}", fingerprint="fp-cron", service="backup",
                   first_seen=start, resolved_at=start + 300)  # fmt: skip
    other = base.timestamp() - 86400 + 7200
    seed_alert(client, "cron-other", fingerprint="fp-cron", service="backup",
               first_seen=other, resolved_at=other + 300)  # fmt: skip


def test_pattern_detection_finds_the_seeded_flapping_storm_noisy_source_and_recurring_alert(
    redis_server: RedisServer,
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    seconds, _ = client.time()
    now = float(seconds)
    seed_patterns(client, now)
    system = client.pubsub()
    system.subscribe("tocsin:live:system")
    system.get_message(timeout=1.0)  # the subscribe confirmation

    counts = run_pattern_detection(client, now, PatternRules(), batch=7, run_id="test-run")

    assert counts == {"flapping": 1, "storms": 1, "noisy_sources": 1, "recurring": 1}
    stored = json.loads(client.get("tocsin:patterns") or b"{}")
    assert stored["run_id"] == "test-run"
    assert [(f["fingerprint"], f["fired"], f["resolved"]) for f in stored["flapping"]] == [
        ("fp-flap", 4, 4)
    ]
    assert [(s["service"], s["alerts"], s["baseline"]) for s in stored["storms"]] == [
        ("db", 25, 0.0)
    ]
    assert [(n["source"], n["occurrences"], n["duplicates"]) for n in stored["noisy_sources"]] == [
        ("chatty", 50, 49)
    ]
    assert [(r["fingerprint"], r["hour_utc"], len(r["days"])) for r in stored["recurring"]] == [
        ("fp-cron", 3, 3)
    ]
    message = system.get_message(timeout=5.0)
    assert message is not None
    frame = json.loads(message["data"])
    assert frame["channel"] == "system"
    assert frame["data"]["type"] == "patterns.detected"


def test_retention_removes_exactly_what_is_past_retention_in_small_batches(
    redis_server: RedisServer,
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    seconds, _ = client.time()
    now = float(seconds)
    day = 86400.0
    old = [f"old{i}" for i in range(7)]
    recent = [f"new{i}" for i in range(3)]
    for i, alert_id in enumerate(old):
        seed_alert(client, alert_id, fingerprint=f"fo{i}", service="api", team="core",
                   first_seen=now - 40 * day, resolved_at=now - 31 * day)  # fmt: skip
        seed_attempt(client, alert_id, "ops", "sent")
    for i, alert_id in enumerate(recent):
        seed_alert(client, alert_id, fingerprint=f"fn{i}", service="api", team="core",
                   first_seen=now - 40 * day, last_seen=now - 29 * day)  # fmt: skip
        seed_attempt(client, alert_id, "ops", "sent")
    # A channel stream: five frames from ten days ago, four from today.
    for offset in range(1, 10):
        at = now - 10 * day if offset <= 5 else now - 60
        frame = json.dumps({"type": "event", "channel": "alerts", "offset": offset,
                            "data": {"type": "alert.created", "received_at": at}})  # fmt: skip
        client.xadd("tocsin:stream:alerts", {"f": frame}, id=f"{offset}-1")

    removed = enforce_retention(
        client, now, RetentionPolicy(alert_seconds=30 * day, stream_seconds=7 * day, batch=2)
    )

    assert removed == {"alerts_removed": 7, "stream_entries_removed": 5, "streams": 1}
    for alert_id in old:
        assert not client.exists(
            keys.alert(alert_id), keys.timeline(alert_id),
            keys.notification_log(alert_id),
        )  # fmt: skip
    for alert_id in recent:
        assert client.exists(keys.alert(alert_id), keys.timeline(alert_id)) == 2
        assert client.exists(keys.notification_log(alert_id))
    for index in ("tocsin:idx:all", "tocsin:idx:service:api", "tocsin:idx:team:core",
                  "tocsin:idx:severity:warning"):  # fmt: skip
        assert sorted(m.decode() for m in client.zrange(index, 0, -1)) == sorted(recent)
    assert client.zcard("tocsin:idx:status:resolved") == 0
    assert [e[0].decode() for e in client.xrange("tocsin:stream:alerts")] == [
        f"{offset}-1" for offset in range(6, 10)
    ]


def test_cache_health_reports_hit_rate_from_health_signals_and_redis_memory(
    redis_server: RedisServer,
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    seconds, _ = client.time()
    minute = int(seconds) // 60
    # Two recent minutes of cache lookups counted by the processes, one too old to count.
    client.hset(f"tocsin:health:signals:{minute}", mapping={"cache_hits": 50, "cache_misses": 10})
    client.hset(
        f"tocsin:health:signals:{minute - 2}", mapping={"cache_hits": 30, "cache_misses": 10}
    )
    client.hset(
        f"tocsin:health:signals:{minute - 9}", mapping={"cache_hits": 0, "cache_misses": 99}
    )

    summary = check_cache_health(client, float(seconds))

    report = json.loads(client.get("tocsin:health:cache") or b"{}")
    assert summary == {"hit_rate": 0.8, "evicted_keys": 0}
    assert (report["cache_hits"], report["cache_misses"], report["hit_rate"]) == (80, 20, 0.8)
    assert report["used_memory_bytes"] > 0
    assert report["evicted_keys"] == 0
    assert 0 <= report["latency"]["p50_ms"] <= report["latency"]["max_ms"]


def test_scheduled_analytics_is_served_by_gateway_and_schedules_are_listed_by_api_and_cli(
    redis_server: RedisServer, start_service: ServiceFactory, user_token: Callable[..., str]
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    seed_analytics_day(client)
    schedules = [
        {"name": "analytics_now", "job": "daily_analytics", "cron": "* * * * * *",
         "catch_up": "skip", "params": {"date": "2026-11-20"}},
        {"name": "nightly", "job": "retention", "cron": "0 3 * * *", "timezone": "Europe/Paris"},
    ]  # fmt: skip
    start_service("scheduler", TOCSIN_SCHEDULES=json.dumps(schedules), TOCSIN_TICK_MS="100")
    gateway = start_service("gateway")
    headers = {"authorization": f"Bearer {user_token(scopes=('read',))}"}

    def analytics_done() -> bool:
        outcome = client.hget("tocsin:sched:state:analytics_now", "last_outcome")
        return outcome == b"ok" and client.exists("tocsin:analytics:daily:2026-11-20") == 1

    wait_until(analytics_done, DEADLINE, "the analytics job to store its report")
    response = httpx.get(f"{gateway.url}/v1/analytics/daily", params={"date": "2026-11-20"},
                         headers=headers)  # fmt: skip
    assert response.status_code == 200
    assert response.json()["by_severity"] == {"critical": 2, "info": 1, "warning": 1}
    missing = httpx.get(f"{gateway.url}/v1/analytics/daily", params={"date": "2020-01-01"},
                        headers=headers)  # fmt: skip
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    bad = httpx.get(f"{gateway.url}/v1/analytics/daily", params={"date": "yesterday"},
                    headers=headers)  # fmt: skip
    assert bad.status_code == 400
    assert httpx.get(f"{gateway.url}/v1/schedules").status_code == 401

    listed = httpx.get(f"{gateway.url}/v1/schedules", headers=headers).json()["schedules"]
    by_name = {s["name"]: s for s in listed}
    assert set(by_name) == {"analytics_now", "nightly"}
    assert by_name["analytics_now"]["last_outcome"] == "ok"
    assert by_name["analytics_now"]["last_fire_at"] is not None
    assert by_name["nightly"]["timezone"] == "Europe/Paris"
    assert by_name["nightly"]["next_fire_at"].endswith(("01:00:00Z", "02:00:00Z"))
    patterns = httpx.get(f"{gateway.url}/v1/patterns", headers=headers)
    assert patterns.status_code == 200
    assert patterns.json()["flapping"] == []

    cli = subprocess.run(
        [sys.executable, "-m", "tocsin.client", "schedules", "list", "--redis-url",
         redis_server.url],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    lines = cli.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "JOB", "CRON"]
    assert [line.split()[0] for line in lines[1:]] == ["analytics_now", "nightly"]


def test_daily_analytics_reads_alerts_stored_by_the_real_ingest_and_processor(
    redis_server: RedisServer, start_service: ServiceFactory, user_token: Callable[..., str]
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    start_service("processor")
    ingest = start_service("ingest")
    gateway = start_service("gateway")
    key, _ = ApiKeyStore(client).create("scheduler-test")
    producer = {"authorization": f"Bearer {key}"}
    user = {"authorization": f"Bearer {user_token()}"}
    disk = {"name": "DiskFull", "severity": "critical", "service": "db", "source": "prom",
            "labels": {"team": "core"}}  # fmt: skip
    for alert in (disk, disk, disk, {"name": "CPU", "severity": "warning", "service": "api"}):
        response = httpx.post(f"{ingest.url}/v1/alerts", json=alert, headers=producer, timeout=10)
        assert response.status_code == 202, response.text

    def stored(status: str, count: int) -> Callable[[], bool]:
        return lambda: client.zcard(f"tocsin:idx:status:{status}") == count

    wait_until(stored("firing", 2), DEADLINE, "two alerts stored by the processor")
    disk_id = client.zrange("tocsin:idx:severity:critical", 0, -1)[0].decode()
    wait_until(lambda: json.loads(client.get(keys.alert(disk_id)) or b"{}").get("count") == 3,
               DEADLINE, "the duplicates counted")  # fmt: skip
    for action in ("ack", "resolve"):
        response = httpx.post(f"{gateway.url}/v1/alerts/{disk_id}/{action}", headers=user)
        assert response.status_code == 202, response.text
        wait_until(stored("acknowledged" if action == "ack" else "resolved", 1), DEADLINE, action)

    first_seen = json.loads(client.get(keys.alert(disk_id)) or b"{}")["first_seen_ts"]
    today = datetime.fromtimestamp(first_seen, UTC).date().isoformat()
    schedules = [{"name": "analytics_today", "job": "daily_analytics", "cron": "* * * * * *",
                  "catch_up": "skip", "params": {"date": today}}]  # fmt: skip
    start_service("scheduler", TOCSIN_SCHEDULES=json.dumps(schedules), TOCSIN_TICK_MS="100")
    wait_until(
        lambda: client.exists(f"tocsin:analytics:daily:{today}") == 1, DEADLINE, "the analytics"
    )
    report = httpx.get(f"{gateway.url}/v1/analytics/daily", params={"date": today},
                       headers=user).json()  # fmt: skip

    assert report["alerts"] == 2
    assert report["occurrences"] == 4
    assert report["by_severity"] == {"critical": 1, "warning": 1}
    assert report["by_team"] == {"(none)": 1, "core": 1}
    assert report["by_source"]["prom"] == 1
    assert report["time_to_acknowledge"]["count"] == 1
    assert report["time_to_resolve"]["count"] == 1
    assert report["top_noisy_fingerprints"][0]["name"] == "DiskFull"
    assert report["top_noisy_fingerprints"][0]["occurrences"] == 3
