"""The processor behind the gateway's alert API: reads, actions, scopes, auto-resolve."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
import pytest
from tests.support import wait_until

from tocsin.common import broker as queues
from tocsin.common import keys
from tocsin.common.models import AlertIn, QueuedAlert
from tocsin.common.redis import sync_client

pytestmark = pytest.mark.integration


def queued(fingerprint: str, *, status: str = "firing", **fields: Any) -> dict[str, Any]:
    alert = AlertIn(
        name=fields.pop("name", "disk full"),
        severity=fields.pop("severity", "warning"),
        status=status,  # type: ignore[arg-type]
        dedup_key=fingerprint,
        **fields,
    )
    message = QueuedAlert(
        id=uuid.uuid4().hex,
        fingerprint=fingerprint,
        received_at=time.time(),
        producer="test",
        alert=alert,
    )
    return msgspec.to_builtins(message)  # type: ignore[no-any-return]


def enqueue(redis_url: str, batch: list[dict[str, Any]]) -> None:
    broker = queues.build_broker(redis_url)
    broker.enqueue(queues.build_message(queues.ALERTS_QUEUE, queues.PROCESS_ALERTS_ACTOR, (batch,)))
    broker.close()


def test_ack_and_resolve_are_enqueued_answered_202_and_applied_with_timeline(
    start_service: Any, user_token: Callable[..., str]
) -> None:
    processor = start_service("processor")
    gateway = start_service("gateway")
    enqueue(processor.env["REDIS_URL"], [queued("db-1", service="db", labels={"team": "ops"})])
    auth = {"authorization": f"Bearer {user_token()}"}
    with httpx.Client(base_url=gateway.url, headers=auth, timeout=10) as http:
        page = wait_until(lambda: http.get("/v1/alerts").json()["alerts"])
        alert_id = page[0]["id"]
        answer = http.post(f"/v1/alerts/{alert_id}/ack", json={"comment": "on it"})
        assert answer.status_code == 202
        assert answer.json()["action_id"]
        wait_until(lambda: http.get(f"/v1/alerts/{alert_id}").json()["status"] == "acknowledged")
        assert http.post(f"/v1/alerts/{alert_id}/resolve").status_code == 202
        record = wait_until(
            lambda: (r := http.get(f"/v1/alerts/{alert_id}").json())["status"] == "resolved" and r
        )
        assert [entry["kind"] for entry in record["timeline"]] == [
            "firing",
            "acknowledged",
            "resolved",
        ]
        assert record["timeline"][1]["by"] == "tester"
        assert record["timeline"][1]["comment"] == "on it"
        assert record["acknowledged_at"]
        assert record["resolved_at"]
        listed = http.get("/v1/alerts", params={"status": "resolved", "team": "ops"}).json()
        assert [a["id"] for a in listed["alerts"]] == [alert_id]
        assert http.get("/v1/alerts", params={"status": "firing"}).json()["total"] == 0
        stats = http.get("/v1/stats").json()
        assert stats["by_status"]["resolved"] == 1
        assert http.post("/v1/alerts/nope/ack").status_code == 404
    redis = sync_client(processor.env["REDIS_URL"])
    transitions = [
        json.loads(redis.hget(f"{keys.DRAMATIQ_NAMESPACE}:notifications.msgs", message_id))["args"][
            0
        ]["transition"]
        for message_id in redis.lrange(f"{keys.DRAMATIQ_NAMESPACE}:notifications", 0, -1)
    ]
    assert transitions == ["firing", "acknowledged", "resolved"]


def test_reads_need_the_read_scope_and_actions_the_write_scope(
    start_service: Any, user_token: Callable[..., str]
) -> None:
    gateway = start_service("gateway")
    reader = {"authorization": f"Bearer {user_token(scopes=('read',))}"}
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        assert http.get("/v1/alerts").status_code == 401
        assert http.get("/v1/alerts", headers=reader).status_code == 200
        assert http.get("/v1/stats", headers=reader).status_code == 200
        refused = http.post("/v1/alerts/x/ack", headers=reader)
        assert refused.status_code == 403
        assert refused.headers["content-type"] == "application/problem+json"
        assert http.post("/v1/silences", headers=reader, json={}).status_code == 403
        bad = http.get("/v1/alerts", headers=reader, params={"status": "sleeping"})
        assert bad.status_code == 400


def test_list_pages_with_a_cursor_newest_first_without_gaps_or_repeats(
    start_service: Any, user_token: Callable[..., str]
) -> None:
    processor = start_service("processor")
    gateway = start_service("gateway")
    enqueue(processor.env["REDIS_URL"], [queued(f"page-{n}") for n in range(7)])
    auth = {"authorization": f"Bearer {user_token()}"}
    with httpx.Client(base_url=gateway.url, headers=auth, timeout=10) as http:
        wait_until(lambda: http.get("/v1/alerts").json()["total"] == 7)
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
            page = http.get("/v1/alerts", params=params).json()
            seen.extend(alert["id"] for alert in page["alerts"])
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert len(seen) == len(set(seen)) == 7
        matched = http.get("/v1/alerts", params={"label": "alertname=~disk.*"}).json()
        assert len(matched["alerts"]) == 7
        assert not http.get("/v1/alerts", params={"label": "alertname!=disk full"}).json()["alerts"]


def test_an_alert_whose_producer_goes_quiet_is_auto_resolved_and_notified(
    start_service: Any,
) -> None:
    processor = start_service(
        "processor", TOCSIN_AUTO_RESOLVE_SECONDS="0.5", TOCSIN_SWEEP_INTERVAL_SECONDS="0.1"
    )
    enqueue(processor.env["REDIS_URL"], [queued("quiet-1")])
    redis = sync_client(processor.env["REDIS_URL"])

    def resolved() -> dict[str, Any] | None:
        alert_id = redis.hget(keys.dedup("quiet-1"), "id")
        body = redis.get(keys.alert(alert_id.decode())) if alert_id else None
        record = json.loads(body) if body else None
        return record if record and record["status"] == "resolved" else None

    record = wait_until(resolved)
    assert record["resolved_by"] == "auto-resolve"
    assert redis.llen(f"{keys.DRAMATIQ_NAMESPACE}:notifications") == 2
