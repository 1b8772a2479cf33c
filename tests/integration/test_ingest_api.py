"""Ingest as a real process over real Redis: auth, limits, idempotency, tracing, OpenAPI."""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx
import pytest
import redis
from tests.support import metric

from tocsin.client.devserver import RedisServer
from tocsin.common import keys
from tocsin.common.apikeys import ApiKeyStore

pytestmark = pytest.mark.integration

QUEUE = f"{keys.DRAMATIQ_NAMESPACE}:alerts"
ALERT = {"name": "DiskFull", "severity": "critical", "labels": {"host": "db-1"}}


@pytest.fixture
def redis_server(module_redis_server: RedisServer) -> RedisServer:
    """The module's server, emptied for each test: a test sees its own keys and messages
    only, and the services it starts itself run against it too."""
    redis.Redis.from_url(module_redis_server.url).flushall()
    return module_redis_server


@pytest.fixture(scope="module")
def ingest(start_module_service: Any) -> Any:
    """One ingest with the default settings for the module's tests that need no other."""
    return start_module_service("ingest")


def _queued(redis_server: RedisServer) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(redis_server.url)
    ids = client.lrange(QUEUE, 0, -1)
    return [json.loads(client.hget(f"{QUEUE}.msgs", i) or b"null") for i in ids]


def _key(redis_server: RedisServer, producer: str = "tests", **labels: str) -> tuple[str, str]:
    key, record = ApiKeyStore(redis.Redis.from_url(redis_server.url)).create(producer, labels)
    return key, record.key_id


def _bearer(credential: str) -> dict[str, str]:
    return {"authorization": f"Bearer {credential}"}


def test_missing_wrong_and_revoked_keys_get_401_and_enqueue_nothing(
    start_service, redis_server: RedisServer
) -> None:
    ingest = start_service("ingest", TOCSIN_AUTH_CACHE_SECONDS="0")
    key, key_id = _key(redis_server)
    url = f"{ingest.url}/v1/alerts"
    assert httpx.post(url, json=ALERT, headers=_bearer(key)).status_code == 202
    missing = httpx.post(url, json=ALERT)
    assert missing.status_code == 401
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert missing.json()["type"].endswith("/unauthenticated")
    wrong = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert httpx.post(url, json=ALERT, headers=_bearer(wrong)).status_code == 401
    assert httpx.post(url, json=ALERT, headers=_bearer("tsk_nonsense")).status_code == 401
    assert ApiKeyStore(redis.Redis.from_url(redis_server.url)).revoke(key_id)
    revoked = httpx.post(url, json=ALERT, headers=_bearer(key))
    assert revoked.status_code == 401
    assert "revoked" in revoked.json()["detail"]
    assert len(_queued(redis_server)) == 1


def test_jwt_needs_the_ingest_scope(ingest: Any, user_token, redis_server) -> None:
    url = f"{ingest.url}/v1/alerts"
    forbidden = httpx.post(url, json=ALERT, headers=_bearer(user_token(scopes=("read",))))
    assert forbidden.status_code == 403
    assert forbidden.json()["type"].endswith("/forbidden")
    expired = user_token(scopes=("ingest",), ttl=-60)
    assert httpx.post(url, json=ALERT, headers=_bearer(expired)).status_code == 401
    ok = httpx.post(url, json=ALERT, headers=_bearer(user_token(scopes=("ingest",))))
    assert ok.status_code == 202
    [message] = _queued(redis_server)
    assert message["args"][0][0]["producer"] == "tester"


