"""The health score: each component's curve, and compute_and_store against a real Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from redis import Redis

from tocsin.client.devserver import RedisServer
from tocsin.common import keys
from tocsin.common.broker import ALERTS_QUEUE, build_broker, build_message
from tocsin.common.metrics import health_signals
from tocsin.common.queue import dead_letter_keys, queue_keys
from tocsin.scheduler.healthscore import (
    COMPONENTS,
    MIN_CACHE_LOOKUPS,
    Signals,
    compute_and_store,
    gauges,
    linear_score,
    read_signals,
    score,
)

WEIGHTS = {component.name: component.weight for component in COMPONENTS}


def test_weights_add_up_to_one_hundred() -> None:
    assert sum(WEIGHTS.values()) == 100


def test_no_data_at_all_scores_full_health() -> None:
    assert score(Signals()).score == 100


@pytest.mark.parametrize(
    ("value", "good", "bad", "expected"),
    [
        (0.05, 0.1, 0.5, 1.0),
        (0.1, 0.1, 0.5, 1.0),
        (0.3, 0.1, 0.5, 0.5),
        (0.5, 0.1, 0.5, 0.0),
        (9.0, 0.1, 0.5, 0.0),
        (0.995, 0.995, 0.95, 1.0),
        (0.9725, 0.995, 0.95, 0.5),
        (0.9, 0.995, 0.95, 0.0),
        (None, 0.1, 0.5, 1.0),
    ],
)
def test_linear_curve_is_flat_beyond_good_and_bad_and_straight_between(
    value: float | None, good: float, bad: float, expected: float
) -> None:
    assert linear_score(value, good, bad) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("component", "healthy", "halfway", "failing"),
    [
        ("e2e_latency_p95", 0.1, 0.3, 0.5),
        ("job_success_rate", 0.995, 0.9725, 0.95),
        ("queue_backlog_age", 5.0, 32.5, 60.0),
        ("cache_hit_rate", 0.8, 0.6, 0.4),
        ("dead_letter_growth", 0.0, 5.0, 10.0),
        ("disconnect_rate", 1.0, 10.5, 20.0),
        ("redis_reachable", 1.0, 0.5, 0.0),
    ],
)
def test_each_component_moves_the_score_by_its_weight_across_its_thresholds(
    component: str, healthy: float, halfway: float, failing: float
) -> None:
    weight = WEIGHTS[component]
    assert score(Signals(**{component: healthy})).score == 100
    assert score(Signals(**{component: halfway})).score == round(100 - weight / 2)
    assert score(Signals(**{component: failing})).score == round(100 - weight)


def test_report_lists_each_component_with_value_and_contribution() -> None:
    report = score(Signals(e2e_latency_p95=0.3, cache_hit_rate=0.9))
    parts = {part.name: part for part in report.components}
    assert set(parts) == set(WEIGHTS)
    assert parts["e2e_latency_p95"].value == 0.3
    assert parts["e2e_latency_p95"].contribution == pytest.approx(12.5)
    assert parts["cache_hit_rate"].contribution == pytest.approx(10)
    assert report.score == round(sum(part.contribution for part in report.components))


@pytest.fixture
def redis(redis_server: RedisServer) -> Iterator[Redis]:
    client = Redis.from_url(redis_server.url)
    health_signals.bind(client, flush_interval=0)
    yield client
    health_signals.unbind()
    client.close()


def test_counted_signals_flow_through_redis_into_the_components(redis: Redis) -> None:
    for _ in range(90):
        health_signals.observe_latency(0.02)
    for _ in range(10):
        health_signals.observe_latency(0.4)
    health_signals.add("jobs_success", 95)
    health_signals.add("jobs_failed", 5)
    health_signals.add("cache_hits", 15)
    health_signals.add("cache_misses", 5)
    health_signals.add("ws_disconnects_abnormal", 50)
    health_signals.flush()
    signals = read_signals(redis)
    assert signals.e2e_latency_p95 == 0.5
    assert signals.job_success_rate == pytest.approx(0.95)
    assert signals.cache_hit_rate == pytest.approx(0.75)
    assert signals.disconnect_rate == pytest.approx(10.0)
    assert signals.redis_reachable == 1.0
    assert signals.queue_backlog_age == 0.0


def test_too_few_cache_lookups_to_judge_count_as_no_data(redis: Redis) -> None:
    health_signals.add("cache_misses", MIN_CACHE_LOOKUPS - 1)
    health_signals.flush()
    assert read_signals(redis).cache_hit_rate is None
    health_signals.add("cache_misses", 1)
    health_signals.flush()
    assert read_signals(redis).cache_hit_rate == 0.0


def test_the_report_says_what_pulls_the_score_down_costliest_first() -> None:
    assert score(Signals()).pulled_down_by == ()
    report = score(Signals(e2e_latency_p95=0.3, cache_hit_rate=0.2, redis_reachable=1.0))
    assert report.pulled_down_by == (
        "e2e_latency_p95 is 0.3 seconds (p95 ingest receipt to socket send): "
        "costs 12.5 of 25 points (full at <= 0.1)",
        "cache_hit_rate is 0.2 ratio (cache hits / lookups): costs 10 of 10 points "
        "(full at >= 0.8)",
    )


def test_signals_older_than_the_window_are_ignored(redis: Redis) -> None:
    health_signals.add("jobs_failed", 100)
    health_signals.flush(now=time.time() - 600)
    assert read_signals(redis).job_success_rate is None


def test_waiting_message_age_is_the_backlog_component(
    redis: Redis, redis_server: RedisServer
) -> None:
    broker = build_broker(redis_server.url)
    broker.enqueue(build_message(ALERTS_QUEUE, "process_alerts", ([],)))
    # Age the message as if it had waited 40 s, without waiting.
    names = queue_keys(ALERTS_QUEUE)
    redis_id = redis.lindex(names.pending, 0) or b""
    stored = json.loads(redis.hget(names.messages, redis_id) or b"{}")
    stored["message_timestamp"] -= 40_000
    redis.hset(names.messages, redis_id, json.dumps(stored))
    signals = read_signals(redis)
    assert signals.queue_backlog_age is not None
    assert 39 <= signals.queue_backlog_age < 60
    broker.close()


def test_dead_letters_added_within_the_window_lower_the_score(redis: Redis) -> None:
    now = time.time()
    assert compute_and_store(redis, now=now).score == 100
    dead, _ = dead_letter_keys(ALERTS_QUEUE)
    redis.zadd(dead, {f"m{i}": now for i in range(10)})
    report = compute_and_store(redis, now=now + 15)
    parts = {part.name: part for part in report.components}
    assert parts["dead_letter_growth"].value == 10
    assert report.score == 90


def test_unreachable_redis_scores_zero_for_reachability() -> None:
    unreachable = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    report = compute_and_store(unreachable)
    parts = {part.name: part for part in report.components}
    assert parts["redis_reachable"].score == 0
    assert report.score == 90
    assert gauges.score() == 90


def test_score_is_stored_and_published_to_system_only_when_it_changes(redis: Redis) -> None:
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.live("system"))
    now = time.time()
    compute_and_store(redis, now=now)
    compute_and_store(redis, now=now + 15)
    health_signals.add("jobs_failed", 1)
    health_signals.flush(now=now)
    compute_and_store(redis, now=now + 30)
    events = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(events) < 2:
        message = pubsub.get_message(timeout=0.5)
        if message is not None:
            events.append(json.loads(message["data"]))
    assert [event["data"]["health"]["score"] for event in events] == [100, 80]
    assert pubsub.get_message(timeout=0.3) is None
    stored = json.loads(redis.get(keys.HEALTH) or b"{}")
    assert stored["score"] == 80
    assert {part["name"] for part in stored["components"]} == set(WEIGHTS)
    pubsub.close()
