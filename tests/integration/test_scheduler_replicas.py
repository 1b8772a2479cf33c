"""Scheduler replicas against a real Redis: every fire time runs once, missed ones by policy.

The issue asks for a minute of one-second fire times; these tests run about
twenty seconds of them to keep the suite short (the property checked is the
same for every second: one run per fire time, across a SIGKILL).
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from datetime import UTC, datetime

import pytest
import redis
from conftest import ServiceFactory, ServiceProcess
from tests.support import wait_until

from tocsin.client.devserver import RedisServer
from tocsin.common.broker import build_broker, build_message
from tocsin.scheduler.schedule import Schedule

pytestmark = pytest.mark.integration

# Deadlines are generous: the machine is shared and slow moments must not fail a test.
DEADLINE = 60.0


def _env(schedules: list[dict[str, object]], **extra: str) -> dict[str, str]:
    env = {
        "TOCSIN_SCHEDULES": json.dumps(schedules),
        "TOCSIN_TICK_MS": "100",
        # A slow moment on a shared machine must not turn due fire times into misfires.
        "TOCSIN_MISFIRE_GRACE_SECONDS": "60",
        "TOCSIN_REDISPATCH_AFTER_SECONDS": "2",
        "TOCSIN_QUEUE_HEARTBEAT_TIMEOUT_MS": "2000",
        "TOCSIN_JOB_TIME_LIMIT_SECONDS": "2",
        "TOCSIN_LOG_FORMAT": "json",
    }
    env.update(extra)
    return env


def _runs(client: redis.Redis, schedule: str) -> list[dict[str, str]]:
    entries = client.xrange("tocsin:sched:history")
    runs = [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]
    return [r for r in runs if r["schedule"] == schedule]


def _last_fired(client: redis.Redis, schedule: str) -> int:
    raw = client.hget(f"tocsin:sched:state:{schedule}", "last_fired")
    return int(raw) if raw else 0


def test_three_replicas_run_every_fire_time_once_across_a_sigkill_of_the_last_firer(
    redis_server: RedisServer, start_service: ServiceFactory
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    env = _env([{"name": "tick", "job": "cache_health", "cron": "* * * * * *"}])
    replicas = [start_service("scheduler", wait=False, **env) for _ in range(3)]
    for replica in replicas:
        replica.wait_ready()

    wait_until(lambda: len(_runs(client, "tick")) >= 8, DEADLINE, "eight runs before the kill")
    firer = client.hget("tocsin:sched:state:tick", "last_replica")
    assert firer is not None
    victim: ServiceProcess = next(
        r for r in replicas if firer.decode().endswith(f":{r.process.pid}")
    )
    victim.signal(signal.SIGKILL)
    victim.process.wait()
    killed_at = _last_fired(client, "tick")

    # Ten more fire times after the kill, handled by the two survivors.
    wait_until(
        lambda: _last_fired(client, "tick") >= killed_at + 10, DEADLINE, "fire times after the kill"
    )
    end = _last_fired(client, "tick") - 1
    first = min(int(r["fire"]) for r in _runs(client, "tick"))

    def all_ran() -> bool:
        done = {int(r["fire"]) for r in _runs(client, "tick") if r["outcome"] == "ok"}
        return all(fire in done for fire in range(first, end + 1))

    # A run in flight on the killed replica is requeued after the heartbeat timeout.
    wait_until(all_ran, DEADLINE, "every fire time to have run")
    ok = Counter(int(r["fire"]) for r in _runs(client, "tick") if r["outcome"] == "ok")
    span = range(first, end + 1)
    assert [fire for fire in span if ok[fire] != 1] == []
    assert all(count == 1 for count in ok.values())
    # The checked fire times straddle the kill: about eight before it and ten after.
    assert first < killed_at < end
    assert len(span) >= 15
    survivors = {r["worker"] for r in _runs(client, "tick") if int(r["fire"]) > killed_at + 1}
    assert survivors
    assert all(not w.endswith(f":{victim.process.pid}") for w in survivors)


def _yearly_fire_times() -> tuple[int, int]:
    """The last two New Year fire times before now (UTC)."""
    schedule = Schedule("year", "cache_health", "0 0 0 1 1 *")
    latest = int(schedule.latest_at_or_before(time.time()))
    previous = int(schedule.latest_at_or_before(latest - 1))
    return previous, latest


def test_missed_fire_time_is_caught_up_once_on_start_and_skipped_under_skip_policy(
    redis_server: RedisServer, start_service: ServiceFactory
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    previous, latest = _yearly_fire_times()
    # Both schedules last fired before `previous`: two New Years were missed.
    for name in ("yearly_once", "yearly_skip"):
        client.hset(f"tocsin:sched:state:{name}", "last_fired", previous - 86400)
    env = _env(
        [
            {"name": "yearly_once", "job": "cache_health", "cron": "0 0 0 1 1 *"},
            {"name": "yearly_skip", "job": "cache_health", "cron": "0 0 0 1 1 *",
             "catch_up": "skip"},
            # A one-second schedule shows the replica has been ticking.
            {"name": "tick", "job": "cache_health", "cron": "* * * * * *"},
        ]
    )  # fmt: skip
    first = start_service("scheduler", **env)
    wait_until(lambda: len(_runs(client, "yearly_once")) >= 1, DEADLINE, "the catch-up run")
    wait_until(lambda: len(_runs(client, "tick")) >= 3, DEADLINE, "a few ticks after the catch-up")
    first.stop()

    # A restart owes nothing: the catch-up is recorded as the last fired time.
    start_service("scheduler", **env)
    ticks = len(_runs(client, "tick"))
    wait_until(
        lambda: len(_runs(client, "tick")) >= ticks + 3, DEADLINE, "ticks of the restarted replica"
    )

    once = _runs(client, "yearly_once")
    expected = "yearly_once@" + datetime.fromtimestamp(latest, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [r["run_id"] for r in once] == [expected]
    assert once[0]["outcome"] == "ok"
    assert _runs(client, "yearly_skip") == []
    skip_state = client.hgetall("tocsin:sched:state:yearly_skip")
    assert int(skip_state[b"last_fired"]) == latest
    assert int(skip_state[b"last_skipped"]) == latest
    assert _last_fired(client, "yearly_once") == latest


def test_run_left_running_by_a_dead_worker_runs_once_when_its_lease_lapses(
    redis_server: RedisServer, start_service: ServiceFactory
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    run_id = "probe@2026-11-26T00:00:00Z"
    run = {"run_id": run_id, "schedule": "probe", "job": "cache_health", "fire": 1795651200,
           "params": {}}  # fmt: skip
    # A worker that died mid-run left its mark (for as long as a job may run) and its
    # lease, which nobody renews any more; its message was requeued.
    client.set(f"tocsin:sched:run:{run_id}", "running dead-worker", px=300_000)
    seconds, micros = client.time()
    lapses_ms = seconds * 1000 + micros // 1000 + 4000
    client.zadd("tocsin:sched:leases", {run_id: lapses_ms})
    client.hset("tocsin:sched:pending", run_id, json.dumps(run))
    broker = build_broker(redis_server.url, queues=("maintenance",))
    message = build_message("maintenance", "scheduled_cache_health", (run,))
    broker.enqueue(message)

    start_service("scheduler", **_env([]))
    wait_until(lambda: len(_runs(client, "probe")) == 1, DEADLINE, "the run after the lease")
    assert client.get(f"tocsin:sched:run:{run_id}") == b"done"
    (entry_id, _), *_ = client.xrange("tocsin:sched:history")
    assert int(entry_id.split(b"-")[0]) >= lapses_ms

    # A late copy of a finished run (a rescue, a redelivery) is dropped.
    broker.enqueue(build_message("maintenance", "scheduled_cache_health", (run,)))
    broker.enqueue(build_message("maintenance", "scheduled_cache_health", (run,)))
    queue = "tocsin:dramatiq:maintenance"
    wait_until(
        lambda: client.llen(queue) == 0 and client.hlen(f"{queue}.msgs") == 0,
        DEADLINE,
        "the copies",
    )
    assert [r["outcome"] for r in _runs(client, "probe")] == ["ok"]
    assert client.zcard("tocsin:sched:leases") == 0  # finished: nothing left to re-dispatch
    assert client.hlen("tocsin:sched:pending") == 0


def test_a_failing_run_is_retried_then_given_up_and_leaves_no_lease_behind(
    redis_server: RedisServer, start_service: ServiceFactory
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    run_id = "broken@2026-11-26T00:00:00Z"
    # An impossible date makes the analytics job raise on every attempt.
    run = {"run_id": run_id, "schedule": "broken", "job": "daily_analytics",
           "fire": 1795651200, "params": {"date": "not-a-date"}}  # fmt: skip
    broker = build_broker(redis_server.url, queues=("analytics",))
    broker.enqueue(build_message("analytics", "scheduled_daily_analytics", (run,)))

    start_service("scheduler", **_env([], TOCSIN_JOB_MAX_RETRIES="1"))
    wait_until(lambda: len(_runs(client, "broken")) == 2, DEADLINE, "the run and its retry")
    # Retries exhausted: the run is given up, so its lease goes rather than re-dispatch it.
    wait_until(
        lambda: client.zcard("tocsin:sched:leases") == 0, DEADLINE, "the lease to be dropped"
    )
    assert [r["outcome"] for r in _runs(client, "broken")] == ["failed", "failed"]
    assert client.hlen("tocsin:sched:pending") == 0
    assert client.get(f"tocsin:sched:run:{run_id}") is None
    time.sleep(4.0)  # longer than the lease: nothing dispatches it again
    assert len(_runs(client, "broken")) == 2
