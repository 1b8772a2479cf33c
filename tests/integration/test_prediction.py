"""Incident predictions through real processes: processor, prediction queue, scheduler, API."""

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

HISTORY_EVERY_SECOND = json.dumps(
    [{"job": "prediction_history", "cron": "* * * * * *", "catch_up": "skip"}]
)


def message(fingerprint: str, at: float, status: str = "firing") -> dict[str, Any]:
    alert = AlertIn(
        name="DiskFull", severity="critical", status=status,  # type: ignore[arg-type]
        dedup_key=fingerprint, service="db",
    )  # fmt: skip
    queued = QueuedAlert(
        id=uuid.uuid4().hex, fingerprint=fingerprint, received_at=at, producer="am", alert=alert
    )
    return msgspec.to_builtins(queued)  # type: ignore[no-any-return]


def test_an_opened_incident_is_predicted_from_its_past_episodes_after_its_event(
    start_service: Any, user_token: Callable[..., str]
) -> None:
    processor = start_service("processor")
    start_service("scheduler", TOCSIN_SCHEDULES=HISTORY_EVERY_SECOND)
    gateway = start_service("gateway")
    redis_url = processor.env["REDIS_URL"]
    redis = sync_client(redis_url)
    broker = queues.build_broker(redis_url)

    def send(batch: list[dict[str, Any]]) -> None:
        broker.enqueue(
            queues.build_message(queues.ALERTS_QUEUE, queues.PROCESS_ALERTS_ACTOR, (batch,))
        )

    # Thirty past episodes of about two minutes each, through the real processor.
    start = time.time() - 30 * 3600
    for n in range(30):
        opened = start + n * 3600
        send([message("disk-1", opened), message("disk-1", opened + 110 + n % 5 * 5, "resolved")])
    history = keys.prediction_episodes("fingerprint", "disk-1")
    wait_until(lambda: redis.hlen(history) == 30, timeout=60, what="the episode history")

    send([message("disk-1", time.time())])
    auth = {"authorization": f"Bearer {user_token()}"}
    with httpx.Client(base_url=gateway.url, headers=auth, timeout=10) as http:
        alert_id = wait_until(
            lambda: http.get("/v1/alerts", params={"status": "firing"}).json()["alerts"]
        )[0]["id"]
        shown = wait_until(
            lambda: (r := http.get(f"/v1/alerts/{alert_id}").json())["prediction"] and r,
            timeout=60,
            what="the prediction",
        )
    prediction = shown["prediction"]
    assert prediction["level"] == "fingerprint"
    assert prediction["episodes"] == 30
    assert 110 <= prediction["median_seconds"] <= 135
    assert prediction["transient_probability"] == 1.0
    # The firing event was published before the prediction was even asked for.
    frames = [json.loads(f[b"f"])["data"] for _, f in redis.xrange(keys.channel_stream("alerts"))]
    kinds = [(frame["type"], frame.get("alert", {}).get("id") or frame.get("alert_id"))
             for frame in frames]  # fmt: skip
    assert kinds.index(("alert.created", alert_id)) < kinds.index(("alert.predicted", alert_id))
    broker.close()


def test_volume_forecast_endpoint_answers_before_the_first_run(
    start_service: Any, user_token: Callable[..., str]
) -> None:
    gateway = start_service("gateway")
    auth = {"authorization": f"Bearer {user_token()}"}
    answer = httpx.get(f"{gateway.url}/v1/predictions/volume", headers=auth, timeout=10)
    assert answer.status_code == 200
    assert answer.json() == {
        "forecast_at": None, "interval": None, "services": [], "storms": [], "skipped": {},
    }  # fmt: skip
    assert httpx.get(f"{gateway.url}/v1/predictions/volume", timeout=10).status_code == 401
