"""`tocsin processor`: run the processor worker."""

from __future__ import annotations

import signal
import threading
from typing import Any

import dramatiq
from dramatiq import Worker

from tocsin.common import broker as queues
from tocsin.common.config import load_settings
from tocsin.common.events import EventPublisher
from tocsin.common.logging import configure_logging
from tocsin.common.ops import ops_app, serve_in_thread, tune_gc
from tocsin.common.redis import sync_client
from tocsin.processor.settings import DEFAULT_PORT, ProcessorSettings
from tocsin.processor.store import AlertStore

__all__ = ["run"]


def run() -> None:
    settings = load_settings(ProcessorSettings)
    configure_logging("processor", settings.log_format, settings.log_level)
    broker = queues.build_broker(settings.redis_url)
    redis = sync_client(settings.redis_url)
    store = AlertStore(
        redis, EventPublisher(redis, settings.stream_cap), settings.dedup_window_seconds
    )

    def process_alerts(batch: list[Any]) -> None:
        store.apply(batch)

    dramatiq.actor(
        actor_name=queues.PROCESS_ALERTS_ACTOR,
        queue_name=queues.ALERTS_QUEUE,
        broker=broker,
        max_retries=20,
    )(process_alerts)

    async def ready() -> tuple[bool, dict[str, str]]:
        try:
            redis.ping()
        except Exception as exc:
            return False, {"redis": f"unreachable: {exc}"}
        return True, {"redis": "ok"}

    serve_in_thread(ops_app(ready), settings.host, settings.port or DEFAULT_PORT)
    # A short worker timeout bounds the consumer's idle back-off, which otherwise
    # grows to a second and sits in the enqueue-to-start tail.
    worker = Worker(
        broker,
        queues={queues.ALERTS_QUEUE},
        worker_threads=settings.worker_threads,
        worker_timeout=settings.idle_poll_ms,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    tune_gc()
    worker.start()
    stop.wait()
    worker.stop()
    broker.close()
