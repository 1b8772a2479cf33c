"""The alerts queue consumed in batches, woken by ingest rather than by polling.

Dramatiq's worker handles one message at a time: a fetch, the lifecycle
pipeline and an ack are each a round trip, and its single consumer thread does
the acks one by one, so at 1,000 alerts/s the queue waits on round trips, not
on CPU. `BatchConsumer` keeps Dramatiq's Redis layout and scripts (the broker's
`dispatch` script: fetch into this worker's ack set, heartbeats, requeue of a
dead worker's messages, dead letters) but takes up to `batch_size` messages per
fetch and applies all their alerts in one lifecycle pipeline, then acks them in
one script call (`queue/ack.lua`, Dramatiq's ack for many ids): three round
trips per batch instead of three per message.

When the queue is empty it blocks on `tocsin:wake:{queue}`, the list ingest's
admission script pushes a token to with every enqueue, so an idle consumer
starts within a round trip of the enqueue, without Dramatiq's back-off; the
wait is bounded (`wait`) so messages enqueued without a token (gateway actions,
retries, requeues) still start soon.

Every step is idempotent (the lifecycle script records applied message ids), so
a message is acked only after it is applied: a crash in between redelivers it
and applying it again changes nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from importlib import resources
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis, dq_name
from redis import Redis
from redis.exceptions import NoScriptError

from tocsin.common import keys
from tocsin.common.broker import APPLY_ACTION_ACTOR, PROCESS_ALERTS_ACTOR
from tocsin.common.metrics import JOB_DURATION, JOBS, count_redis_error, health_signals
from tocsin.processor.processing import AlertProcessor

__all__ = ["BatchConsumer"]

log = logging.getLogger(__name__)

_ACK_LUA = resources.files("tocsin.processor").joinpath("queue/ack.lua").read_text()


class BatchConsumer:
    """A thread applying the alerts queue in batches (see the module docstring)."""

    def __init__(
        self,
        broker: RedisBroker,
        processor: AlertProcessor,
        queue: str,
        *,
        batch_size: int,
        wait: float,
        wakeup: bool,
        max_retries: int,
    ) -> None:
        self._broker = broker
        self._processor = processor
        self._queue = queue
        self._delay_queue = dq_name(queue)
        self._batch_size = batch_size
        self._wait = wait
        self._wakeup = wakeup
        self._wakeup_key = keys.queue_wakeup(queue)
        self._max_retries = max_retries
        self._client: Redis = broker.client
        self._script: Any = broker.scripts["dispatch"]
        self._ack_script = self._client.register_script(_ACK_LUA)
        self._stop = threading.Event()
        self._next_delay_sweep = 0.0
        self._busy = False
        self._outstanding: list[str] = []  # fetched, not yet acked or requeued
        self._thread = threading.Thread(target=self._run, name=f"consume-{queue}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the batch in hand, if any, and stop.

        An idle consumer is not waited for: it holds nothing, and its blocking
        wait may last `wait`. Even a batch cut short by the process exiting is
        safe: its messages are not acked, so they are requeued and applied again,
        which changes nothing twice.
        """
        self._stop.set()
        if self._busy and self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._busy = True
                if self._outstanding:
                    # A batch interrupted by an error (Redis unreachable): its messages
                    # are still in this worker's ack set, where nothing would requeue
                    # them while it lives. Ids acked meanwhile are left alone.
                    self._requeue(self._queue, self._outstanding)
                    self._outstanding = []
                handled = self.step()
                self._busy = False
                if not handled:
                    self._idle()
            except Exception as exc:
                self._busy = False
                count_redis_error(exc)
                log.exception("consuming %s failed; retrying shortly", self._queue)
                self._stop.wait(0.5)

    def _idle(self) -> None:
        if self._wakeup:
            # The blocking pop holds a pooled connection; its timeout is the bound.
            self._client.blpop([self._wakeup_key], timeout=self._wait)
        else:
            self._stop.wait(self._wait)

    def _dispatch_args(self, command: str, queue: str, *args: Any) -> list[Any]:
        # What `RedisBroker._dispatch` passes, so that the dispatch script also
        # keeps this worker's heartbeat and runs its dead-worker maintenance.
        broker: Any = self._broker
        return [
            command,
            current_millis(),
            queue,
            broker.broker_id,
            broker.heartbeat_timeout,
            broker.dead_message_ttl,
            broker._should_do_maintenance(command),
            broker._max_unpack_size(),
            *args,
        ]

    def _ack(self, queue: str, ids: list[str]) -> None:
        """Dramatiq's ack of each of `ids`, in one script call (see `queue/ack.lua`)."""
        if not ids:
            return
        namespace = self._broker.namespace
        worker_id = self._broker.broker_id
        self._ack_script(
            keys=[
                f"{namespace}:__acks__.{worker_id}.{queue}",
                f"{namespace}:{queue}.msgs",
                f"{namespace}:__heartbeats__",
            ],
            args=[current_millis(), worker_id, *ids],
        )

    def _fetch(self, queue: str, count: int) -> list[dramatiq.Message[Any]]:
        args = self._dispatch_args("fetch", queue, count)
        raw: list[bytes | None]
        if queue == self._queue and self._wakeup:
            # Tokens pushed before this fetch are for messages it takes: dropped in
            # the same round trip, so that they do not cause empty fetches later.
            # One pushed after it stays, and wakes a consumer for its message.
            pipe = self._client.pipeline(transaction=False)
            pipe.delete(self._wakeup_key)
            pipe.evalsha(self._script.sha, 1, self._broker.namespace, *args)
            try:
                _, raw = pipe.execute()
            except NoScriptError:
                raw = self._script(keys=[self._broker.namespace], args=args)  # loads it
        else:
            raw = self._script(keys=[self._broker.namespace], args=args)
        return [dramatiq.Message.decode(data) for data in raw if data is not None]

    def step(self) -> int:
        """Fetch and apply one batch; the number of messages it held (0: queue empty)."""
        now = time.monotonic()
        if now >= self._next_delay_sweep:
            self._next_delay_sweep = now + 0.5
            self._release_delayed()
        messages = self._fetch(self._queue, self._batch_size)
        if not messages:
            return 0
        self._outstanding = [m.options["redis_message_id"] for m in messages]
        started = time.perf_counter()
        done: list[dramatiq.Message[Any]] = []
        try:
            self._apply(messages, done)
        finally:
            # Whatever was not applied goes back to the queue for the next step.
            settled = {id(m) for m in done}
            undone = [m.options["redis_message_id"] for m in messages if id(m) not in settled]
            if undone:
                self._requeue(self._queue, undone)
        elapsed = time.perf_counter() - started
        self._ack(self._queue, [m.options["redis_message_id"] for m in done])
        self._outstanding = []
        # Counted per actor rather than per message: label lookups cost more than the rest.
        # A message's duration is its share of the batch (they are applied together).
        share = elapsed / len(messages)
        for actor, count in Counter(m.actor_name for m in done).items():
            duration = JOB_DURATION.labels(actor, self._queue)
            for _ in range(count):
                duration.observe(share)
            JOBS.labels(actor, self._queue, "success").inc(count)
        health_signals.add("jobs_success", len(done))
        return len(messages)

    def _requeue(self, queue: str, ids: list[str]) -> None:
        namespace = [self._broker.namespace]
        self._script(keys=namespace, args=self._dispatch_args("requeue", queue, *ids))

    def _apply(
        self, messages: list[dramatiq.Message[Any]], done: list[dramatiq.Message[Any]]
    ) -> None:
        """Apply `messages` in order: runs of alert messages as one pipeline, actions alone."""
        run: list[dramatiq.Message[Any]] = []
        for message in [*messages, None]:
            if message is not None and message.actor_name == PROCESS_ALERTS_ACTOR:
                run.append(message)
                continue
            if run:
                self._apply_run(run, done)
                run = []
            if message is not None:
                self._apply_one(message, done)

    def _apply_run(
        self, run: list[dramatiq.Message[Any]], done: list[dramatiq.Message[Any]]
    ) -> None:
        try:
            self._processor.process_alert_messages(
                [(m.args[0], m.options.get("traceparent", "")) for m in run]
            )
        except Exception:
            if len(run) == 1:
                self._failed(run[0], done)
                return
            # One bad message must not hold back the others: apply them one by one.
            for message in run:
                self._apply_one(message, done)
            return
        done.extend(run)

    def _apply_one(self, message: dramatiq.Message[Any], done: list[dramatiq.Message[Any]]) -> None:
        try:
            if message.actor_name == PROCESS_ALERTS_ACTOR:
                self._processor.process_alerts(
                    message.args[0], message.options.get("traceparent", "")
                )
            elif message.actor_name == APPLY_ACTION_ACTOR:
                self._processor.apply_action(
                    message.args[0], message.options.get("traceparent", "")
                )
            else:
                raise LookupError(f"no actor {message.actor_name!r} on {self._queue}")
        except Exception:
            self._failed(message, done)
            return
        done.append(message)

    def _failed(self, message: dramatiq.Message[Any], done: list[dramatiq.Message[Any]]) -> None:
        """As Dramatiq's Retries: again later with back-off, dead-lettered after the last try."""
        log.exception("message %s (%s) failed", message.message_id, message.actor_name)
        health_signals.add("jobs_failed")
        retries = int(message.options.get("retries", 0)) + 1
        redis_id = message.options["redis_message_id"]
        if retries > self._max_retries:
            namespace = [self._broker.namespace]
            self._script(keys=namespace, args=self._dispatch_args("nack", self._queue, redis_id))
            JOBS.labels(message.actor_name, self._queue, "dead_lettered").inc()
        else:
            backoff_ms = min(60_000, 100 * 2**retries)
            self._broker.enqueue(message.copy(options={"retries": retries}), delay=backoff_ms)
            JOBS.labels(message.actor_name, self._queue, "retried").inc()
        # Settled either way: acked by the caller with the rest of the batch.
        done.append(message)

    def _release_delayed(self) -> None:
        """Move retries whose time has come from the delay queue back to the queue."""
        delayed = self._fetch(self._delay_queue, self._batch_size)
        if not delayed:
            return
        now = current_millis()
        due = [m for m in delayed if int(m.options.get("eta") or 0) <= now]
        for message in due:
            fresh = message.copy(queue_name=self._queue)
            fresh.options.pop("eta", None)
            self._broker.enqueue(fresh)
        self._ack(self._delay_queue, [m.options["redis_message_id"] for m in due])
        later = [
            m.options["redis_message_id"] for m in delayed if int(m.options.get("eta") or 0) > now
        ]
        if later:
            self._requeue(self._delay_queue, later)
