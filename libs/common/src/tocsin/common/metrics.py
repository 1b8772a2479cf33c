"""Shared Prometheus metrics: job outcomes, queues, Redis errors, end-to-end latency.

Conventions for every Tocsin metric (the full list is docs/metrics.md):

- names start with `tocsin_`, use base units (`_seconds`, `_bytes`) and end in
  `_total` for counters; a service's own metrics are `tocsin_<service>_*`;
- label values come from small closed sets (queue, actor, outcome, format,
  reason...), never alert ids, fingerprints or user input;
- every process serves its default registry at `/metrics`. The workers run
  Dramatiq in-process with threads (no fork), so plain registries are exact
  and no multiprocess directory is needed.

`JobMetrics` is added to every broker by `tocsin.common.broker.build_broker`.
Queue depth and age are the queue layer's (`tocsin.common.queue.gauges`),
registered by each consumer when it starts.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any

from dramatiq.broker import Broker, MessageProxy
from dramatiq.middleware import Middleware
from prometheus_client import Counter, Histogram
from redis import Redis, RedisError

from tocsin.common import keys

__all__ = [
    "E2E_LATENCY_BUCKETS",
    "JOBS",
    "JOB_DURATION",
    "REDIS_ERRORS",
    "HealthSignals",
    "JobMetrics",
    "count_redis_error",
    "health_signals",
]

# Buckets for the health score's end-to-end latency distribution (objective: p95
# under 100 ms from ingest receipt to socket send); the gateway's
# `tocsin_e2e_latency_seconds` histogram is the Prometheus side of the same figure.
E2E_LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

JOBS = Counter(
    "tocsin_jobs_total",
    "Dramatiq jobs finished, by actor, queue and outcome (success, retried, dead_lettered, "
    "skipped).",
    ["actor", "queue", "outcome"],
)
JOB_DURATION = Histogram(
    "tocsin_job_duration_seconds",
    "Time spent running one Dramatiq job, by actor and queue.",
    ["actor", "queue"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
REDIS_ERRORS = Counter(
    "tocsin_redis_errors_total",
    "Redis commands that failed, by error class (ConnectionError, TimeoutError, ResponseError...).",
    ["error"],
)


def count_redis_error(exc: BaseException) -> None:
    """Count `exc` in `tocsin_redis_errors_total` when it is a Redis error."""
    if isinstance(exc, RedisError):
        REDIS_ERRORS.labels(type(exc).__name__).inc()


class HealthSignals:
    """The health score's inputs counted in this process, added to Redis every few seconds.

    Each process adds its counts to the hash `tocsin:health:signals:{minute}`
    (HINCRBY, expiring after ten minutes) from a background thread, so the hot
    path only increments a dict under a lock, and nothing at all until `bind`
    gives it a Redis client. Fields: `jobs_success`, `jobs_failed`,
    `cache_hits`, `cache_misses`, `ws_disconnects_abnormal`, and
    `e2e_le_{bound}` / `e2e_count` for the latency distribution (cumulative
    buckets of `E2E_LATENCY_BUCKETS`).
    """

    def __init__(self) -> None:
        self._counts: defaultdict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        self._redis: Redis | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def bound(self) -> bool:
        return self._redis is not None

    def bind(self, redis: Redis, flush_interval: float = 5.0) -> None:
        """Start adding this process's counts to Redis every `flush_interval` seconds."""
        self._redis = redis
        if self._thread is None and flush_interval > 0:
            self._thread = threading.Thread(
                target=self._run, args=(flush_interval,), name="health-signals", daemon=True
            )
            self._thread.start()

    def unbind(self) -> None:
        """Flush what is counted and stop; counts are then ignored again."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.flush()
        self._redis = None
        self._stop = threading.Event()

    def add(self, name: str, amount: int = 1) -> None:
        if self._redis is None:
            return
        with self._lock:
            self._counts[name] += amount

    def observe_latency(self, seconds: float) -> None:
        if self._redis is None:
            return
        with self._lock:
            self._counts["e2e_count"] += 1
            for bound in E2E_LATENCY_BUCKETS:
                if seconds <= bound:
                    self._counts[f"e2e_le_{bound}"] += 1

    def flush(self, now: float | None = None) -> None:
        """Add the counts so far to the current minute's hash in Redis."""
        redis = self._redis
        if redis is None:
            return
        with self._lock:
            counts, self._counts = self._counts, defaultdict(int)
        if not counts:
            return
        key = keys.health_signals(int((time.time() if now is None else now) // 60))
        pipe = redis.pipeline(transaction=False)
        for name, amount in counts.items():
            pipe.hincrby(key, name, amount)
        pipe.expire(key, 600)
        try:
            pipe.execute()
        except RedisError as exc:
            count_redis_error(exc)
            # Keep them for the next attempt rather than lose a failure burst.
            with self._lock:
                for name, amount in counts.items():
                    self._counts[name] += amount

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.flush()


health_signals = HealthSignals()


class JobMetrics(Middleware):
    """Counts each job's outcome and duration.

    It must sit before `Retries` in the middleware list: "after" hooks run in
    reverse order, so by the time this one runs Retries has decided whether the
    failed message is retried or dead-lettered (`message.failed`).
    """

    def __init__(self) -> None:
        self._started: dict[str, float] = {}
        # Children per label values, kept rather than looked up through `labels()`
        # (which validates and locks) for every message.
        self._durations: dict[tuple[str, str], Histogram] = {}
        self._outcomes: dict[tuple[str, str, str], Counter] = {}

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        self._started[message.message_id] = time.perf_counter()

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        started = self._started.pop(message.message_id, None)
        actor, queue = message.actor_name, message.queue_name
        if started is not None:
            duration = self._durations.get((actor, queue))
            if duration is None:
                duration = self._durations[actor, queue] = JOB_DURATION.labels(actor, queue)
            duration.observe(time.perf_counter() - started)
        if exception is None:
            outcome = "success"
            health_signals.add("jobs_success")
        else:
            count_redis_error(exception)
            outcome = "dead_lettered" if message.failed else "retried"
            health_signals.add("jobs_failed")
        counter = self._outcomes.get((actor, queue, outcome))
        if counter is None:
            counter = self._outcomes[actor, queue, outcome] = JOBS.labels(actor, queue, outcome)
        counter.inc()

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        self._started.pop(message.message_id, None)
        JOBS.labels(message.actor_name, message.queue_name, "skipped").inc()
