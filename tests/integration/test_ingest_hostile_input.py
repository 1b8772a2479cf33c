"""Hostile bytes and reused keys against a real ingest: clear 4xx answers, nothing dropped."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import redis

from tocsin.client.devserver import RedisServer
from tocsin.common.apikeys import ApiKeyStore

pytestmark = pytest.mark.integration

QUEUE = "tocsin:dramatiq:alerts"
ALERT = {"name": "DiskFull", "severity": "critical", "labels": {"host": "db-1"}}
# A JSON document whose one string holds a byte that is not UTF-8.
BAD_UTF8 = b'{"name": "Disk\xff", "severity": "critical"}'


@pytest.fixture
def redis_server(module_redis_server: RedisServer) -> RedisServer:
    """The module's server, emptied for each test: a test sees its own keys and messages."""
    redis.Redis.from_url(module_redis_server.url).flushall()
    return module_redis_server


@pytest.fixture(scope="module")
def ingest(start_module_service: Any) -> Any:
    """One ingest for the module's tests."""
    return start_module_service("ingest")


def _queued(redis_server: RedisServer) -> int:
    return int(redis.Redis.from_url(redis_server.url).llen(QUEUE))


def _api_key(redis_server: RedisServer) -> str:
    key, _ = ApiKeyStore(redis.Redis.from_url(redis_server.url)).create("tests", {})
    return key


def _bodies(key: str) -> dict[str, bytes]:
    am_alert = b'{"labels": {"alertname": "Disk\xff"}}'
    return {
        "/v1/alerts": BAD_UTF8,
        "/v1/integrations/alertmanager": b'{"version": "4", "status": "firing", "alerts": ['
        + am_alert
        + b"]}",
        "/api/v2/alerts": b"[" + am_alert + b"]",
        # The routing key (the credential) is inside the body: read before authentication.
        "/v2/enqueue": b'{"routing_key": "\xff", "event_action": "trigger"}',
    }


def test_invalid_utf8_inside_json_strings_is_a_400_on_every_producer_endpoint(
    ingest: Any, redis_server: RedisServer
) -> None:
    key = _api_key(redis_server)
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    for path, body in _bodies(key).items():
        answer = httpx.post(f"{ingest.url}{path}", content=body, headers=headers)
        assert answer.status_code == 400, (path, answer.text)
        assert "UTF-8" in answer.text, (path, answer.text)
        if path == "/v1/alerts":
            assert answer.headers["content-type"].startswith("application/problem+json")
    # No credential at all: the PagerDuty endpoint reads the body first, and still answers 400.
    unauthenticated = httpx.post(
        f"{ingest.url}/v2/enqueue", content=_bodies(key)["/v2/enqueue"], headers={}
    )
    assert unauthenticated.status_code == 400, unauthenticated.text
    assert _queued(redis_server) == 0
    assert "Traceback" not in ingest.log()


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_non_finite_numbers_are_refused_with_a_4xx(
    ingest: Any, redis_server: RedisServer, number: bytes
) -> None:
    key = _api_key(redis_server)
    body = b'{"name": "DiskFull", "severity": "critical", "value": ' + number + b"}"
    answer = httpx.post(
        f"{ingest.url}/v1/alerts",
        content=body,
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
    )
    assert answer.status_code in (400, 422), answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert _queued(redis_server) == 0


def test_idempotency_key_replays_the_same_request_and_refuses_another_with_422(
    ingest: Any, redis_server: RedisServer
) -> None:
    key = _api_key(redis_server)
    headers = {"authorization": f"Bearer {key}", "idempotency-key": "deploy-7"}
    first = httpx.post(f"{ingest.url}/v1/alerts", json=ALERT, headers=headers)
    replayed = httpx.post(f"{ingest.url}/v1/alerts", json=ALERT, headers=headers)
    assert first.status_code == replayed.status_code == 202
    assert replayed.headers["idempotent-replayed"] == "true"
    assert replayed.json() == first.json()
    # Same key, another (critical) alert: refused, never silently answered with the first.
    other = {**ALERT, "name": "DatabaseDown"}
    conflict = httpx.post(f"{ingest.url}/v1/alerts", json=other, headers=headers)
    assert conflict.status_code == 422, conflict.text
    assert conflict.json()["type"].endswith("/idempotency-key-reused")
    assert "idempotent-replayed" not in conflict.headers
    # Same key and a body that means the same alert, on another endpoint: refused too.
    pushed = httpx.post(
        f"{ingest.url}/api/v2/alerts",
        json=[{"labels": {"alertname": "DiskFull"}}],
        headers=headers,
    )
    assert pushed.status_code == 422, pushed.text
    assert _queued(redis_server) == 1
    message = json.loads(
        redis.Redis.from_url(redis_server.url).hvals(f"{QUEUE}.msgs")[0]  # the one enqueued
    )
    assert message["args"][0][0]["alert"]["name"] == "DiskFull"
    # A new key for the new alert goes through.
    fresh = httpx.post(
        f"{ingest.url}/v1/alerts", json=other, headers={**headers, "idempotency-key": "deploy-8"}
    )
    assert fresh.status_code == 202
    assert _queued(redis_server) == 2
