"""schemathesis, every check, against the gateway's own /openapi.json over a stack with alerts."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance
from tests.integration.test_processor_api import enqueue, queued
from tests.support import start_previewing_gateway, wait_until

from tocsin.common.redis import sync_client
from tocsin.scheduler.healthscore import compute_and_store

pytestmark = pytest.mark.integration


MATCHER = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>=~|!~)(?P<value>.*)$", re.S)


def valid_regexes(query: dict[str, Any]) -> None:
    """Make regex matchers' values literal: "a regex that compiles" is beyond JSON Schema."""
    labels = query.get("label")
    if not labels:
        return
    escaped = [
        f"{m['name']}{m['op']}{re.escape(m['value'])}" if (m := MATCHER.match(raw)) else raw
        for raw in ([labels] if isinstance(labels, str) else labels)
    ]
    query["label"] = escaped


def valid_silence(body: dict[str, Any]) -> None:
    """End a silence after it starts and make its regexes literal: beyond JSON Schema too."""
    if "startsAt" in body and "endsAt" in body:
        body["startsAt"], body["endsAt"] = sorted([body["startsAt"], "2000-01-01T00:00:00Z"])
        body["endsAt"] = "9999-12-31T23:59:59Z"
    for matcher in body.get("matchers", []):
        if isinstance(matcher, dict) and matcher.get("isRegex") and "value" in matcher:
            matcher["value"] = re.escape(str(matcher["value"]))


def test_every_dashboard_operation_answers_within_its_documented_schema(
    start_service: Any, user_token: Callable[..., str]
) -> None:
    processor = start_service("processor")
    gateway = start_previewing_gateway(start_service)
    enqueue(
        processor.env["REDIS_URL"],
        [
            queued(f"schema-{n}", severity=("critical", "warning")[n % 2], service="db",
                   labels={"team": "ops", "host": f"db-{n}"},
                   annotations={"runbook_url": "https://runbooks.example/disk"})
            for n in range(5)
        ],
    )  # fmt: skip
    # The score the scheduler computes every 15 s, computed once here (before it, 503).
    compute_and_store(sync_client(processor.env["REDIS_URL"]))
    headers = {"Authorization": f"Bearer {user_token()}"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=10) as http:
        listed = wait_until(lambda: http.get("/v1/alerts").json()["alerts"])
        # A real alert id, so the detail and actions answer for real, not only 404.
        known = listed[0]["id"]
        # A cursor is opaque: a made-up one is refused (400), a real one pages.
        cursor = http.get("/v1/alerts", params={"limit": 1}).json()["next_cursor"]
    document = httpx.get(f"{gateway.url}/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(document)
    token = headers["Authorization"]

    @schema.auth()
    class Bearer:
        """The test user's token, known to schemathesis as the auth (so it can test without)."""

        def get(self, case: schemathesis.Case, context: Any) -> str:
            return token

        def set(self, case: schemathesis.Case, data: str, context: Any) -> None:
            case.headers = {**(case.headers or {}), "Authorization": data}

    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 15
    answered: dict[str, set[int]] = {}
    calls: list[schemathesis.Case] = []

    def exercise(operation: Any, mode: GenerationMode) -> None:
        # No `checks`: every check schemathesis has, except that a preview's
        # templates are free text a valid request may hold unrenderable
        # (documented 422), so "valid means accepted" cannot hold there.
        excluded = [positive_data_acceptance] if "preview" in operation.label else []
        positive = mode is GenerationMode.POSITIVE

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=6, suppress_health_check=list(HealthCheck),
                  database=None)  # fmt: skip
        def conforms(case: schemathesis.Case) -> None:
            calls.append(case)
            # Every other case names the real alert, so its paths answer for real too.
            if case.path_parameters and "alert_id" in case.path_parameters and len(calls) % 2:
                case.path_parameters["alert_id"] = known
            if positive and isinstance(case.body, dict):
                valid_silence(case.body)
            if positive and case.query:
                valid_regexes(case.query)
                if "cursor" in case.query:
                    case.query["cursor"] = cursor
            response = case.call_and_validate(base_url=gateway.url, excluded_checks=excluded)
            answered.setdefault(operation.label, set()).add(response.status_code)

        conforms()

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            exercise(operation, mode)

    assert not [label for label, codes in answered.items() if max(codes) >= 500], answered
    assert 200 in answered["GET /v1/alerts"], answered
    assert 200 in answered["GET /v1/alerts/{alert_id}"], answered
    assert 202 in answered["POST /v1/alerts/{alert_id}/ack"], answered
    assert 201 in answered["POST /v1/silences"], answered
