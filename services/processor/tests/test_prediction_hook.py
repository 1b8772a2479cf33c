"""The processor's prediction hook against a real Redis-compatible server."""

from __future__ import annotations

import dramatiq
import pytest
from redis import Redis

from tocsin.client.devserver import RedisServer, free_port
from tocsin.common.queue import queue_keys
from tocsin.common.redis import sync_client
from tocsin.processor import prediction_hook
from tocsin.processor.lifecycle import Outcome
from tocsin.processor.prediction_hook import request_predictions

QUEUE = queue_keys("prediction")


@pytest.fixture
def redis(redis_server: RedisServer) -> Redis:
    return sync_client(redis_server.url)


def test_opened_and_resolved_incidents_are_handed_over_once_each(redis: Redis) -> None:
    outcomes = [
        Outcome("created", "a1", ("firing",)),
        Outcome("duplicate", "a2", ()),
        Outcome("resolved", "a3", ("resolved",)),
        Outcome("replayed", "", ()),
    ]
    assert request_predictions(redis, outcomes) == 2
    assert request_predictions(redis, outcomes) == 2  # a re-run after a crash...
    pending = [m.decode() for m in redis.lrange(QUEUE.pending, 0, -1)]  # type: ignore[union-attr]
    assert pending == ["predict-a1-created", "predict-a3-resolved"]  # ...writes nothing twice
    message = dramatiq.Message.decode(redis.hget(QUEUE.messages, "predict-a1-created"))  # type: ignore[arg-type]
    assert (message.actor_name, message.queue_name, message.args) == (
        "predict_incident",
        "prediction",
        ("a1",),
    )
    assert redis.llen(QUEUE.wakeup) >= 1


def test_a_full_queue_drops_requests_instead_of_growing(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prediction_hook, "MAX_PENDING", 3)
    outcomes = [Outcome("created", f"a{n}", ()) for n in range(5)]
    assert request_predictions(redis, outcomes) == 3
    assert redis.llen(QUEUE.pending) == 3
    assert redis.hlen(QUEUE.messages) == 3


def test_a_redis_failure_is_swallowed_and_changes_nothing_else() -> None:
    unreachable = sync_client(f"redis://127.0.0.1:{free_port()}/0")
    assert request_predictions(unreachable, [Outcome("created", "a1", ())]) == 0
