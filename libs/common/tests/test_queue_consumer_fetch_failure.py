"""A fetch cut off by Redis (killed, restarted) gives back the worker threads it reserved.

Found by the notifier's Redis-SIGKILL chaos scenario: the fetch loop reserved its free
threads, the fetch raised, the threads were never given back, and the loop then waited for
a free thread for ever: nothing more ran after Redis came back.
"""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from tests.support import wait_until

from tocsin.client.devserver import RedisServer
from tocsin.common.broker import build_broker
from tocsin.common.queue import Consumer, enqueue

QUEUE = "fetchfail"


def test_messages_run_after_a_fetch_that_redis_cut_off(
    redis_server: RedisServer, redis: Redis
) -> None:
    broker = build_broker(redis_server.url, queues=(QUEUE,))
    ran = threading.Event()

    @dramatiq.actor(queue_name=QUEUE, broker=broker, actor_name="probe")
    def probe() -> None:
        ran.set()

    consumer = Consumer(broker, [QUEUE], worker_threads=2, idle_wait=0.2)
    fetch = consumer.worker.fetch
    failed = threading.Event()

    def fetch_cut_off_once(queue: str, count: int, **options: Any) -> list[Any]:
        # The connection a killed Redis leaves: the fetch's round trip raises.
        if not failed.is_set():
            failed.set()
            raise RedisConnectionError("Connection closed by server.")
        return fetch(queue, count, **options)

    consumer.worker.fetch = fetch_cut_off_once  # type: ignore[method-assign]
    consumer.start()
    try:
        wait_until(failed.is_set, 10, "the fetch Redis cut off")
        enqueue(redis, QUEUE, "probe", (), message_id="after-the-cut")
        wait_until(ran.is_set, 30, "the message enqueued after the failed fetch to run")
    finally:
        consumer.stop(timeout=5)
