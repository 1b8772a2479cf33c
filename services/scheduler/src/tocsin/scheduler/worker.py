"""The job actors: each job kind bound to its Dramatiq actor, queue and time limit.

A job receives its `Run` (as builtins) and returns a short summary that the
run ledger keeps in the history. Jobs read Redis's clock, not the host's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import dramatiq
import msgspec
from dramatiq.brokers.redis import RedisBroker
from redis import Redis

from tocsin.scheduler.analytics import run_daily_analytics
from tocsin.scheduler.cachehealth import check_cache_health
from tocsin.scheduler.healthscore import compute_and_store
from tocsin.scheduler.jobs import JOB_QUEUES, Run, actor_name
from tocsin.scheduler.ledger import RunLedger
from tocsin.scheduler.patterns import PatternRules, run_pattern_detection
from tocsin.scheduler.prediction.actors import PredictionRules, Predictor
from tocsin.scheduler.retention import RetentionPolicy, enforce_retention
from tocsin.scheduler.settings import SchedulerSettings

__all__ = ["declare_job_actors", "job_bodies", "predictor_of"]

log = logging.getLogger(__name__)

JobBody = Callable[[Run], Any]


def _redis_now(redis: Redis) -> float:
    seconds, micros = redis.time()
    return float(seconds) + float(micros) / 1e6


def _health_score(redis: Redis) -> dict[str, Any]:
    report = compute_and_store(redis)
    return {"computed": True, "score": report.score}


def predictor_of(redis: Redis, settings: SchedulerSettings) -> Predictor:
    """The prediction jobs' and actor's shared state, from the settings."""
    return Predictor(
        redis,
        PredictionRules(
            window_seconds=settings.prediction_window_seconds,
            min_episodes=settings.prediction_min_episodes,
            history_cap=settings.prediction_history_cap,
            ttl_seconds=settings.retention_days * 86400,
            volume_lookback_hours=settings.volume_lookback_days * 24,
            volume_interval=settings.volume_interval,
            storm_min_alerts=settings.storm_min_alerts,
        ),
        clock=lambda: _redis_now(redis),
    )


def job_bodies(redis: Redis, settings: SchedulerSettings) -> dict[str, JobBody]:
    """What each job kind does, given the process's Redis client and settings."""
    rules = PatternRules(
        window_seconds=settings.pattern_window_seconds,
        flap_episodes=settings.pattern_flap_episodes,
        storm_window_seconds=settings.storm_window_seconds,
        storm_factor=settings.storm_factor,
        storm_min_alerts=settings.storm_min_alerts,
        noisy_duplicate_ratio=settings.noisy_duplicate_ratio,
        noisy_min_occurrences=settings.noisy_min_occurrences,
        recurring_days=settings.recurring_days,
        recurring_lookback_days=settings.recurring_lookback_days,
    )
    policy = RetentionPolicy(
        alert_seconds=settings.retention_days * 86400,
        stream_seconds=settings.stream_retention_days * 86400,
        batch=settings.retention_batch,
    )
    batch = settings.retention_batch
    predictor = predictor_of(redis, settings)
    return {
        "daily_analytics": lambda run: run_daily_analytics(
            redis, run.fire, run.params, top_n=settings.analytics_top_n, batch=batch
        ),
        "pattern_detection": lambda run: run_pattern_detection(
            redis, _redis_now(redis), rules, batch=batch, run_id=run.run_id
        ),
        "cache_health": lambda run: check_cache_health(redis, _redis_now(redis)),
        "health_score": lambda run: _health_score(redis),
        "retention": lambda run: enforce_retention(redis, _redis_now(redis), policy),
        "prediction_history": lambda run: predictor.refresh_history(),
        "volume_forecast": lambda run: {"storms": predictor.forecast_volume().storms},
    }


def declare_job_actors(
    broker: RedisBroker, redis: Redis, settings: SchedulerSettings, ledger: RunLedger
) -> None:
    """Declare one actor per job kind on `broker`, with its queue, time limit and retries."""
    for job, body in job_bodies(redis, settings).items():

        def perform(raw: dict[str, Any], body: JobBody = body) -> None:
            run = msgspec.convert(raw, Run)
            ledger.note_summary(run.run_id, body(run))

        perform.__name__ = actor_name(job)
        dramatiq.actor(
            actor_name=actor_name(job),
            queue_name=JOB_QUEUES[job],
            broker=broker,
            time_limit=settings.job_time_limit_seconds * 1000,
            max_retries=settings.job_max_retries,
            min_backoff=1000,
            max_backoff=30_000,
        )(perform)
