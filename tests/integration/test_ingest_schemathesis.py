"""schemathesis against ingest's own /openapi.json: no 5xx, no answer outside the schema."""

from __future__ import annotations

import httpx
import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tocsin.client.devserver import RedisServer
from tocsin.common.apikeys import ApiKeyStore

pytestmark = pytest.mark.integration

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]  # fmt: skip


def test_every_endpoint_answers_within_its_documented_schema(
    start_service, redis_server: RedisServer
) -> None:
    ingest = start_service("ingest")
    key, _ = ApiKeyStore(redis.Redis.from_url(redis_server.url)).create("schemathesis")
    document = httpx.get(f"{ingest.url}/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(document)
    headers = {"authorization": f"Bearer {key}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 5

    for operation in operations:
        # Schema-valid and schema-invalid bodies both, so accepted and refused paths run.
        @given(
            case=operation.as_strategy(GenerationMode.POSITIVE)
            | operation.as_strategy(GenerationMode.NEGATIVE)
        )
        @settings(max_examples=10, suppress_health_check=list(HealthCheck),
                  database=None)  # fmt: skip
        def conforms(case: schemathesis.Case) -> None:
            body = case.body
            # Half the PagerDuty events carry the real key, so accepted paths run too.
            if isinstance(body, dict) and body.get("routing_key") and len(str(body)) % 2:
                body["routing_key"] = key
            case.call_and_validate(base_url=ingest.url, headers=headers, checks=CHECKS)

        conforms()

    metrics = httpx.get(f"{ingest.url}/metrics", timeout=10).text
    assert 'tocsin_ingest_alerts_received_total{format="native"' in metrics, "accepted paths ran"
    assert 'tocsin_ingest_requests_rejected_total{format="native"' in metrics, "refusals ran"