def test_pagerduty_routing_key_authenticates_and_bad_ones_get_pagerduty_shaped_401(
    ingest: Any, redis_server: RedisServer
) -> None:
    key, _ = _key(redis_server, "pd-producer")
    payload = {"summary": "CPU hot", "source": "web-1", "severity": "warning"}
    event = {"event_action": "trigger", "payload": payload}
    refused = httpx.post(f"{ingest.url}/v2/enqueue", json={**event, "routing_key": "tsk_bad"})
    assert refused.status_code == 401
    assert refused.json()["status"] == "unauthorized"
    accepted = httpx.post(f"{ingest.url}/v2/enqueue", json={**event, "routing_key": key})
    assert accepted.status_code == 202
    body = accepted.json()
    assert body["status"] == "success"
    assert body["message"] == "Event processed"
    invalid = httpx.post(f"{ingest.url}/v2/enqueue", json={"routing_key": key,
                                                           "event_action": "trigger"})  # fmt: skip
    assert invalid.status_code == 400
    assert invalid.json()["status"] == "invalid event"
    assert invalid.json()["message"] == "Event object is invalid"
    assert invalid.json()["errors"]
    huge = {**event, "routing_key": key, "payload": {**payload, "custom_details": "x" * 600_000}}
    too_large = httpx.post(f"{ingest.url}/v2/enqueue", json=huge)
    assert too_large.status_code == 413, "PagerDuty's 512 KB limit"
    assert too_large.json()["status"] == "invalid event"
    [message] = _queued(redis_server)
    assert message["args"][0][0]["producer"] == "pd-producer"
    assert message["args"][0][0]["fingerprint"] == body["dedup_key"]


def test_pagerduty_acknowledge_enqueues_an_apply_action_message(
    ingest: Any, redis_server: RedisServer
) -> None:
    key, _ = _key(redis_server, "pd")
    ack = {"routing_key": key, "event_action": "acknowledge", "dedup_key": "db-disk"}
    response = httpx.post(f"{ingest.url}/v2/enqueue", json=ack)
    assert response.status_code == 202
    assert response.json()["dedup_key"] == "db-disk"
    [message] = _queued(redis_server)
    assert message["actor_name"] == "apply_action"
    assert message["args"][0]["action"] == "acknowledge"
    assert message["args"][0]["fingerprint"] == "db-disk"


def test_spent_rate_limit_gives_429_with_retry_after(
    start_service, redis_server: RedisServer
) -> None:
    # Two alerts of budget that refill once a minute: the third alert is refused.
    ingest = start_service("ingest", TOCSIN_RATE_PER_SECOND="0.02", TOCSIN_RATE_BURST="2")
    key, _ = _key(redis_server)
    url = f"{ingest.url}/v1/alerts"
    assert httpx.post(url, json=[ALERT, ALERT], headers=_bearer(key)).status_code == 202
    limited = httpx.post(url, json=ALERT, headers=_bearer(key))
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["type"].endswith("/rate-limited")
    pd = httpx.post(f"{ingest.url}/v2/enqueue", json={"routing_key": key,
                    "event_action": "acknowledge", "dedup_key": "k"})  # fmt: skip
    assert pd.status_code == 429
    assert pd.json()["status"] == "throttle event"
    assert len(_queued(redis_server)) == 1


def test_backlog_over_its_bound_gives_503_with_retry_after(
    start_service, redis_server: RedisServer
) -> None:
    ingest = start_service("ingest", TOCSIN_MAX_BACKLOG="2", TOCSIN_BACKLOG_RETRY_AFTER="7")
    key, _ = _key(redis_server)
    url = f"{ingest.url}/v1/alerts"
    for _ in range(2):
        assert httpx.post(url, json=ALERT, headers=_bearer(key)).status_code == 202
    full = httpx.post(url, json=ALERT, headers=_bearer(key))
    assert full.status_code == 503
    assert full.headers["retry-after"] == "7"
    assert full.json()["type"].endswith("/backlog-full")
    assert len(_queued(redis_server)) == 2


