"""`tocsin processor`: run the processor worker."""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq import Worker
from prometheus_client import REGISTRY

from tocsin.common import broker as queues
from tocsin.common.config import load_settings
from tocsin.common.logging import configure_logging
from tocsin.common.metrics import QueueCollector
from tocsin.common.ops import ops_app, redis_ready, serve_in_thread, shutdown_event, tune_gc
from tocsin.common.redis import sync_client
from tocsin.common.telemetry import current_traceparent, setup_observability, tracing_enabled
from tocsin.processor.consumer import BatchConsumer
from tocsin.processor.lifecycle import AlertLifecycle, LifecycleConfig
from tocsin.processor.prediction_hook import request_predictions
from tocsin.processor.processing import (
    AlertProcessor,
    AutoResolveSweep,
    Silences,
    TrailingUpdates,
)
from tocsin.processor.settings import DEFAULT_PORT, ProcessorSettings

__all__ = ["lifecycle_config", "run"]

MAX_RETRIES = 20


def lifecycle_config(settings: ProcessorSettings) -> LifecycleConfig:
    return LifecycleConfig(
        window=settings.dedup_window_seconds,
        flap_count=settings.flap_threshold,
        flap_window=settings.flap_window_seconds,
        applied_ttl=settings.applied_ttl_seconds,
        state_ttl=settings.retention_days * 86_400,
        timeline_cap=settings.timeline_cap,
        stream_cap=settings.stream_cap,
        update_interval=settings.update_event_interval_seconds,
        resolve_timeout=settings.auto_resolve_seconds,
        alertmanager_resolve_timeout=settings.alertmanager_resolve_seconds,
    )


def run() -> None:
    settings = load_settings(ProcessorSettings)
    configure_logging("processor", settings.log_format, settings.log_level)
    setup_observability("processor", settings.redis_url)
    broker = queues.build_broker(settings.redis_url)
    # Read per command by the broker: how soon a killed worker's messages come back.
    broker.heartbeat_timeout = settings.queue_heartbeat_timeout_ms
    broker.maintenance_chance = settings.queue_maintenance_chance
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
        )(function)

    serve_in_thread(ops_app(redis_ready(redis)), settings.host, settings.port or DEFAULT_PORT)
    stop = shutdown_event()
    if settings.batch_consumer and not tracing_enabled():
        # Queue depth and age, which Dramatiq's worker boot would otherwise register.
        REGISTRY.register(QueueCollector(redis, {queues.ALERTS_QUEUE}))
        consumer = BatchConsumer(
            broker,
            processor,
            queues.ALERTS_QUEUE,
            batch_size=settings.batch_max_messages,
            wait=(settings.wakeup_wait_ms if settings.queue_wakeup else settings.idle_poll_ms)
            / 1000,
            wakeup=settings.queue_wakeup,
            max_retries=MAX_RETRIES,
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
        return
    # A short worker timeout bounds the consumer's idle back-off, which otherwise
    # grows to a second and sits in the enqueue-to-start tail.
    worker = Worker(
        broker,
        queues={queues.ALERTS_QUEUE},
        worker_threads=settings.worker_threads,
        worker_timeout=settings.idle_poll_ms,
    )
    tune_gc()
    worker.start()
    sweep.start()
    trailing.start()
    stop.wait()
    sweep.stop()
    trailing.stop()
    worker.stop()
    broker.close()
