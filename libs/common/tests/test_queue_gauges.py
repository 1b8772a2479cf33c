"""A running consumer reports its queues' depth and age; a stopped one no longer does."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dramatiq.brokers.redis import RedisBroker
from prometheus_client import REGISTRY

from tocsin.client.devserver import RedisServer
from tocsin.common.broker import build_broker
from tocsin.common.queue import Consumer

QUEUE = "gauged"


@pytest.fixture
def broker(redis_server: RedisServer) -> Iterator[RedisBroker]:
    broker = build_broker(redis_server.url, queues=(QUEUE,))
    yield broker
    broker.close()


def _gauges() -> tuple[float | None, float | None]:
    labels = {"queue": QUEUE}
    return (
        REGISTRY.get_sample_value("tocsin_queue_depth", {**labels, "state": "ready"}),
        REGISTRY.get_sample_value("tocsin_queue_oldest_age_seconds", labels),
    )


def test_a_consumer_reports_its_queue_gauges_from_start_to_stop(broker: RedisBroker) -> None:
    assert _gauges() == (None, None)
    consumer = Consumer(broker, [QUEUE], idle_wait=5)
    consumer.start()
    try:
        assert _gauges() == (0.0, 0.0)  # read from Redis: the queue is empty
    finally:
        consumer.stop()
    assert _gauges() == (None, None)
