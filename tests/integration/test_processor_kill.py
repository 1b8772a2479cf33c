"""SIGKILL the processor in the middle of 2,000 alerts: nothing lost, nothing doubled."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections import Counter
from typing import Any

import msgspec
import pytest

from tocsin.common import broker as queues
from tocsin.common import keys
from tocsin.common.models import AlertIn, QueuedAlert
from tocsin.common.redis import sync_client

pytestmark = pytest.mark.integration

TOTAL = 2_000
DISTINCT = 1_400  # so 600 alerts are duplicates of earlier ones
BATCH = 20
NOTIFICATIONS = f"{keys.DRAMATIQ_NAMESPACE}:notifications"
# A killed worker's messages come back once its heartbeat is this old.
FAST_REQUEUE = {
    "TOCSIN_QUEUE_HEARTBEAT_TIMEOUT_MS": "1500",
    "TOCSIN_AUTO_RESOLVE_SECONDS": "0",
}


def stream_of_alerts() -> list[list[dict[str, Any]]]:
    batches: list[list[dict[str, Any]]] = []
    for start in range(0, TOTAL, BATCH):
        batch = []
        for n in range(start, start + BATCH):
            key = f"kill-{n % DISTINCT}"
            message = QueuedAlert(
                id=uuid.uuid4().hex,
                fingerprint=key,
                received_at=time.time(),
                producer="test",
                alert=AlertIn(name="cpu", severity="warning", dedup_key=key),
            )
            batch.append(msgspec.to_builtins(message))
        batches.append(batch)
    return batches


def test_sigkill_mid_stream_stores_every_alert_once_and_notifies_each_transition_once(
    start_service: Any,
) -> None:
    processor = start_service("processor", **FAST_REQUEUE)
    url = processor.env["REDIS_URL"]
    redis = sync_client(url)
    broker = queues.build_broker(url)
    batches = stream_of_alerts()

    def produce() -> None:
        for batch in batches:
            broker.enqueue(
                queues.build_message(queues.ALERTS_QUEUE, queues.PROCESS_ALERTS_ACTOR, (batch,))
            )
            time.sleep(0.005)

    producer = threading.Thread(target=produce)
    producer.start()
    deadline = time.monotonic() + 30
    while redis.zcard(keys.alert_index()) < 300:
        assert time.monotonic() < deadline, "the processor never got going"
        time.sleep(0.005)
    processor.signal(signal.SIGKILL)
    processor.process.wait(10)
    stored_at_kill = redis.zcard(keys.alert_index())
    start_service("processor", **FAST_REQUEUE)
    producer.join()
    broker.close()

    def applied_messages() -> int:
        ids = redis.zrange(keys.alert_index(), 0, -1)
        records = redis.mget([keys.alert(i.decode()) for i in ids]) if ids else []
        return sum(json.loads(r)["count"] for r in records if r)

    deadline = time.monotonic() + 60
    while applied_messages() < TOTAL:
        assert time.monotonic() < deadline, f"only {applied_messages()} of {TOTAL} applied"
        time.sleep(0.05)
    assert stored_at_kill < DISTINCT, "the kill came after the stream was done"

    ids = [i.decode() for i in redis.zrange(keys.alert_index(), 0, -1)]
    records = [json.loads(r) for r in redis.mget([keys.alert(i) for i in ids])]
    assert len(records) == DISTINCT
    counts = {record["fingerprint"]: record["count"] for record in records}
    expected = Counter(f"kill-{n % DISTINCT}" for n in range(TOTAL))
    assert counts == dict(expected)
    time.sleep(0.3)  # a stray duplicate notification would have landed by now
    notified = redis.lrange(NOTIFICATIONS, 0, -1)
    assert len(notified) == len(set(notified)) == DISTINCT
    assert redis.hlen(f"{NOTIFICATIONS}.msgs") == DISTINCT
    assert {n.decode().split(":")[0] for n in notified} == set(ids)
