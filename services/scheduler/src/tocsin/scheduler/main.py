"""`tocsin scheduler`: evaluate schedules and run the jobs they enqueue.

Every replica runs the dispatcher (claims make a fire time run once, without a
leader) and, unless `TOCSIN_RUN_WORKERS=0`, worker threads for the job queues.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading

from redis import Redis

from tocsin.common.broker import build_broker
from tocsin.common.config import load_settings
from tocsin.common.logging import configure_logging
from tocsin.common.ops import ops_app, redis_ready, serve_in_thread, shutdown_event, tune_gc
from tocsin.common.queue import Consumer, Recovery
from tocsin.common.redis import sync_client
from tocsin.common.telemetry import setup_observability
from tocsin.scheduler.claims import RunClaims
from tocsin.scheduler.dispatch import Dispatcher
from tocsin.scheduler.jobs import JOB_QUEUES
from tocsin.scheduler.ledger import RunLedger
from tocsin.scheduler.prediction.actors import declare_prediction_actors
from tocsin.scheduler.schedule import InvalidScheduleError, load_schedules
from tocsin.scheduler.settings import DEFAULT_PORT, SchedulerSettings
from tocsin.scheduler.worker import declare_job_actors, predictor_of

__all__ = ["run"]

log = logging.getLogger(__name__)

RUNNING_MARGIN_MS = 2000


def run() -> None:
    settings = load_settings(SchedulerSettings)
    configure_logging("scheduler", settings.log_format, settings.log_level)
    setup_observability("scheduler", settings.redis_url)
    try:
        schedules = load_schedules(settings.schedules)
    except (InvalidScheduleError, OSError) as exc:
        print(f"tocsin scheduler: TOCSIN_SCHEDULES: {exc}", file=sys.stderr)
        sys.exit(2)
    replica = f"{socket.gethostname()}:{os.getpid()}"
    redis: Redis = sync_client(settings.redis_url)
    ledger = RunLedger(
        redis,
        worker=replica,
        # The time limit stops a run, so a running mark outliving it by a little
        # belongs to a worker that died mid-run.
        running_ttl_ms=settings.job_time_limit_seconds * 1000 + RUNNING_MARGIN_MS,
        lease_ms=int(settings.redispatch_after_seconds * 1000),
        done_ttl_seconds=settings.run_record_days * 86400,
        history_cap=settings.history_cap,
    )
    queues = sorted(set(JOB_QUEUES.values()))
    broker = build_broker(settings.redis_url, middleware=[ledger], queues=queues)
    declare_job_actors(broker, redis, settings, ledger)
    declare_prediction_actors(broker, predictor_of(redis, settings))

    dispatcher = Dispatcher(
        RunClaims(
            redis,
            replica,
            settings.claim_ttl_seconds,
            lease_seconds=settings.redispatch_after_seconds,
        ),
        schedules,
        misfire_grace=settings.misfire_grace_seconds,
        redispatch_after=settings.redispatch_after_seconds,
    )
    dispatcher.publish_catalog()
    serve_in_thread(ops_app(redis_ready(redis)), settings.host, settings.port or DEFAULT_PORT)

    stop = shutdown_event()
    consumer: Consumer | None = None
    if settings.run_workers:
        consumer = Consumer(
            broker,
            queues,
            worker_threads=settings.worker_threads,
            recovery=Recovery(timeout_ms=settings.queue_heartbeat_timeout_ms),
            name="jobs",
        )
        consumer.start()
    tune_gc()
    log.info(
        "scheduler started",
        extra={"replica": replica, "schedules": [s.name for s in schedules]},
    )
    ticker = threading.Thread(
        target=dispatcher.run_forever, args=(stop, settings.tick_ms / 1000), name="dispatcher"
    )
    ticker.start()
    stop.wait()
    ticker.join()
    if consumer is not None:
        consumer.stop()
    broker.close()
