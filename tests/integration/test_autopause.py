"""Auto-pause end to end: the real notifier, a real webhook receiver, stored predictions.

Predictions are written the way the scheduler's `predict_incident` writes them
(tests/integration/test_prediction.py runs that part for real); here they are
set directly so that the notifier's first flush always finds them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
from tests.integration import test_notifier_delivery as support
from tests.integration.test_notifier_delivery import FAST, Enqueuer, alert, routes_file
from tests.support import wait_until

from tocsin.common import keys
from tocsin.common.models import StoredAlert
from tocsin.common.prediction import IncidentPrediction

pytestmark = pytest.mark.integration

receivers = support.receivers
PAUSE_SECONDS = 3


def opened(name: str, fingerprint: str) -> StoredAlert:
    stored = alert(name, fingerprint)
    stored.first_seen_ts = time.time()
    return stored


def predict(client: redis.Redis, stored: StoredAlert, *, transient: bool, enough: bool) -> None:
    prediction = IncidentPrediction(
        alert_id=stored.id, predicted_at="now", level="fingerprint" if enough else "none",
        episodes=30 if enough else 2, resolved_episodes=30 if enough else 2,
        enough_history=enough, min_episodes=5, window_seconds=300,
        transient_probability=(0.97 if transient else 0.1) if enough else None,
    )  # fmt: skip
    client.set(keys.prediction(stored.id), msgspec.json.encode(prediction))


def notes(client: redis.Redis, alert_id: str) -> list[str]:
    raw = client.lrange(keys.notification_log(alert_id), 0, -1)
    return [json.loads(entry)["outcome"] for entry in raw]  # type: ignore[union-attr]


@pytest.fixture
def paging(redis_server: Any, start_service: Any, receivers: Any, tmp_path: Path) -> Any:
    hook = receivers()
    path = routes_file(
        tmp_path,
        f"""
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 100ms
  group_interval: 500ms
  pause_if_transient: {{probability: 0.8, for: {PAUSE_SECONDS}s}}
receivers:
  - {{name: hook, type: webhook, url: "{hook.url}"}}
""",
    )
    start_service("notifier", TOCSIN_ROUTES_FILE=path, **FAST)
    return hook, Enqueuer(redis_server.url), redis.Redis.from_url(redis_server.url)


def test_a_transient_incident_resolved_within_the_pause_pages_no_one(paging: Any) -> None:
    hook, enqueue, client = paging
    stored = opened("Blip", "fp-blip")
    predict(client, stored, transient=True, enough=True)
    enqueue.transition(stored)
    wait_until(lambda: any(n.startswith("paused until") for n in notes(client, stored.id)))
    enqueue.transition(stored, "resolved")
    wait_until(lambda: "paused, resolved during pause" in notes(client, stored.id))
    time.sleep(PAUSE_SECONDS + 1.0)  # past the pause's end and two group intervals
    assert hook.arrivals == []


def test_a_persistent_incident_pages_once_when_the_pause_ends_marked_paused(
    paging: Any,
) -> None:
    hook, enqueue, client = paging
    stored = opened("Stuck", "fp-stuck")
    predict(client, stored, transient=True, enough=True)
    enqueue.transition(stored)
    [page] = hook.wait_for(1, timeout=PAUSE_SECONDS + 30)
    body = page.json()
    assert body["paused"] == [stored.id]
    assert body["status"] == "firing"
    assert time.time() >= stored.first_seen_ts + PAUSE_SECONDS
    time.sleep(1.5)  # three more group intervals: no second page
    assert len(hook.arrivals) == 1


def test_an_incident_with_little_history_is_paged_at_once(paging: Any) -> None:
    hook, enqueue, client = paging
    stored = opened("Newcomer", "fp-new")
    predict(client, stored, transient=True, enough=False)
    enqueue.transition(stored)
    [page] = hook.wait_for(1)
    assert page.json()["paused"] == []
    assert not any(n.startswith("paused") for n in notes(client, stored.id))
