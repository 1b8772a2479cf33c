"""The apply step's guards on a real server: message-id idempotency and the version check."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
from redis import Redis

from tocsin.client.devserver import RedisServer
from tocsin.common import keys
from tocsin.common.models import AlertIn, QueuedAlert
from tocsin.common.redis import sync_client
from tocsin.common.silences import SilenceSet
from tocsin.processor.lifecycle import AlertLifecycle, LifecycleConfig


@pytest.fixture
def redis() -> Iterator[Redis]:
    with RedisServer() as server:
        yield sync_client(server.url)


def _message(message_id: str, fingerprint: str = "fp") -> QueuedAlert:
    return QueuedAlert(
        id=message_id,
        fingerprint=fingerprint,
        received_at=time.time(),
        producer="p",
        alert=AlertIn(name="disk", severity="warning"),
    )


def _count(redis: Redis, fingerprint: str = "fp") -> int:
    alert_id = redis.hget(keys.dedup(fingerprint), "id")
    assert alert_id is not None
    return int(json.loads(redis.get(keys.alert(alert_id.decode())) or b"{}")["count"])


def test_a_redelivered_message_in_a_batch_counts_once_and_the_rest_still_applies(
    redis: Redis,
) -> None:
    lifecycle = AlertLifecycle(redis, LifecycleConfig())
    first = _message("m1")
    lifecycle.apply_alerts([first], SilenceSet())
    outcomes = lifecycle.apply_alerts([first, _message("m2"), _message("m3")], SilenceSet())
    assert [o.outcome for o in outcomes] == ["replayed", "duplicate", "duplicate"]
    assert _count(redis) == 3


def test_two_processes_applying_one_fingerprint_lose_no_occurrence(redis: Redis) -> None:
    lifecycles = [AlertLifecycle(redis, LifecycleConfig()) for _ in range(2)]
    lifecycles[0].apply_alerts([_message("seed")], SilenceSet())

    def apply(worker: int) -> None:
        for n in range(40):
            batch = [_message(f"w{worker}-{n}-{k}") for k in range(3)]
            lifecycles[worker].apply_alerts(batch, SilenceSet())

    threads = [threading.Thread(target=apply, args=(worker,)) for worker in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert _count(redis) == 1 + 2 * 40 * 3
