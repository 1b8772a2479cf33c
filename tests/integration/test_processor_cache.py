"""The cached alert pages and stats never miss a write that happened before the read began."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
import pytest

from tocsin.common import broker as queues
from tocsin.common import keys
from tocsin.common.models import AlertAction, AlertIn, QueuedAlert
from tocsin.common.redis import sync_client

pytestmark = pytest.mark.integration

WRITES = 300


def test_cache_never_serves_a_page_missing_a_write_that_preceded_the_read(
    start_service: Any, user_token: Callable[..., str]
) -> None:
    processor = start_service("processor")
    gateway = start_service("gateway")
    url = processor.env["REDIS_URL"]
    redis = sync_client(url)
    broker = queues.build_broker(url)
    done = threading.Event()

    def write() -> None:
        # New alerts, and acknowledgements of earlier ones, one message each.
        ids: list[str] = []
        for n in range(WRITES):
            message = QueuedAlert(
                id=uuid.uuid4().hex,
                fingerprint=f"cache-{n}",
                received_at=time.time(),
                producer="test",
                alert=AlertIn(name="queue depth", severity="info", service=f"s{n % 3}"),
            )
            ids.append(message.id)
            broker.enqueue(
                queues.build_message(
                    queues.ALERTS_QUEUE,
                    queues.PROCESS_ALERTS_ACTOR,
                    ([msgspec.to_builtins(message)],),
                )
            )
            repeat = QueuedAlert(
                id=uuid.uuid4().hex,
                fingerprint="cache-repeated",
                received_at=time.time(),
                producer="test",
                alert=AlertIn(name="repeated", severity="info", service="repeats"),
            )
            broker.enqueue(
                queues.build_message(
                    queues.ALERTS_QUEUE,
                    queues.PROCESS_ALERTS_ACTOR,
                    ([msgspec.to_builtins(repeat)],),
                )
            )
            if n % 3 == 2:
                action = AlertAction(id=uuid.uuid4().hex, action="acknowledge", alert_id=ids[n - 2])
                broker.enqueue(
                    queues.build_message(
                        queues.ALERTS_QUEUE,
                        queues.APPLY_ACTION_ACTOR,
                        (msgspec.to_builtins(action),),
                    )
                )
            time.sleep(0.002)
        done.set()

    failures: list[str] = []
    hits = 0
    reads = 0
    lock = threading.Lock()
    auth = {"authorization": f"Bearer {user_token()}"}

    def read() -> None:
        nonlocal hits, reads
        with httpx.Client(base_url=gateway.url, headers=auth, timeout=10) as http:
            while True:
                finished = done.is_set()
                # What is committed before the read begins must be in the answer.
                stored = redis.zcard(keys.alert_index())
                acked = redis.zcard(keys.alert_index("status", "acknowledged"))
                repeated_id = redis.hget(keys.dedup("cache-repeated"), "id")
                body = redis.get(keys.alert(repeated_id.decode())) if repeated_id else None
                repeats = json.loads(body)["count"] if body else 0
                page = http.get("/v1/alerts", params={"limit": "5"})
                acked_page = http.get("/v1/alerts", params={"status": "acknowledged"})
                stats = http.get("/v1/stats")
                repeated = http.get("/v1/alerts", params={"service": "repeats"}).json()["alerts"]
                with lock:
                    reads += 3
                    hits += sum(r.headers["x-cache"] == "hit" for r in (page, acked_page, stats))
                    if page.json()["total"] < stored:
                        failures.append(f"page total {page.json()['total']} < {stored}")
                    if acked_page.json()["total"] < acked:
                        failures.append(f"acked total {acked_page.json()['total']} < {acked}")
                    if repeats and repeated[0]["count"] < repeats:
                        failures.append(f"repeat count {repeated[0]['count']} < {repeats}")
                    if stats.json()["total"] < stored:
                        failures.append(f"stats total {stats.json()['total']} < {stored}")
                if finished:
                    return

    writer = threading.Thread(target=write)
    readers = [threading.Thread(target=read) for _ in range(4)]
    writer.start()
    for reader in readers:
        reader.start()
    writer.join()
    for reader in readers:
        reader.join(60)
    broker.close()
    assert not failures, failures[:5]
    assert reads > 0
    # Reads after the last write can be served from the cache.
    with httpx.Client(base_url=gateway.url, headers=auth, timeout=10) as http:
        deadline = time.monotonic() + 20
        # Every message applied and acked (its data leaves the queue's hash with the ack),
        # so nothing bumps the cache tag between the two reads.
        while (
            redis.hlen(f"{keys.DRAMATIQ_NAMESPACE}:alerts.msgs")
            or redis.zcard(keys.alert_index()) < WRITES + 1
        ):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        http.get("/v1/stats")
        assert http.get("/v1/stats").headers["x-cache"] == "hit"
        assert http.get("/v1/alerts").json()["total"] == WRITES + 1
