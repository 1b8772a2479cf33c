"""Hostile regexes: catastrophic-backtracking patterns cannot stall the gateway or the processor.

Every user regex runs on RE2 (`tocsin.common.regex`). The patterns here take
time exponential in the value on a backtracking engine: `(a+)+b` against
sixty `a`s would run for days on Python's `re`, so each test below would hit
its timeout if a backtracking engine were still on the path.
"""

from __future__ import annotations

import threading
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

EVIL_VALUE = "a" * 60
EVIL_PATTERNS = ["(a+)+b", "(a|aa)+b", "(a|a?)+b", "(.*a){20}b"]


def silence_body(matchers: list[dict[str, Any]]) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "matchers": matchers,
        "startsAt": (now - timedelta(minutes=1)).isoformat(),
        "endsAt": (now + timedelta(hours=1)).isoformat(),
    }


def test_redos_label_filters_answer_and_the_gateway_stays_responsive(
    start_service: Any, user_token: Callable[..., str]
) -> None:
    processor = start_service("processor")
    gateway = start_service("gateway")
    url = processor.env["REDIS_URL"]
    redis = sync_client(url)
    for n in range(3):
        send(url, f"evil-{n}", {"x": EVIL_VALUE})
    wait_until(lambda: redis.zcard(keys.alert_index()) == 3)
    auth = {"authorization": f"Bearer {user_token()}"}
    probes: list[int] = []
    stop = threading.Event()

    def probe() -> None:
        # The event loop answers health checks while the filters run.
        with httpx.Client(base_url=gateway.url, timeout=10) as http:
            while not stop.is_set():
                probes.append(http.get("/healthz").status_code)
                time.sleep(0.01)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        # The prober answers before the filters start, so it really runs beside them.
        wait_until(lambda: bool(probes), 10, "a first health probe")
        with httpx.Client(base_url=gateway.url, headers=auth, timeout=10) as http:
            for pattern in EVIL_PATTERNS:
                answer = http.get("/v1/alerts", params={"label": f"x=~{pattern}"})
                assert answer.status_code == 200, answer.text
                assert answer.json()["alerts"] == []
            # Full match, as Alertmanager: the same family of pattern, satisfiable, finds all three.
            found = http.get("/v1/alerts", params={"label": "x=~(a+)+"})
            assert found.status_code == 200, found.text
            assert len(found.json()["alerts"]) == 3
    finally:
        stop.set()
        prober.join()
    assert probes
    assert set(probes) == {200}


UNSUPPORTED = [
    (r"(a)\1", "backreferences"),
    ("(?=a)a", "lookaround"),
    ("(?<!a)b", "lookaround"),
    ("a++", "possessive"),
    ("(", "missing )"),
    ("a" * 2000, "1024"),
]


def test_unsupported_regex_syntax_is_a_400_naming_it_on_filters_and_silences(
    start_service: Any, user_token: Callable[..., str]
) -> None:
    gateway = start_service("gateway")
    auth = {"authorization": f"Bearer {user_token()}"}
    with httpx.Client(base_url=gateway.url, headers=auth, timeout=10) as http:
        for pattern, named in UNSUPPORTED:
            listed = http.get("/v1/alerts", params={"label": f"x=~{pattern}"})
            assert listed.status_code == 400, listed.text
            assert listed.headers["content-type"].startswith("application/problem+json")
            assert named in listed.json()["detail"]
            silenced = http.post(
                "/v1/silences",
                json=silence_body([{"name": "x", "value": pattern, "isRegex": True}]),
            )
            assert silenced.status_code in (400, 422), silenced.text
            assert silenced.headers["content-type"].startswith("application/problem+json")
            assert named in silenced.text


def test_poisoned_silences_do_not_stall_the_processor(
    start_service: Any, user_token: Callable[..., str]
) -> None:
    processor = start_service("processor")
    gateway = start_service("gateway")
    url = processor.env["REDIS_URL"]
    redis = sync_client(url)
    auth = {"authorization": f"Bearer {user_token()}"}
    with httpx.Client(base_url=gateway.url, headers=auth, timeout=10) as http:
        for pattern in EVIL_PATTERNS[:3]:
            created = http.post(
                "/v1/silences",
                json=silence_body([{"name": "x", "value": pattern, "isRegex": True}]),
            )
            assert created.status_code == 201, created.text
    # Three alerts that every poisoned silence is evaluated against, then a plain one.
    for n in range(3):
        send(url, f"poisoned-{n}", {"x": EVIL_VALUE})
    send(url, "plain", {"env": "prod"})
    wait_until(lambda: redis.hget(keys.dedup("plain"), "id"), timeout=30, what="the plain alert")
    assert redis.zcard(keys.alert_index()) == 4
