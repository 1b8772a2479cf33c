"""The health score as users see it: `GET /v1/health` and `health.changed` events on `system`."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import websockets
from redis import Redis
from tests.support import next_frame

from tocsin.client.devserver import RedisServer
from tocsin.common.metrics import health_signals
from tocsin.scheduler.healthscore import compute_and_store

pytestmark = pytest.mark.integration


def test_health_endpoint_needs_a_token_and_says_when_no_score_exists_yet(
    start_service, user_token
) -> None:
    gateway = start_service("gateway")
    assert httpx.get(f"{gateway.url}/v1/health", timeout=10).status_code == 401
    response = httpx.get(
        f"{gateway.url}/v1/health",
        headers={"authorization": f"Bearer {user_token(scopes=('read',))}"},
        timeout=10,
    )
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"].endswith("/health-unknown")


async def _health_events(ws_url: str, token: str, change: object, count: int) -> list[dict]:
    async with websockets.connect(
        ws_url, additional_headers={"authorization": f"Bearer {token}"}
    ) as ws:
        await ws.send(json.dumps({"type": "subscribe", "channel": "system"}))
        await next_frame(ws, "subscribed", 20)
        await asyncio.to_thread(change)  # type: ignore[arg-type]
        events: list[dict] = []
        while len(events) < count:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 20))
            if frame.get("type") == "event" and frame["data"].get("type") == "health.changed":
                events.append(frame["data"]["health"])
        return events


def test_score_changes_reach_the_system_channel_and_the_health_endpoint(
    start_service, user_token, redis_server: RedisServer
) -> None:
    gateway = start_service("gateway")
    redis = Redis.from_url(redis_server.url)
    health_signals.bind(redis, flush_interval=0)
    now = time.time()

    def degrade() -> None:
        compute_and_store(redis, now=now)
        # Every job failed in the window: the job component drops to 0.
        health_signals.add("jobs_failed", 3)
        health_signals.flush(now=now)
        compute_and_store(redis, now=now + 15)
        # Unchanged score: nothing is published.
        compute_and_store(redis, now=now + 30)

    try:
        events = asyncio.run(_health_events(gateway.ws_url, user_token(), degrade, 2))
    finally:
        health_signals.unbind()
    assert [event["score"] for event in events] == [100, 80]

    response = httpx.get(
        f"{gateway.url}/v1/health",
        headers={"authorization": f"Bearer {user_token(scopes=('read',))}"},
        timeout=10,
    )
    assert response.status_code == 200
    report = response.json()
    assert report["score"] == 80
    components = {part["name"]: part for part in report["components"]}
    assert components["job_success_rate"]["value"] == 0
    assert components["job_success_rate"]["contribution"] == 0
    assert components["e2e_latency_p95"]["contribution"] == 25
    assert report["stale"] is False
    redis.close()
