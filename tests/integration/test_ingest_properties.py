"""Any body, to any endpoint of a real ingest: never a 5xx, never a malformed queue message."""

from __future__ import annotations

import json
from typing import Any

import httpx
import msgspec
import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tocsin.client.devserver import RedisServer
from tocsin.common import keys
from tocsin.common.apikeys import ApiKeyStore
from tocsin.common.models import AlertAction, QueuedAlert

pytestmark = pytest.mark.integration

QUEUE = f"{keys.DRAMATIQ_NAMESPACE}:alerts"
_text = st.text(max_size=20)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=10,
)
_near_alert = st.fixed_dictionaries(
    {"name": _text, "severity": st.sampled_from(["critical", "info", "nope"])},
    optional={"labels": st.dictionaries(_text, _text, max_size=3), "starts_at": _text | _json,
              "status": _text, "alertname": _text, "extra": _json},
)  # fmt: skip
_near_am = st.fixed_dictionaries(
    {"labels": st.dictionaries(st.sampled_from(["alertname", "severity", "job", ""]), _text)},
    optional={"status": st.sampled_from(["firing", "resolved", "x"]), "fingerprint": _text,
              "startsAt": _text, "endsAt": st.sampled_from(["0001-01-01T00:00:00Z", "x"])},
)  # fmt: skip
_near_pd = st.fixed_dictionaries(
    {"routing_key": st.just("KEY"),
     "event_action": st.sampled_from(["trigger", "acknowledge", "resolve", "x"])},
    optional={"dedup_key": _text, "payload": st.fixed_dictionaries(
        {"summary": _text, "source": _text, "severity": st.sampled_from(["info", "bad"])},
        optional={"custom_details": _json, "timestamp": _text})},
)  # fmt: skip
_bodies = st.one_of(
    st.tuples(st.just("/v1/alerts"), _near_alert | st.lists(_near_alert, max_size=3) | _json),
    st.tuples(st.just("/v1/integrations/alertmanager"),
              st.fixed_dictionaries({"alerts": st.lists(_near_am, max_size=3)}) | _json),
    st.tuples(st.just("/api/v2/alerts"), st.lists(_near_am, max_size=3) | _json),
    st.tuples(st.just("/v2/enqueue"), _near_pd | _json),
)  # fmt: skip


def _replace_key(document: Any, key: str) -> Any:
    if isinstance(document, dict) and document.get("routing_key") == "KEY":
        return {**document, "routing_key": key}
    return document


def test_no_body_gets_a_5xx_or_enqueues_a_malformed_message(
    start_service, redis_server: RedisServer
) -> None:
    ingest = start_service("ingest")
    key, _ = ApiKeyStore(redis.Redis.from_url(redis_server.url)).create("fuzz")
    client = httpx.Client(base_url=ingest.url, headers={"authorization": f"Bearer {key}"})
    statuses: set[int] = set()

    # Generated bodies that are accepted may all carry no alert (an empty list is a 200
    # with nothing to enqueue), so one alert that must be queued is always among them.
    @given(_bodies)
    @example(("/v1/alerts", {"name": "disk", "severity": "critical"}))
    @settings(max_examples=120, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def post(case: tuple[str, Any]) -> None:
        path, document = case
        body = json.dumps(_replace_key(document, key)).encode()
        response = client.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code < 500, response.text
        statuses.add(response.status_code)

    try:
        post()
    finally:
        client.close()
    assert statuses & {200, 202}, "some bodies were accepted"
    assert statuses & {400, 422}, "some bodies were refused"

    queue = redis.Redis.from_url(redis_server.url)
    messages = [queue.hget(f"{QUEUE}.msgs", i) for i in queue.lrange(QUEUE, 0, -1)]
    assert messages
    for raw in messages:
        message = json.loads(raw or b"null")
        assert message["queue_name"] == "alerts"
        if message["actor_name"] == "process_alerts":
            batch = msgspec.convert(message["args"][0], list[QueuedAlert])
            assert batch
            assert all(item.producer == "fuzz" for item in batch)
        else:
            assert message["actor_name"] == "apply_action"
            msgspec.convert(message["args"][0], AlertAction)
