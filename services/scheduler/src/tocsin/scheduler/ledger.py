"""The run ledger: Dramatiq middleware that runs each run id once and records its outcome.

Before a job runs, its run id is marked `running` and its lease taken
(ledger/start.lua); a message whose run id is already running or done is
skipped, so a rescued or redelivered run is not run twice. While the job runs, a
thread renews the leases of this worker's runs; should the worker die, the
lease lapses and the dispatcher queues the run again (see
`tocsin.scheduler.claims`). After it runs, the id is marked `done` and its lease
dropped; on a failure the mark is released for the retry and the lease kept as
its backstop (dropped once retries are exhausted). The outcome goes to the
schedule's state, the run history and the metrics.
"""

from __future__ import annotations

import logging
import threading
import time
from importlib import resources
from typing import Any

import msgspec
from dramatiq import Broker, Middleware
from dramatiq.broker import MessageProxy
from dramatiq.middleware import SkipMessage
from prometheus_client import Counter, Histogram
from redis import Redis

from tocsin.common import keys
from tocsin.common.queue.due import script_with_functions
from tocsin.scheduler.jobs import Run

__all__ = ["RUNS", "RUN_SECONDS", "RunLedger"]

log = logging.getLogger(__name__)

_SCRIPTS = resources.files("tocsin.scheduler").joinpath("ledger")
_START = script_with_functions(_SCRIPTS.joinpath("start.lua").read_text())
_RENEW = script_with_functions(_SCRIPTS.joinpath("renew.lua").read_text())
_RETRY = script_with_functions(_SCRIPTS.joinpath("retry.lua").read_text())
_encoder = msgspec.json.Encoder()
# Dramatiq's default cap of a retry's backoff, for an actor that sets none.
_DEFAULT_MAX_BACKOFF_MS = 30_000

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
        lease_ms: int,
        done_ttl_seconds: int,
        history_cap: int,
    ) -> None:
        self._redis = redis
        self._worker = worker
        self._mark = f"running {worker}"
        self._running_ttl_ms = running_ttl_ms
        self._lease_ms = lease_ms
        self._done_ttl = done_ttl_seconds
        self._history_cap = history_cap
        self._started: dict[str, float] = {}
        self._running: dict[str, str] = {}  # message id -> run id
        self._summaries: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._start = redis.register_script(_START)
        self._renew = redis.register_script(_RENEW)
        self._retry = redis.register_script(_RETRY)
        self._renewer: threading.Thread | None = None

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
        outcome = self._start(
            keys=[keys.schedule_run(run.run_id), keys.schedule_leases(), keys.schedule_pending()],
            args=[
                f"{self._mark} {message.message_id}",
                self._running_ttl_ms,
                self._lease_ms,
                run.run_id,
                _encoder.encode(run),
            ],
        )
        if outcome != b"acquired":
            # Done, or running elsewhere: that worker renews the lease while it lives,
            # and when the lease lapses the dispatcher queues the run again.
            RUNS.labels(run.schedule, "duplicate").inc()
            log.info("run already taken; skipped", extra={"run_id": run.run_id})
            raise SkipMessage(run.run_id)
        with self._lock:
            self._started[message.message_id] = time.monotonic()
            self._running[message.message_id] = run.run_id
            if self._renewer is None:
                self._renewer = threading.Thread(
                    target=self._renew_leases, name="run-leases", daemon=True
                )
                self._renewer.start()

    def _renew_leases(self) -> None:
        """Renew this worker's leases three times a lease, so one missed renewal is harmless."""
        while True:
            time.sleep(self._lease_ms / 3000)
            with self._lock:
                run_ids = list(self._running.values())
            if not run_ids:
                continue
            try:
                self._renew(
                    keys=[keys.schedule_leases(), *(keys.schedule_run(r) for r in run_ids)],
                    args=[self._lease_ms, self._mark, *run_ids],
                )
            except Exception:
                log.warning("cannot renew run leases", exc_info=True)

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
            self._running.pop(message.message_id, None)
            result = self._summaries.pop(run.run_id, result)
        duration = time.monotonic() - started
        outcome = "ok" if exception is None else "failed"
        key = keys.schedule_run(run.run_id)
        retry_within = None if exception is None else self._retry_within(broker, message)
        if retry_within is not None:
            # Released for the retry; the lease, pushed past its backoff, is its backstop.
            self._retry(keys=[key, keys.schedule_leases()], args=[run.run_id, retry_within])
        pipe = self._redis.pipeline(transaction=False)
        if exception is None:
            pipe.set(key, "done", ex=self._done_ttl)
        elif retry_within is None:
            pipe.delete(key)
        if retry_within is None:
            # Finished for good (done, or out of retries): nothing left to re-dispatch.
            pipe.zrem(keys.schedule_leases(), run.run_id)
            pipe.hdel(keys.schedule_pending(), run.run_id)
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

    def _retry_within(self, broker: Broker, message: MessageProxy) -> int | None:
        """How long the failed run's retry may take to start (ms), None if none will come.

        This hook runs before the Retries middleware's (after hooks run in reverse
        order), so `retries` still counts the retries before this failure.
        """
        options = broker.get_actor(message.actor_name).options
        max_retries = message.options.get("max_retries", options.get("max_retries", 0))
        if message.options.get("retries", 0) >= max_retries:
            return None
        max_backoff = int(options.get("max_backoff", _DEFAULT_MAX_BACKOFF_MS))
        return max_backoff + self._lease_ms


def _summary(result: Any) -> str:
    if result is None:
        return ""
    return msgspec.json.encode(result).decode()[:1000]
