"""Retention against alerts the real processor wrote: only ended alerts go.

Real processes (ingest -> queue -> processor) write the alerts; the retention
job runs on the same Redis with its `now` set past the retention age, so no
test waits for days. The rule under test (docs/storage.md): an alert that is
still open keeps its record and its fingerprint state however long it fires;
a resolved alert whose last change is older than the retention age goes, with
everything keyed by it and its fingerprint state. The fingerprint state has no
expiry of its own, so retention is the one thing that ends it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis
from tests.integration.test_scheduler_jobs import seed_alert
from tests.support import wait_until

from tocsin.client.devserver import RedisServer
from tocsin.common import keys
from tocsin.common.apikeys import ApiKeyStore
from tocsin.scheduler.retention import RetentionPolicy, enforce_retention

pytestmark = pytest.mark.integration

DEADLINE = 60.0
DAY = 86400.0


def _records(client: redis.Redis) -> dict[str, dict[str, Any]]:
    """Every stored alert record by name (one alert per name in these tests)."""
    members: list[bytes] = client.zrange(keys.alert_index(), 0, -1)  # type: ignore[assignment]
    ids = [m.decode() for m in members]
    raws = client.mget([keys.alert(i) for i in ids]) if ids else []
    found = [json.loads(raw) for raw in raws if raw]
    return {record["name"]: record for record in found}


def _record(client: redis.Redis, name: str, **wanted: Any) -> dict[str, Any]:
    """Wait for the alert `name` to be stored with the `wanted` field values."""
    holder: dict[str, Any] = {}

    def stored() -> bool:
        record = _records(client).get(name)
        if record and all(record.get(k) == v for k, v in wanted.items()):
            holder["record"] = record
            return True
        return False

    wait_until(stored, DEADLINE)
    record: dict[str, Any] = holder["record"]
    return record


def test_retention_keeps_long_firing_alerts_and_removes_old_resolved_ones(
    start_service: Callable[..., Any], redis_server: RedisServer
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    start_service("processor")
    ingest = start_service("ingest")
    key, _ = ApiKeyStore(client).create("retention")

    def post(name: str, status: str = "firing") -> None:
        body = {"name": name, "severity": "critical", "service": "db", "status": status,
                "labels": {"host": name}}  # fmt: skip
        response = httpx.post(f"{ingest.url}/v1/alerts", json=body, timeout=10,
                              headers={"authorization": f"Bearer {key}"})  # fmt: skip
        assert response.status_code == 202, response.text

    post("LongFiring")
    post("Ended")
    firing = _record(client, "LongFiring", count=1)
    post("LongFiring")  # a repeat: no transition, so its last-change score stays put
    firing = _record(client, "LongFiring", count=2)
    post("Ended", "resolved")
    ended = _record(client, "Ended", status="resolved")

    # Both alerts last changed "long ago" as the job sees it: past a one-day retention.
    seconds, _ = client.time()
    later = float(seconds) + 3 * DAY
    removed = enforce_retention(
        client, later, RetentionPolicy(alert_seconds=DAY, stream_seconds=30 * DAY, batch=1)
    )

    assert removed["alerts_removed"] == 1
    assert client.exists(keys.alert(firing["id"]), keys.timeline(firing["id"])) == 2
    assert client.hget(keys.dedup(firing["fingerprint"]), "id") == firing["id"].encode()
    # No clock but retention ends it: an open alert may go quiet for longer than the
    # retention (a PagerDuty incident has no deadline) and must still meet its resolve.
    assert client.ttl(keys.dedup(firing["fingerprint"])) == -1
    assert client.zscore(keys.alert_index(), firing["id"]) is not None
    assert client.zscore(keys.open_alerts(), firing["id"]) is not None
    ended_keys = [keys.alert(ended["id"]), keys.timeline(ended["id"]),
                  keys.notification_log(ended["id"]), keys.dedup(ended["fingerprint"])]  # fmt: skip
    assert client.exists(*ended_keys) == 0
    indexes = [
        keys.alert_index(),
        keys.alert_index("status", "resolved"),
        keys.alert_index("severity", "critical"),
        keys.alert_index("service", "db"),
    ]
    for index in indexes:
        assert client.zscore(index, ended["id"]) is None

    # The long-firing alert is still the same incident: a repeat merges, a resolve ends it.
    post("LongFiring")
    assert _record(client, "LongFiring", count=3)["id"] == firing["id"]
    post("LongFiring", "resolved")
    assert _record(client, "LongFiring", status="resolved")["id"] == firing["id"]
    # The removed one starts afresh: a new incident with a new id.
    post("Ended")
    assert _record(client, "Ended", status="firing")["id"] != ended["id"]

    # Once ended and past retention, it goes too; a second run finds nothing more.
    seconds, _ = client.time()
    policy = RetentionPolicy(alert_seconds=DAY, stream_seconds=30 * DAY)
    assert enforce_retention(client, float(seconds) + 3 * DAY, policy)["alerts_removed"] == 1
    assert not client.exists(keys.alert(firing["id"]), keys.dedup(firing["fingerprint"]))
    assert enforce_retention(client, float(seconds) + 3 * DAY, policy)["alerts_removed"] == 0


def test_retention_leaves_alerts_changed_after_resolving_and_newer_incidents_state(
    redis_server: RedisServer,
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    seconds, _ = client.time()
    now = float(seconds)
    # Resolved 40 days ago; its fingerprint has since opened a newer incident.
    seed_alert(client, "old", fingerprint="fp-reopened", first_seen=now - 41 * DAY,
               resolved_at=now - 40 * DAY)  # fmt: skip
    seed_alert(client, "newer", fingerprint="fp-reopened", first_seen=now - 60)
    client.hset(keys.dedup("fp-reopened"), mapping={"id": "newer", "v": "w.1"})
    # Resolved 40 days ago, but its last change (idx:all) is recent: not past retention.
    seed_alert(client, "touched", fingerprint="fp-touched", first_seen=now - 41 * DAY,
               resolved_at=now - 40 * DAY)  # fmt: skip
    client.zadd(keys.alert_index(), {"touched": now - 60})
    client.hset(keys.dedup("fp-touched"), mapping={"id": "touched", "v": "w.2"})
    # Acknowledged and never resolved, untouched for 40 days: open, so kept.
    seed_alert(client, "acked", fingerprint="fp-acked", first_seen=now - 41 * DAY,
               acknowledged_at=now - 40 * DAY)  # fmt: skip

    policy = RetentionPolicy(alert_seconds=30 * DAY, stream_seconds=30 * DAY, batch=1)
    assert enforce_retention(client, now, policy)["alerts_removed"] == 1

    assert not client.exists(keys.alert("old"), keys.timeline("old"))
    assert client.hget(keys.dedup("fp-reopened"), "id") == b"newer"
    assert client.exists(keys.alert("newer"), keys.alert("touched"), keys.alert("acked")) == 3
    assert client.hget(keys.dedup("fp-touched"), "id") == b"touched"
    assert client.zscore(keys.alert_index("status", "resolved"), "touched") is not None


_RETENTION_RUN = """
import sys, redis
from tocsin.scheduler.retention import RetentionPolicy, enforce_retention
client = redis.Redis.from_url(sys.argv[1])
policy = RetentionPolicy(alert_seconds=30 * 86400, stream_seconds=30 * 86400, batch=20)
enforce_retention(client, float(sys.argv[2]), policy)
"""


def test_retention_killed_mid_run_leaves_each_alert_whole_or_gone(
    redis_server: RedisServer,
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    seconds, _ = client.time()
    now = float(seconds)
    ids = [f"ended{i}" for i in range(20_000)]
    pipe = client.pipeline(transaction=False)
    for i, alert_id in enumerate(ids):
        record = {"id": alert_id, "fingerprint": f"fp{i}", "name": "n", "status": "resolved",
                  "severity": "warning", "first_seen_ts": now - 40 * DAY}  # fmt: skip
        pipe.set(keys.alert(alert_id), json.dumps(record))
        pipe.rpush(keys.timeline(alert_id), "{}")
        pipe.hset(keys.dedup(f"fp{i}"), mapping={"id": alert_id, "v": "w"})
        for index in (keys.alert_index(), keys.alert_index("status", "resolved")):
            pipe.zadd(index, {alert_id: now - 40 * DAY})
    pipe.execute()

    run = subprocess.Popen([sys.executable, "-c", _RETENTION_RUN, redis_server.url, repr(now)])
    try:
        wait_until(lambda: client.zcard(keys.alert_index()) < len(ids), DEADLINE)
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait(DEADLINE)
    left = client.zcard(keys.alert_index())
    assert 0 < left < len(ids), "the run was not killed part way; nothing to check"

    pipe = client.pipeline(transaction=False)
    for i, alert_id in enumerate(ids):
        pipe.exists(keys.alert(alert_id), keys.timeline(alert_id), keys.dedup(f"fp{i}"))
        pipe.zscore(keys.alert_index(), alert_id)
        pipe.zscore(keys.alert_index("status", "resolved"), alert_id)
    replies = pipe.execute()
    for n in range(len(ids)):
        present, in_all, in_resolved = replies[3 * n : 3 * n + 3]
        assert (present, in_all is None, in_resolved is None) in {
            (3, False, False),
            (0, True, True),
        }

    # The next run finishes the work.
    policy = RetentionPolicy(alert_seconds=30 * DAY, stream_seconds=30 * DAY)
    assert enforce_retention(client, now, policy)["alerts_removed"] == left
    assert client.zcard(keys.alert_index()) == 0
    assert not client.keys(keys.dedup("*"))
