"""Scheduler figures: claim cost, fire-to-finish latency across replicas, retention speed.

`make bench BENCH=scheduler`. Everything runs on loopback against a private
Redis-compatible server and stops by itself in well under a minute:

1. claims: one client claiming distinct fire times through claims/claim.lua;
2. replicas: three scheduler processes with a one-second schedule for ten
   seconds; latency is fire time -> the run's history entry (Redis time);
3. patterns: detection over 20 000 alerts (with timelines) spread over the
   fourteen-day look-back;
4. retention: 10 000 alerts past retention removed in batches of 200, with the
   longest single Redis command taken from SLOWLOG.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import redis

from tocsin.client.devserver import RedisServer, free_port
from tocsin.common import keys
from tocsin.scheduler.claims import RunClaims
from tocsin.scheduler.jobs import Run
from tocsin.scheduler.patterns import PatternRules, run_pattern_detection
from tocsin.scheduler.retention import RetentionPolicy, enforce_retention

CLAIMS = 5000
REPLICAS = 3
REPLICA_SECONDS = 10
RETENTION_ALERTS = 10_000
PATTERN_ALERTS = 20_000


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_claims(url: str) -> list[tuple[str, str]]:
    client = redis.Redis.from_url(url)
    claims = RunClaims(client, "bench", 3600)
    samples = []
    started = time.perf_counter()
    for fire in range(1, CLAIMS + 1):
        run = Run(run_id=f"bench@{fire}", schedule="bench", job="cache_health", fire=fire)
        t0 = time.perf_counter()
        claims.claim(run, fire + 1)
        samples.append((time.perf_counter() - t0) * 1e6)
        claims.enqueued(run)
    elapsed = time.perf_counter() - started
    return [
        ("claims per second (one client, claim + confirm)", f"{CLAIMS / elapsed:,.0f}"),
        ("claim p50 / p99 (us)", f"{_pct(samples, 0.5):.0f} / {_pct(samples, 0.99):.0f}"),
    ]


def bench_replicas(url: str) -> list[tuple[str, str]]:
    schedule = [{"name": "tick", "job": "cache_health", "cron": "* * * * * *"}]
    logs = Path(tempfile.mkdtemp(prefix="tocsin-bench-scheduler-"))
    processes = []
    for index in range(REPLICAS):
        env = dict(os.environ, REDIS_URL=url, TOCSIN_PORT=str(free_port()),
                   TOCSIN_SCHEDULES=json.dumps(schedule), TOCSIN_LOG_LEVEL="WARNING")  # fmt: skip
        with (logs / f"scheduler-{index}.log").open("wb") as log:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tocsin.client", "scheduler"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    client = redis.Redis.from_url(url)
    # Measure from the first run, so process start-up is not counted.
    deadline = time.monotonic() + 60
    while client.xlen("tocsin:sched:history") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(REPLICA_SECONDS)
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        process.wait(30)
    entries = client.xrange("tocsin:sched:history")
    latencies = []
    fires: Counter[int] = Counter()
    workers: Counter[str] = Counter()
    for entry_id, fields in entries:
        fire = int(fields[b"fire"])
        fires[fire] += 1
        workers[fields[b"worker"].decode()] += 1
        latencies.append(int(entry_id.split(b"-")[0]) - fire * 1000)
    span = range(min(fires), max(fires) + 1) if fires else range(0)
    missing = sum(1 for fire in span if fires[fire] == 0)
    twice = sum(1 for count in fires.values() if count > 1)
    return [
        (f"runs in {REPLICA_SECONDS} s, {REPLICAS} replicas", str(len(entries))),
        ("fire times missing / run twice", f"{missing} / {twice}"),
        ("runs per replica", " ".join(str(n) for n in sorted(workers.values()))),
        (
            "fire -> run finished p50 / p95 / max (ms)",
            f"{statistics.median(latencies):.0f} / {_pct(latencies, 0.95):.0f} / "
            f"{max(latencies):.0f}"
            if latencies
            else "-",
        ),
    ]


def bench_patterns(url: str) -> list[tuple[str, str]]:
    client = redis.Redis.from_url(url)
    now = float(client.time()[0])
    span = 14 * 86400
    pipe = client.pipeline(transaction=False)
    for index in range(PATTERN_ALERTS):
        alert_id = f"a{index:06d}"
        at = now - span + span * index / PATTERN_ALERTS
        record = {"id": alert_id, "fingerprint": f"fp{index % 2000}", "severity": "warning",
                  "status": "resolved", "service": f"svc{index % 20}", "source": "bench",
                  "labels": {}, "count": 1 + index % 3, "first_seen_ts": at,
                  "last_seen_ts": at, "updated_ts": at}  # fmt: skip
        pipe.set(keys.alert(alert_id), json.dumps(record))
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
        pipe.rpush(keys.timeline(alert_id), json.dumps({"kind": "firing", "at": stamp}))
        pipe.zadd("tocsin:idx:all", {alert_id: at})
        if index % 1000 == 999:
            pipe.execute()
    pipe.execute()
    started = time.perf_counter()
    counts = run_pattern_detection(client, now, PatternRules(), batch=200, run_id="bench")
    elapsed = time.perf_counter() - started
    return [
        (f"pattern detection over {PATTERN_ALERTS:,} alerts (s)", f"{elapsed:.2f}"),
        ("findings (flapping/storms/noisy/recurring)", "/".join(str(n) for n in counts.values())),
    ]


def bench_retention(url: str) -> list[tuple[str, str]]:
    client = redis.Redis.from_url(url)
    now = float(client.time()[0])
    old = now - 40 * 86400
    pipe = client.pipeline(transaction=False)
    for index in range(RETENTION_ALERTS):
        alert_id = f"old{index:06d}"
        record = {"id": alert_id, "fingerprint": f"fp{index % 500}", "severity": "warning",
                  "status": "resolved", "service": f"svc{index % 20}", "labels": {},
                  "first_seen_ts": old, "last_seen_ts": old, "updated_ts": old}  # fmt: skip
        pipe.set(keys.alert(alert_id), json.dumps(record))
        pipe.rpush(keys.timeline(alert_id), '{"kind":"firing","at":"2026-01-01T00:00:00Z"}')
        pipe.zadd("tocsin:idx:all", {alert_id: old})
        pipe.zadd(f"tocsin:idx:service:svc{index % 20}", {alert_id: old})
        if index % 1000 == 999:
            pipe.execute()
    pipe.execute()
    client.config_set("slowlog-log-slower-than", 0)
    client.slowlog_reset()
    client.config_set("slowlog-max-len", 1_000_000)
    started = time.perf_counter()
    removed = enforce_retention(
        client, now, RetentionPolicy(alert_seconds=30 * 86400, stream_seconds=7 * 86400)
    )
    elapsed = time.perf_counter() - started
    log = [e for e in client.slowlog_get(1_000_000) if not e["command"].startswith(b"SLOWLOG")]
    slowest = max(log, key=lambda entry: entry["duration"])
    durations = [entry["duration"] for entry in log]
    client.config_set("slowlog-log-slower-than", 10_000)
    return [
        ("alerts removed", f"{removed['alerts_removed']:,}"),
        ("retention alerts per second", f"{removed['alerts_removed'] / elapsed:,.0f}"),
        ("Redis commands during retention", f"{len(durations):,}"),
        (
            "command p99 / longest (us)",
            f"{_pct(durations, 0.99):.0f} / {slowest['duration']} "
            f"({slowest['command'][:40].decode()})",
        ),
    ]


def main() -> None:
    rows: list[tuple[str, str]] = []
    with RedisServer() as server:
        rows += bench_claims(server.url)
    with RedisServer() as server:
        rows += bench_replicas(server.url)
    with RedisServer() as server:
        rows += bench_patterns(server.url)
    with RedisServer() as server:
        rows += bench_retention(server.url)
    width = max(len(name) for name, _ in rows)
    print(f"{'figure'.ljust(width)}  value")
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")


if __name__ == "__main__":
    main()
