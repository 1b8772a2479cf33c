"""`tocsin processor`: run the processor worker."""

from __future__ import annotations

from typing import Any

import dramatiq

from tocsin.common import broker as queues
from tocsin.common.config import load_settings
from tocsin.common.logging import configure_logging
from tocsin.common.ops import ops_app, redis_ready, serve_in_thread, shutdown_event, tune_gc
from tocsin.common.queue import Consumer, Recovery
from tocsin.common.redis import sync_client
from tocsin.common.telemetry import current_traceparent, setup_observability
from tocsin.processor.consumer import AlertBatches
from tocsin.processor.lifecycle import AlertLifecycle, LifecycleConfig
from tocsin.processor.prediction_hook import request_predictions
from tocsin.processor.processing import (
    AlertProcessor,
    AutoResolveSweep,
    Silences,
    TrailingUpdates,
)
from tocsin.processor.rules import Policy
from tocsin.processor.settings import DEFAULT_PORT, ProcessorSettings

__all__ = ["lifecycle_config", "run"]

MAX_RETRIES = 20


def lifecycle_config(settings: ProcessorSettings) -> LifecycleConfig:
    policy = Policy(
        window=settings.dedup_window_seconds,
        flap_count=settings.flap_threshold,
        flap_window=settings.flap_window_seconds,
        resolve_timeout=settings.auto_resolve_seconds,
        alertmanager_resolve_timeout=settings.alertmanager_resolve_seconds,
        update_interval=settings.update_event_interval_seconds,
    )
    return LifecycleConfig(
        policy=policy,
        applied_ttl=settings.applied_ttl_seconds,
        timeline_cap=settings.timeline_cap,
        stream_cap=settings.stream_cap,
    )


def run() -> None:
    settings = load_settings(ProcessorSettings)
    configure_logging("processor", settings.log_format, settings.log_level)
    setup_observability("processor", settings.redis_url)
    broker = queues.build_broker(settings.redis_url)
    redis = sync_client(settings.redis_url)
    lifecycle = AlertLifecycle(redis, lifecycle_config(settings))
    trailing = TrailingUpdates(lifecycle, settings.update_event_interval_seconds)
    processor = AlertProcessor(
        lifecycle,
        Silences(redis),
        trailing,
        after_apply=lambda outcomes: request_predictions(redis, outcomes),
    )
    sweep = AutoResolveSweep(lifecycle, settings.sweep_interval_seconds)

    def process_alerts(batch: list[Any]) -> None:
        processor.process_alerts(batch, current_traceparent())

    def apply_action(action: Any) -> None:
        processor.apply_action(action, current_traceparent())

    for actor_name, function in (
        (queues.PROCESS_ALERTS_ACTOR, process_alerts),
        (queues.APPLY_ACTION_ACTOR, apply_action),
    ):
        dramatiq.actor(
            actor_name=actor_name,
            queue_name=queues.ALERTS_QUEUE,
            broker=broker,
            max_retries=MAX_RETRIES,
            min_backoff=100,
            max_backoff=60_000,
        )(function)

    serve_in_thread(ops_app(redis_ready(redis)), settings.host, settings.port or DEFAULT_PORT)
    stop = shutdown_event()
    consumer = Consumer(
        broker,
        [queues.ALERTS_QUEUE],
        batch_handler=AlertBatches(processor),
        batch_size=settings.batch_max_messages,
        recovery=Recovery(timeout_ms=settings.queue_heartbeat_timeout_ms),
        name="alerts",
    )
    tune_gc()
    consumer.start()
    sweep.start()
    trailing.start()
    stop.wait()
    sweep.stop()
    trailing.stop()
    consumer.stop()
    broker.close()
