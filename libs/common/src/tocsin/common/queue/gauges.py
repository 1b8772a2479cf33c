"""Queue depth and age as Prometheus gauges, read from Redis at scrape time.

`Consumer.start` registers a `QueueCollector` for its queues, so queue depth and
age come from the processes that consume the queue; the scheduler's health
score reads the same probe (`queue_state`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis import Redis, RedisError

from tocsin.common.metrics import count_redis_error
from tocsin.common.queue._layout import dead_letter_keys, queue_keys
from tocsin.common.queue.due import due_keys

__all__ = ["QueueCollector", "queue_state"]


class QueueCollector(Collector):
    """Queue depth (ready, delayed, dead-lettered) and age of the oldest ready message.

    Read from Redis at scrape time, so the figures are those of the queue, not
    of this process; every consuming process reports the same values (use `max`
    across instances).
    """

    def __init__(self, redis: Redis, queues: Iterable[str]) -> None:
        self._redis = redis
        self._queues = sorted(set(queues))

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "tocsin_queue_depth",
            "Messages in a Dramatiq queue, by queue and state (ready, delayed, dead).",
            labels=["queue", "state"],
        )
        age = GaugeMetricFamily(
            "tocsin_queue_oldest_age_seconds",
            "Age of the oldest message waiting in a queue (0 when empty).",
            labels=["queue"],
        )
        now = time.time()
        for queue in self._queues:
            try:
                sizes, oldest = queue_state(self._redis, queue)
            except RedisError as exc:
                count_redis_error(exc)
                continue
            for state, size in sizes.items():
                depth.add_metric([queue, state], size)
            age.add_metric([queue], max(0.0, now - oldest) if oldest else 0.0)
        yield depth
        yield age


def queue_state(redis: Redis, queue: str) -> tuple[dict[str, int], float]:
    """Sizes by state and the enqueue time (epoch seconds, 0: empty) of the oldest ready message."""
    names = queue_keys(queue)
    dead, _ = dead_letter_keys(queue)
    pipe = redis.pipeline(transaction=False)
    pipe.llen(names.pending)
    pipe.zcard(due_keys(queue).entries)
    pipe.zcard(dead)
    pipe.lindex(names.pending, 0)
    ready, delayed_count, dead_count, head = pipe.execute()
    oldest = 0.0
    if head is not None:
        data = redis.hget(names.messages, head)
        if data is not None:
            oldest = _enqueued_at(data)
    return {"ready": int(ready), "delayed": int(delayed_count), "dead": int(dead_count)}, oldest


def _enqueued_at(data: Any) -> float:
    try:
        message = json.loads(data)
        return float(message.get("message_timestamp", 0)) / 1000.0
    except (ValueError, TypeError, AttributeError):
        return 0.0
