"""A scheduled run that outruns its time limit is stopped, recorded as failed, its lease dropped.

A real worker process runs the scheduler's run ledger and a job actor with
a 0.5 s time limit whose body would run for a minute.
"""

from __future__ import annotations

import subprocess
import sys

import msgspec
from redis import Redis
from tests.support import wait_until

from tocsin.client.devserver import RedisServer
from tocsin.common import keys
from tocsin.common.queue import enqueue
from tocsin.scheduler.jobs import Run, actor_name

QUEUE = "maintenance"

_WORKER = """
import sys, time
import dramatiq
from redis import Redis
from tocsin.common.broker import build_broker
from tocsin.common.queue import Consumer
from tocsin.scheduler.ledger import RunLedger

url = sys.argv[1]
redis = Redis.from_url(url)
ledger = RunLedger(redis, worker="limited", running_ttl_ms=2_500, lease_ms=30_000,
                   done_ttl_seconds=60, history_cap=100)
broker = build_broker(url, middleware=[ledger], queues=("maintenance",))

@dramatiq.actor(actor_name="scheduled_endless", queue_name="maintenance", broker=broker,
                time_limit=500, max_retries=0)
def endless(raw: dict) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.05)
    redis.set("endless:finished", "1")

Consumer(broker, ["maintenance"], worker_threads=1, idle_wait=5).start()
print("ready", flush=True)
time.sleep(600)
"""


def test_a_run_over_its_time_limit_is_stopped_recorded_as_failed_and_its_lease_dropped(
    redis_server: RedisServer,
) -> None:
    redis = Redis.from_url(redis_server.url)
    worker = subprocess.Popen(
        [sys.executable, "-c", _WORKER, redis_server.url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "ready"
        run = Run(run_id="endless@1", schedule="endless", job="endless", fire=1)
        enqueue(redis, QUEUE, actor_name("endless"), (msgspec.to_builtins(run),), message_id="r1")
        wait_until(lambda: redis.xlen(keys.schedule_history()) == 1, 30, "the run's record")
        [(_, entry)] = redis.xrange(keys.schedule_history())
        assert entry[b"run_id"] == b"endless@1"
        assert entry[b"outcome"] == b"failed"
        assert b"TimeLimitExceeded" in entry[b"error"]
        # Out of retries: nothing left to re-dispatch, and the mark is gone.
        assert redis.zscore(keys.schedule_leases(), "endless@1") is None
        assert redis.get(keys.schedule_run("endless@1")) is None
        assert redis.get("endless:finished") is None
    finally:
        worker.kill()
        worker.wait(10)
        redis.close()
