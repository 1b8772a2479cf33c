"""Silences: a muted alert is stored and streamed but not notified; expiry restores notification."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from tests.support import enqueue_alert as send
from tests.support import wait_until

from tocsin.common import keys
from tocsin.common.redis import sync_client

pytestmark = pytest.mark.integration

NOTIFICATIONS = f"{keys.DRAMATIQ_NAMESPACE}:notifications"


def test_silenced_alert_is_stored_and_streamed_but_not_notified_until_the_silence_expires(
    start_service: Any, user_token: Callable[..., str]
) -> None:
    processor = start_service("processor")
    gateway = start_service("gateway")
    url = processor.env["REDIS_URL"]
    redis = sync_client(url)
    now = datetime.now(UTC)
    auth = {"authorization": f"Bearer {user_token()}"}
    with httpx.Client(base_url=gateway.url, headers=auth, timeout=10) as http:
        created = http.post(
            "/v1/silences",
            json={
                "matchers": [
                    {"name": "env", "value": "prod|staging", "isRegex": True},
                    {"name": "team", "value": "web", "isEqual": False},
                ],
                "startsAt": (now - timedelta(minutes=1)).isoformat(),
                "endsAt": (now + timedelta(hours=1)).isoformat(),
                "comment": "maintenance",
            },
        )
        assert created.status_code == 201, created.text
        silence_id = created.json()["silenceID"]
        assert created.json()["status"]["state"] == "active"
        assert created.json()["createdBy"] == "tester"

        send(url, "muted-1", {"env": "prod", "team": "db"})
        send(url, "loud-1", {"env": "prod", "team": "web"})  # the != matcher spares it
        wait_until(lambda: redis.zcard(keys.alert_index()) == 2)
        muted_id = redis.hget(keys.dedup("muted-1"), "id").decode()
        record = json.loads(redis.get(keys.alert(muted_id)))
        assert record["silenced"] is True
        frames = [json.loads(f[b"f"]) for _, f in redis.xrange(keys.channel_stream("alerts"))]
        streamed = {frame["data"]["alert"]["fingerprint"]: frame["data"] for frame in frames}
        assert streamed["muted-1"]["alert"]["silenced"] is True
        assert streamed["loud-1"]["alert"]["silenced"] is False
        wait_until(lambda: redis.llen(NOTIFICATIONS) == 1)
        time.sleep(0.2)  # nothing else may arrive for the muted alert
        assert redis.llen(NOTIFICATIONS) == 1

        # Acknowledging a silenced alert still works.
        assert http.post(f"/v1/alerts/{muted_id}/ack").status_code == 202
        wait_until(lambda: json.loads(redis.get(keys.alert(muted_id)))["status"] == "acknowledged")
        assert http.post(f"/v1/alerts/{muted_id}/unack").status_code == 202
        wait_until(lambda: json.loads(redis.get(keys.alert(muted_id)))["status"] == "firing")
        assert redis.llen(NOTIFICATIONS) == 1

        expired = http.delete(f"/v1/silences/{silence_id}")
        assert expired.json()["status"]["state"] == "expired"
        listed = http.get("/v1/silences", params={"state": "expired"}).json()
        assert [s["id"] for s in listed] == [silence_id]

        send(url, "muted-1", {"env": "prod", "team": "db"})
        wait_until(lambda: redis.llen(NOTIFICATIONS) == 2)
        last = redis.lindex(NOTIFICATIONS, -1)
        request = json.loads(redis.hget(f"{NOTIFICATIONS}.msgs", last))["args"][0]
        assert request["alert"]["id"] == muted_id
        assert request["transition"] == "firing"
        assert request["alert"]["silenced"] is False


def test_a_silence_with_an_invalid_regex_or_span_is_refused(
    start_service: Any, user_token: Callable[..., str]
) -> None:
    gateway = start_service("gateway")
    auth = {"authorization": f"Bearer {user_token()}"}
    now = datetime.now(UTC)
    with httpx.Client(base_url=gateway.url, headers=auth, timeout=10) as http:
        bad_regex = http.post(
            "/v1/silences",
            json={
                "matchers": [{"name": "env", "value": "(", "isRegex": True}],
                "startsAt": now.isoformat(),
                "endsAt": (now + timedelta(hours=1)).isoformat(),
            },
        )
        assert bad_regex.status_code == 400
        backwards = http.post(
            "/v1/silences",
            json={
                "matchers": [{"name": "env", "value": "prod"}],
                "startsAt": now.isoformat(),
                "endsAt": (now - timedelta(hours=1)).isoformat(),
            },
        )
        assert backwards.status_code == 400
        assert http.delete("/v1/silences/unknown").status_code == 404
