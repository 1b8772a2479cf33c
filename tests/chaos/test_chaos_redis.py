"""Chaos: Redis frozen (SIGSTOP) and Redis killed (SIGKILL, AOF on) while alerts flow.

Outcomes (README, "Chaos suite"):

- frozen: ingest's answers are truthful -- a 503 only for alerts that were not
  enqueued, a 504 "outcome unknown" where the request was sent and no answer
  came -- and every service's `/readyz` answers 503 (within a second) instead
  of hanging; after the thaw every accepted alert is stored once;
- killed and restarted: every accepted alert is stored exactly once, with
  producers retrying 5xx answers under their Idempotency-Key.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.chaos.harness import Producer, Stack, Tally, long_chaos, settle_stored, stored_counts

pytestmark = pytest.mark.integration


def _readyz(url: str) -> tuple[int, float]:
    """The status of `url`/readyz and how long it took; a hang fails at 5 s."""
    started = time.monotonic()
    answer = httpx.get(f"{url}/readyz", timeout=5)
    return answer.status_code, time.monotonic() - started


@pytest.mark.parametrize(
    ("frozen_for", "rounds"),
    [pytest.param(7.0, 1, id="short"), pytest.param(20.0, 4, id="long", marks=long_chaos)],
)
def test_frozen_redis_gets_truthful_ingest_answers_and_prompt_readyz(
    stack: Stack, frozen_for: float, rounds: int
) -> None:
    # A long auth cache: the frozen Redis is met by admission, not by the key lookup.
    ingest = stack.start("ingest", TOCSIN_AUTH_CACHE_SECONDS="600")
    others = [stack.start(name) for name in ("processor", "scheduler", "notifier", "gateway")]
    key = stack.api_key()
    producer = Producer(ingest.url, key, timeout=10)
    # No retries: each alert's one answer is checked against what Redis holds.
    truthful = Producer(ingest.url, key, timeout=10)
    redis = stack.redis.client()
    producer.send(20)
    readyz: list[tuple[str, int, float]] = []
    for _ in range(rounds):
        with producer.in_background(frozen_for + 3, rate=20):
            time.sleep(1)
            with stack.redis.frozen():
                until = time.monotonic() + frozen_for
                with httpx.Client() as client:
                    while time.monotonic() < until:
                        truthful.send_one(client, retry_for=0)
                for service in (ingest, *others):
                    status, took = _readyz(service.url)
                    readyz.append((service.name, status, took))
    settled = settle_stored(redis, producer, 60, "after the thaw")
    stored = stored_counts(redis, truthful.sent_keys)
    refused_yet_stored = [
        key for key, answers in truthful.answers_by_key.items()
        if answers[-1] == "503" and key in stored
    ]  # fmt: skip
    accepted_not_stored = [key for key in truthful.accepted_keys if key not in stored]
    tally = Tally.of_alerts("Redis SIGSTOP", producer, redis, settle_seconds=settled)
    tally.notes["truthful_answers"] = dict(truthful.answers)
    tally.notes["readyz_max_s"] = f"{max(took for _, _, took in readyz):.2f}"
    tally.report()
    tally.assert_clean()
    assert all(status == 503 for _, status, _ in readyz), readyz
    assert refused_yet_stored == [], "a 503 was answered for an alert that was enqueued"
    assert accepted_not_stored == []
    assert truthful.answers, "no request met the frozen Redis"


@pytest.mark.parametrize(
    ("seconds", "kills"),
    [pytest.param(8, 1, id="short"), pytest.param(120, 10, id="long", marks=long_chaos)],
)
def test_redis_sigkill_with_aof_during_flow_loses_and_doubles_nothing(
    stack: Stack, seconds: float, kills: int
) -> None:
    ingest = stack.start("ingest")
    stack.start("processor")
    producer = Producer(ingest.url, stack.api_key(), timeout=5)
    with producer.in_background(seconds, rate=40):
        for _ in range(kills):
            time.sleep(seconds / (kills + 1))
            stack.redis.kill()
            time.sleep(1.0)
            stack.redis.restart()
    restarted_at = time.monotonic()
    redis = stack.redis.client()
    settle_stored(redis, producer, 60, "after the restart")
    tally = Tally.of_alerts(
        f"Redis SIGKILL (AOF) x{kills}", producer, redis,
        settle_seconds=time.monotonic() - restarted_at,
    )  # fmt: skip
    tally.report()
    assert tally.accepted > 0
    tally.assert_clean()
