"""The processor on the queue layer's consumer: woken by any enqueue, batches applied once each."""

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
from tocsin.common.queue.due import due_keys
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


def test_idle_processor_starts_on_any_enqueue_without_waiting_for_its_idle_poll(
    start_service: Any,
) -> None:
    # The consumer's idle wait (30 s) is longer than the deadlines below: only the
    # wake-up token pushed with the enqueue (by ingest's admission script, or by
    # the shared broker's middleware, as gateway actions) makes the processor fetch.
    processor = start_service("processor")
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
    broker = queues.build_broker(processor.env["REDIS_URL"])
    for n in range(2):
        broker.enqueue(
            queues.build_message(
                queues.ALERTS_QUEUE, queues.PROCESS_ALERTS_ACTOR, ([queued_alert(f"direct-{n}")],)
            )
        )
        wait_for(lambda n=n: stored(redis, f"direct-{n}"), 15, f"alert direct-{n} stored")


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
    wait_for(lambda: all(stored(redis, f"b-{n}") for n in range(total)), 30, "the backlog")
    for n in range(total):
        alert_id = redis.hget(keys.dedup(f"b-{n}"), "id")
        assert alert_id is not None
        record = msgspec.json.decode(redis.get(keys.alert(alert_id.decode())) or b"{}")
        assert record["count"] == 1, record

    def bad_message_retried() -> bool:
        # It is either waiting in the due set (its backoff) or back for another try.
        for body in redis.hvals(due_keys(queues.ALERTS_QUEUE).messages):
            if msgspec.json.decode(body)["args"] == [[{"not": "an alert"}]]:
                return int(msgspec.json.decode(body)["options"].get("retries", 0)) >= 2
        return False

    wait_for(bad_message_retried, 30, "the bad message retried twice")
    assert redis.zcard(f"{QUEUE}.XQ") == 0  # not dead-lettered before its last try
