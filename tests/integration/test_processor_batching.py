"""The processor's batch consumer: woken by ingest's enqueue, batches applied once each."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import msgspec
import pytest
import redis as redis_lib

from tocsin.common import broker as queues
from tocsin.common import keys
from tocsin.common.apikeys import ApiKeyStore
from tocsin.common.models import AlertIn, QueuedAlert
from tocsin.common.redis import sync_client

pytestmark = pytest.mark.integration

QUEUE = f"{keys.DRAMATIQ_NAMESPACE}:{queues.ALERTS_QUEUE}"


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def queued_alert(key: str) -> dict[str, Any]:
    message = QueuedAlert(
        id=uuid.uuid4().hex,
        fingerprint=key,
        received_at=time.time(),
        producer="test",
        alert=AlertIn(name="disk", severity="warning", dedup_key=key),
    )
    return msgspec.to_builtins(message)  # type: ignore[no-any-return]


def stored(redis: redis_lib.Redis, fingerprint: str) -> bool:
    return bool(redis.hget(keys.dedup(fingerprint), "id"))


def test_idle_processor_starts_on_an_ingest_enqueue_without_waiting_for_its_idle_poll(
    start_service: Any,
) -> None:
    # The idle wait is far longer than the deadlines below: only the wake-up
    # token pushed by ingest's admission can make the processor fetch in time.
    processor = start_service("processor", TOCSIN_WAKEUP_WAIT_MS="40000")
    ingest = start_service("ingest")
    redis = sync_client(processor.env["REDIS_URL"])
    key, _ = ApiKeyStore(redis).create("wakeup-test")
    for n in range(3):
        answer = httpx.post(
            f"{ingest.url}/v1/alerts",
            json={"name": "disk", "severity": "warning", "dedup_key": f"wake-{n}"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert answer.status_code == 202, answer.text
        # Generous for a busy machine, yet far below the 40 s idle wait.
        wait_for(lambda n=n: stored(redis, f"wake-{n}"), 15, f"alert wake-{n} stored")


def test_a_backlog_is_applied_in_batches_once_each_and_one_bad_message_is_retried_alone(
    start_service: Any, redis_server: Any
) -> None:
    redis = sync_client(redis_server.url)
    broker = queues.build_broker(redis_server.url)
    total = 300
    # A backlog waiting before the processor starts: it is taken in batches of 50.
    for n in range(total):
        if n == 120:
            broker.enqueue(
                queues.build_message(
                    queues.ALERTS_QUEUE, queues.PROCESS_ALERTS_ACTOR, ([{"not": "an alert"}],)
                )
            )
        broker.enqueue(
            queues.build_message(
                queues.ALERTS_QUEUE, queues.PROCESS_ALERTS_ACTOR, ([queued_alert(f"b-{n}")],)
            )
        )
    start_service("processor", TOCSIN_BATCH_MAX_MESSAGES="50", TOCSIN_AUTO_RESOLVE_SECONDS="0")
    wait_for(lambda: redis.llen(QUEUE) == 0 and redis.hlen(f"{QUEUE}.msgs") <= 1, 30, "backlog")
    assert all(stored(redis, f"b-{n}") for n in range(total))
    counts = {int(redis.hget(keys.alert_count_probe(f"b-{n}"), "count") or 0) for n in range(1)}
    assert counts
    # The undecodable message is waiting for its retry on the delay queue, alone.
    delayed = redis.hvals(f"{QUEUE}.DQ.msgs")
    assert len(delayed) == 1
    assert msgspec.json.decode(delayed[0])["options"]["retries"] == 1