def test_repeated_idempotency_key_enqueues_once_and_answers_the_same(
    ingest: Any, redis_server: RedisServer
) -> None:
    key, _ = _key(redis_server)
    headers = {**_bearer(key), "idempotency-key": "deploy-42"}
    first = httpx.post(f"{ingest.url}/v1/alerts", json=ALERT, headers=headers)
    again = httpx.post(f"{ingest.url}/v1/alerts", json=ALERT, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert len(_queued(redis_server)) == 1
    ttl = redis.Redis.from_url(redis_server.url).ttl(keys.idempotency("tests", "deploy-42"))
    assert 86_000 < ttl <= 86_400
    too_long = {**_bearer(key), "idempotency-key": "k" * 256}
    refused = httpx.post(f"{ingest.url}/v1/alerts", json=ALERT, headers=too_long)
    assert refused.status_code == 422
    assert len(_queued(redis_server)) == 1


def _raw_post(port: int, head: str, chunks: list[bytes]) -> bytes:
    """Send a head and some body chunks, never the rest, and read what the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(head.encode())
        for chunk in chunks:
            sock.sendall(chunk)
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        return answer


def test_body_over_the_limit_is_refused_before_it_is_fully_sent(
    start_service, redis_server: RedisServer
) -> None:
    ingest = start_service("ingest", TOCSIN_MAX_BODY_BYTES="4096")
    key, _ = _key(redis_server)
    head = (f"POST /v1/alerts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: application/json\r\n")  # fmt: skip
    # Declared too large: refused on the headers, with none of the body sent.
    declared = _raw_post(ingest.port, head + "Content-Length: 10000000\r\n\r\n", [])
    assert declared.startswith(b"HTTP/1.1 413")
    # Chunked, no length: refused once past the limit, although the body never ends.
    chunk = b"x" * 1024
    framed = [f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"] * 5
    streamed = _raw_post(ingest.port, head + "Transfer-Encoding: chunked\r\n\r\n", framed)
    assert streamed.startswith(b"HTTP/1.1 413")
    assert _queued(redis_server) == []


def test_traceparent_is_continued_into_the_queued_message(
    ingest: Any, redis_server: RedisServer
) -> None:
    key, _ = _key(redis_server)
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    headers = {**_bearer(key), "traceparent": parent}
    assert httpx.post(f"{ingest.url}/v1/alerts", json=ALERT, headers=headers).status_code == 202
    assert httpx.post(f"{ingest.url}/v1/alerts", json=ALERT, headers=_bearer(key)).is_success
    continued, started = (m["options"]["traceparent"] for m in _queued(redis_server))
    assert continued.startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    assert continued.split("-")[2] != "00f067aa0ba902b7", "ingest's own span"
    assert started.split("-")[1] != "4bf92f3577b34da6a3ce929d0e0e4736"


def test_producer_default_labels_and_metrics_by_format_and_producer(
    ingest: Any, redis_server: RedisServer
) -> None:
    key, _ = _key(redis_server, "prom-eu", region="eu")
    push = [{"labels": {"alertname": "Up", "severity": "info"}}]
    response = httpx.post(f"{ingest.url}/api/v2/alerts", json=push, headers=_bearer(key))
    assert response.status_code == 200
    assert response.content == b""
    invalid = 'tocsin_ingest_requests_rejected_total{format="native",reason="invalid"}'
    rejected = metric(ingest.url, invalid)  # the shared ingest's count before this test
    httpx.post(f"{ingest.url}/v1/alerts", content=b"{", headers=_bearer(key))
    [message] = _queued(redis_server)
    assert message["args"][0][0]["alert"]["labels"] == {"alertname": "Up", "severity": "info",
                                                        "region": "eu"}  # fmt: skip
    metrics = httpx.get(f"{ingest.url}/metrics").text
    assert 'tocsin_ingest_alerts_received_total{format="prometheus",producer="prom-eu"} 1.0' in (
        metrics
    )
    assert metric(ingest.url, invalid) == rejected + 1
    assert "tocsin_ingest_request_duration_seconds_bucket" in metrics


def test_openapi_document_lists_every_endpoint_and_resolves_every_reference(ingest: Any) -> None:
    assert httpx.get(f"{ingest.url}/v1/alerts").status_code == 405, "producer paths are POST"
    document = httpx.get(f"{ingest.url}/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) == {
        "/v1/alerts", "/v1/integrations/alertmanager", "/api/v2/alerts", "/v2/enqueue",
        "/v2/change/enqueue",
    }  # fmt: skip
    schemas = document["components"]["schemas"]
    assert {"AlertIn", "WebhookMessage", "PostableAlert", "Event", "ProblemDetails"} <= set(schemas)
    assert schemas["AlertIn"].get("additionalProperties") is False, "strict native format"

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if "$ref" in node else []
            return found + [r for value in node.values() for r in refs(value)]
        if isinstance(node, list):
            return [r for value in node for r in refs(value)]
        return []

    for ref in refs(document):
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
