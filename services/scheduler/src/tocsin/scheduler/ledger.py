"""The run ledger: Dramatiq middleware that runs each run id once and records its outcome.

Before a job runs, its run id is marked `running` (SET NX, expiring after the
time limit); a message whose run id is already running or done is skipped, so a
rescued or redelivered run is not run twice. After it runs, the id is marked
`done` (or released on failure, so the retry may run), and the outcome goes to
the schedule's state, the run history and the metrics.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import msgspec
from dramatiq import Broker, Middleware
from dramatiq.broker import MessageProxy
from dramatiq.middleware import SkipMessage
from prometheus_client import Counter, Histogram
from redis import Redis

from tocsin.common import keys
from tocsin.scheduler.jobs import Run

__all__ = ["RUNS", "RUN_SECONDS", "RunLedger"]

log = logging.getLogger(__name__)

RUNS = Counter(
    "tocsin_scheduler_runs_total",
    "Job runs by schedule and outcome (ok, failed, duplicate).",
    ["job", "outcome"],
)
RUN_SECONDS = Histogram(
    "tocsin_scheduler_run_duration_seconds",
    "Duration of job runs, by schedule.",
    ["job"],
    buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300),
)


class RunLedger(Middleware):
    """Idempotency by run id, and the outcome record of every run."""

    def __init__(
        self,
        redis: Redis,
        *,
        worker: str,
        running_ttl_ms: int,
        done_ttl_seconds: int,
        history_cap: int,
    ) -> None:
        self._redis = redis
        self._worker = worker
        self._running_ttl_ms = running_ttl_ms
        self._done_ttl = done_ttl_seconds
        self._history_cap = history_cap
        self._started: dict[str, float] = {}
        self._summaries: dict[str, Any] = {}
        self._lock = threading.Lock()

    def note_summary(self, run_id: str, summary: Any) -> None:
        """Keep what a job reported for its run's history entry (actors return nothing)."""
        with self._lock:
            self._summaries[run_id] = summary

    @staticmethod
    def _run(message: MessageProxy) -> Run | None:
        if not message.actor_name.startswith("scheduled_") or not message.args:
            return None
        try:
            return msgspec.convert(message.args[0], Run)
        except msgspec.ValidationError:
            return None

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        run = self._run(message)
        if run is None:
            return
        key = keys.schedule_run(run.run_id)
        if not self._redis.set(key, f"running {self._worker}", nx=True, px=self._running_ttl_ms):
            # Running elsewhere: look again once that claim has expired, in case its
            # worker died mid-run; a later copy that finds the run done is dropped.
            if self._redis.get(key) != b"done":
                remaining = max(0, int(self._redis.pttl(key)))  # -2: lapsed meanwhile
                broker.enqueue(message.copy(), delay=remaining + 100)
            RUNS.labels(run.schedule, "duplicate").inc()
            log.info("run already taken; skipped", extra={"run_id": run.run_id})
            raise SkipMessage(run.run_id)
        with self._lock:
            self._started[message.message_id] = time.monotonic()

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any | None = None,
        exception: BaseException | None = None,
    ) -> None:
        run = self._run(message)
        if run is None:
            return
        with self._lock:
            started = self._started.pop(message.message_id, time.monotonic())
            result = self._summaries.pop(run.run_id, result)
        duration = time.monotonic() - started
        outcome = "ok" if exception is None else "failed"
        key = keys.schedule_run(run.run_id)
        pipe = self._redis.pipeline(transaction=False)
        if exception is None:
            pipe.set(key, "done", ex=self._done_ttl)
        else:
            pipe.delete(key)
        summary = "" if exception is not None else _summary(result)
        error = "" if exception is None else f"{type(exception).__name__}: {exception}"[:500]
        pipe.hset(
            keys.schedule_state(run.schedule),
            mapping={
                "last_outcome": outcome,
                "last_finished_run_id": run.run_id,
                "last_duration_ms": round(duration * 1000, 3),
                "last_error": error,
            },
        )
        pipe.xadd(
            keys.schedule_history(),
            {
                "run_id": run.run_id,
                "schedule": run.schedule,
                "job": run.job,
                "fire": run.fire,
                "outcome": outcome,
                "worker": self._worker,
                "duration_ms": round(duration * 1000, 3),
                "summary": summary,
                "error": error,
            },
            maxlen=self._history_cap,
            approximate=True,
        )
        pipe.execute()
        RUNS.labels(run.schedule, outcome).inc()
        RUN_SECONDS.labels(run.schedule).observe(duration)


def _summary(result: Any) -> str:
    if result is None:
        return ""
    return msgspec.json.encode(result).decode()[:1000]
