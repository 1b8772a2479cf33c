"""`GET /v1/alerts` views: summaries by default, full records or chosen fields on request."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from tests.integration.test_processor_api import enqueue, queued
from tests.support import wait_until

pytestmark = pytest.mark.integration

SUMMARY_KEYS = {"id", "name", "severity", "status", "service", "team", "summary", "labels",
                "count", "first_seen", "last_seen", "acknowledged_at", "acknowledged_by",
                "resolved_at", "resolved_by", "silenced", "flapping"}  # fmt: skip


def test_a_list_shows_summaries_by_default_and_full_records_or_chosen_fields_on_request(
    start_service: Any, user_token: Callable[..., str]
) -> None:
    processor = start_service("processor")
    gateway = start_service("gateway")
    enqueue(
        processor.env["REDIS_URL"],
        [queued(f"view-{n}", service="db", summary="disk 95% full",
                labels={"team": "ops", "host": f"db-{n}"},
                annotations={"runbook_url": "https://runbooks.example/disk",
                             "description": "the disk of db is nearly full " * 4})
         for n in range(50)],
    )  # fmt: skip
    auth = {"authorization": f"Bearer {user_token()}"}
    with httpx.Client(base_url=gateway.url, headers=auth, timeout=10) as http:
        wait_until(lambda: http.get("/v1/alerts", params={"limit": 1}).json()["total"] == 50)
        summaries = http.get("/v1/alerts", params={"limit": 50})
        full = http.get("/v1/alerts", params={"limit": 50, "fields": "full"})
        # The view is not part of the cache key: the second view of one query is a hit.
        assert full.headers["x-cache"] == "hit"
        records = {record["id"]: record for record in full.json()["alerts"]}
        listed = summaries.json()["alerts"]
        assert [a["id"] for a in listed] == list(records)
        for summary in listed:
            record = records[summary["id"]]
            assert set(summary) <= SUMMARY_KEYS
            assert summary["team"] == "ops"
            assert "annotations" not in summary
            assert "fingerprint" not in summary
            for key, value in summary.items():
                if key != "team":
                    assert record[key] == value, key
        assert summaries.json()["total"] == full.json()["total"] == 50
        print(f"\n50 alerts: summary {len(summaries.content) / 50:.0f} bytes/alert, "
              f"full {len(full.content) / 50:.0f} bytes/alert")  # fmt: skip
        assert len(summaries.content) * 2 < len(full.content)

        picked = http.get("/v1/alerts", params={"limit": 2, "fields": "annotations,name"}).json()
        assert [set(alert) for alert in picked["alerts"]] == [{"id", "name", "annotations"}] * 2
        assert picked["alerts"][0]["annotations"]["runbook_url"].startswith("https://")

        refused = http.get("/v1/alerts", params={"fields": "name,password"})
        assert refused.status_code == 400
        assert refused.headers["content-type"] == "application/problem+json"
        assert "password" in refused.json()["detail"]

        document = http.get("/openapi.json").json()
        assert document["openapi"] == "3.1.0"
        assert {"AlertSummary", "StoredAlert", "SilenceIn"} <= set(
            document["components"]["schemas"]
        )
