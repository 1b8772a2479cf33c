"""Fetches that Redis cut off or froze lose nothing.

- Found by the notifier's Redis-SIGKILL chaos scenario: the fetch loop reserved its free
  threads, the fetch raised, the threads were never given back, and the loop then waited
  for a free thread for ever: nothing more ran after Redis came back.
- Found by the Redis-SIGSTOP chaos scenario: a fetch that redis-py retried ran twice, and
  the first run's messages were stranded in the live worker's ack set.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Sequence
from typing import Any

import dramatiq
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from tests.support import freeze_for, wait_until

from tocsin.client.devserver import RedisServer
from tocsin.common.broker import build_broker
from tocsin.common.queue import Consumer, Delivery, enqueue

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


def test_a_fetch_sent_into_a_frozen_redis_loses_nothing_when_redis_py_retries_it(
    redis_server: RedisServer, redis: Redis
) -> None:
    # Found by the Redis-SIGSTOP chaos scenario. The fetch reaches a frozen Redis;
    # after its 5 s socket timeout redis-py sends it again on a new connection, and
    # after the thaw Redis runs both: the first takes the message into this worker's
    # ack set, its reply goes nowhere, and the retry, the only reply the consumer
    # sees, finds the queue empty. No error reaches the consumer.
    broker = build_broker(redis_server.url, queues=(QUEUE,))
    handled: list[str] = []

    def handle(deliveries: Sequence[Delivery]) -> list[BaseException | None]:
        if not handled:
            # While the first batch runs, the next message arrives.
            enqueue(redis, QUEUE, "probe", (), message_id="sent-as-redis-froze")
        handled.extend(d.message.message_id for d in deliveries)
        return [None] * len(deliveries)

    consumer = Consumer(broker, [QUEUE], batch_handler=handle, batch_size=10, idle_wait=60)
    fetch = consumer.worker.fetch
    thaws: list[threading.Event] = []

    def fetch_as_redis_freezes(queue: str, count: int, **options: Any) -> list[Any]:
        if handled and not thaws:
            thaws.append(freeze_for(redis_server.pid or 0, 7.0))
        return fetch(queue, count, **options)

    consumer.worker.fetch = fetch_as_redis_freezes  # type: ignore[method-assign]
    consumer.start()
    try:
        enqueue(redis, QUEUE, "probe", (), message_id="first")
        wait_until(lambda: thaws and thaws[0].is_set(), 20,
                   "Redis frozen and thawed under the second fetch")  # fmt: skip
        wait_until(lambda: handled == ["first", "sent-as-redis-froze"], 20, "both messages")
        wait_until(lambda: redis.scard(consumer.worker.acks_key(QUEUE)) == 0, 10, "both acked")
    finally:
        os.kill(redis_server.pid, signal.SIGCONT)
        consumer.stop(timeout=5)
        broker.close()
