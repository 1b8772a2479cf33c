"""Actors' time limits are enforced by the layer's consumer, in a real worker process.

Dramatiq's TimeLimit middleware starts its watcher on the process-boot hook,
which only Dramatiq's own CLI used to emit: under Tocsin's consumer no limit
was ever enforced. Here a worker process runs an actor that outruns its limit.
"""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import threading

import dramatiq
from dramatiq.middleware.time_limit import TimeLimitExceeded
from redis import Redis
from tests.support import wait_until

from tocsin.client.devserver import RedisServer
from tocsin.common.queue import dead_letter_keys, enqueue
from tocsin.common.queue._time_limit import _DeadlineWatcher

QUEUE = "limits"

_WORKER = """
import sys, time
import dramatiq
from redis import Redis
from tocsin.common.broker import build_broker
from tocsin.common.queue import Consumer

url = sys.argv[1]
redis = Redis.from_url(url)
broker = build_broker(url, queues=("limits",))

@dramatiq.actor(queue_name="limits", broker=broker, time_limit=500, max_retries=0)
def slow() -> None:
    redis.set("slow:started", "1")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.05)
    redis.set("slow:finished", "1")

@dramatiq.actor(queue_name="limits", broker=broker)
def quick() -> None:
    redis.set("quick:ran", "1")

consumer = Consumer(broker, ["limits"], worker_threads=1, idle_wait=5)
consumer.start()
print("ready", flush=True)
time.sleep(600)
"""


def test_an_actor_over_its_time_limit_is_stopped_and_failed_and_its_thread_runs_the_next(
    redis_server: RedisServer, redis: Redis
) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-c", _WORKER, redis_server.url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "ready"
        for actor in ("slow", "quick"):
            enqueue(redis, QUEUE, actor, (), message_id=f"{actor}-1")
        # One thread: the quick job runs only once the slow one was stopped.
        wait_until(lambda: redis.get("quick:ran") is not None, 30, "the job after the slow one")
        dead, dead_messages = dead_letter_keys(QUEUE)
        wait_until(lambda: redis.zcard(dead) == 1, 10, "the stopped job's dead letter")
        [data] = redis.hvals(dead_messages)
        assert dramatiq.Message.decode(data).actor_name == "slow"
        assert redis.get("slow:started") is not None
        assert redis.get("slow:finished") is None
    finally:
        worker.kill()
        worker.wait(10)


def test_a_deadline_earlier_than_the_one_the_watcher_waits_for_is_still_enforced() -> None:
    # The watcher is woken only by a deadline before the one it waits for: a job with a
    # short limit starting while a long one runs must still be stopped on time.
    watcher = _DeadlineWatcher(logging.getLogger(__name__))
    watcher.start()
    stopped: list[str] = []
    done = threading.Event()

    def job(name: str, limit_ms: float) -> None:
        watcher.add_timeout(threading.get_ident(), limit_ms)
        try:
            while not done.wait(0.01):
                pass
        except TimeLimitExceeded:
            stopped.append(name)
        finally:
            watcher.remove_timeout(threading.get_ident())

    long = threading.Thread(target=job, args=("long", 600_000), daemon=True)
    long.start()
    wait_until(lambda: watcher._wake_at < math.inf, 10, "the watcher waiting for the long job")
    short = threading.Thread(target=job, args=("short", 200), daemon=True)
    short.start()
    short.join(30)
    done.set()
    long.join(10)
    assert stopped == ["short"]
