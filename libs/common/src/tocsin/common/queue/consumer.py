"""The one consumer every Tocsin worker runs: batches, wake-ups, the broker's middleware.

A `Consumer` takes messages from its queues through a `QueueWorker` and runs,
for each message, the broker's middleware hooks exactly as Dramatiq's worker
does (`before_process_message`, then `after_process_message` with the result
or the exception, or `after_skip_message`), so retries by actor options,
metrics, tracing and delivery limits behave the same whichever way the message
is run. A message is acked after its hooks, or dead-lettered when a middleware
failed it (Retries, when its retries are spent).

It runs messages one of two ways:

- with a `BatchHandler` (the processor): up to `batch_size` messages per fetch,
  handed over together; each message's before hooks run first, in order, and
  its after hooks last, in reverse order, so a tracing context attached per
  message unwinds cleanly. A message the handler reports `unchanged` is
  recorded on one span for the batch, not one of its own (tracing on);
- without one: each message runs its actor on one of `worker_threads` threads,
  and the consumer fetches only as many messages as it has free threads.

When every queue is empty it blocks on the queues' wake-up lists for up to
`idle_wait`, so an idle consumer costs a blocking pop every `idle_wait` and a
heartbeat every `Recovery.interval`, not a poll. The heartbeat runs on its own
thread so a long job does not make its worker look dead. A `DueMover` thread
moves the queues' due messages (retry backoff, timers: `queue.due`) onto them
when due, whether the consumer is busy or idle, and its move wakes the fetch
loop. (Over 400 lines: it is one class, whose fetch loop, thread pool, batch
path and shutdown share its state; split apart, each part would reach into
the others.)
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.middleware import SkipMessage
from prometheus_client import REGISTRY
from redis import Redis

from tocsin.common.metrics import count_redis_error
from tocsin.common.queue._layout import WAKEUP_TOKENS_KEPT, queue_keys
from tocsin.common.queue.due import DueMover, DueTimes
from tocsin.common.queue.gauges import QueueCollector
from tocsin.common.queue.wakeup import wait_for_wakeup
from tocsin.common.queue.worker import QueueWorker, Recovery
from tocsin.common.telemetry import TRACEPARENT, TracingMiddleware, current_traceparent

__all__ = ["BatchHandler", "Consumer", "Delivery"]

log = logging.getLogger(__name__)

# After a Redis error, how long the fetch loop waits before trying again.
_ERROR_PAUSE = 0.5
# How often a fetch loop waiting for a free thread looks whether it should stop.
_SLOT_WAIT = 0.2


@dataclass(slots=True)
class Delivery:
    """A message handed to a `BatchHandler`, with the trace context its hooks opened."""

    message: MessageProxy
    # The message's CONSUMER span when tracing is on, else the traceparent it carried.
    traceparent: str
    # Set by the handler when the message changed nothing a later step carries its
    # trace to: what it did, counted by outcome ({"duplicate": 1}). With tracing on,
    # such a message is counted on its batch's span and has no span of its own.
    unchanged: Mapping[str, int] | None = None


# Runs a batch; returns, per delivery and in order, None (done) or the exception it raised.
BatchHandler = Callable[[Sequence[Delivery]], Sequence[BaseException | None]]


class Consumer:
    """Consumes `queues` of `broker` (see the module docstring)."""

    def __init__(
        self,
        broker: dramatiq.Broker,
        queues: Sequence[str],
        *,
        redis: Redis | None = None,
        batch_handler: BatchHandler | None = None,
        batch_size: int = 1,
        worker_threads: int = 1,
        idle_wait: float = 30.0,
        recovery: Recovery | None = None,
        name: str = "consumer",
    ) -> None:
        client = redis if redis is not None else getattr(broker, "client", None)
        if not isinstance(client, Redis):
            raise TypeError("the consumer needs a Redis client (a RedisBroker's, or redis=)")
        self.broker = broker
        self.queues = list(queues)
        self.worker = QueueWorker(client, recovery=recovery or Recovery())
        self._batch_handler = batch_handler
        self._tracing = next(
            (m for m in broker.middleware if isinstance(m, TracingMiddleware)), None
        )
        self._batch_size = max(1, batch_size)
        self._threads = max(1, worker_threads)
        self._idle_wait = idle_wait
        self._wake_keys = [queue_keys(q).wakeup for q in self.queues]
        self._stop = threading.Event()
        self._busy = False
        self._outstanding: dict[str, list[str]] = {}  # queue -> fetched, not yet settled
        self._outstanding_lock = threading.Lock()
        self._in_flight: dict[Future[None], tuple[str, str]] = {}
        self._free = threading.Semaphore(self._threads)
        self._pool: ThreadPoolExecutor | None = None
        self._fetcher = threading.Thread(target=self._run, name=f"{name}-fetch", daemon=True)
        self._beater = threading.Thread(target=self._beat, name=f"{name}-beat", daemon=True)
        self._dues = [DueTimes(client, queue) for queue in self.queues]
        self._mover = DueMover(self._dues, client)
        self._gauges: QueueCollector | None = None  # registered while the consumer runs

    # Dramatiq's middleware reads these from the "worker" of its boot hooks.
    @property
    def consumer_whitelist(self) -> set[str]:
        return set(self.queues)

    def start(self) -> None:
        if self._batch_handler is None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="job")
        _boot_process(self.broker)
        self.broker.emit_after("worker_boot", self)
        gauges = QueueCollector(self.worker.redis, self.queues)
        try:
            REGISTRY.register(gauges)
        except ValueError:
            # Another consumer in this process already reports the queue gauges (they are
            # the queues' figures, not this process's).
            pass
        else:
            self._gauges = gauges
        for due in self._dues:
            try:
                adopted = due.adopt_delay_queue()
            except Exception as exc:  # Redis is down: the next start adopts them
                count_redis_error(exc)
                log.warning("could not look at %s's delay queue: %s", due.queue, exc)
            else:
                if adopted:
                    log.warning("moved %d delay-queue messages to %s's due set", adopted, due.queue)
        self._mover.start()
        self._beater.start()
        self._fetcher.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish what is in hand (up to `timeout` s), give back the rest, and stop beating.

        An idle fetch loop is not waited for: it holds nothing. Messages still
        running after `timeout` are requeued: whatever runs them again must
        find the work idempotent, as after a crash.
        """
        self._stop.set()
        self._mover.stop()
        self.broker.emit_before("worker_shutdown", self)
        if self._gauges is not None:
            REGISTRY.unregister(self._gauges)
            self._gauges = None
        deadline = time.monotonic() + timeout
        if self._busy and self._fetcher.is_alive():
            self._fetcher.join(timeout)
        elif self._fetcher.is_alive():
            self._wake_idle_loop()
        if self._pool is not None:
            for future in list(self._in_flight):
                future_timeout = max(0.0, deadline - time.monotonic())
                # A job's failure was logged by the job itself.
                with contextlib.suppress(Exception):
                    future.result(timeout=future_timeout)
            self._pool.shutdown(wait=False, cancel_futures=True)
        try:
            for future, (queue, redis_id) in list(self._in_flight.items()):
                if not future.done():
                    self.worker.requeue(queue, [redis_id])
            self._give_back()
            self.worker.leave()
        except Exception as exc:
            # Redis is gone: the messages come back when this worker counts as dead.
            count_redis_error(exc)
            log.warning("could not hand back unfinished messages: %s", exc)
        self.broker.emit_after("worker_shutdown", self)

    def _wake_idle_loop(self) -> None:
        """End the idle loop's blocking pop with a token, so the thread ends with the consumer.

        Another consumer may take the token instead; it then fetches nothing once.
        """
        try:
            pipe = self.worker.redis.pipeline(transaction=False)
            pipe.rpush(self._wake_keys[0], "1")
            pipe.ltrim(self._wake_keys[0], -WAKEUP_TOKENS_KEPT, -1)
            pipe.execute()
        except Exception:  # Redis is gone, and the pop with it
            return
        self._fetcher.join(_SLOT_WAIT * 5)

    # -- the heartbeat ---------------------------------------------------------

    def _beat(self) -> None:
        interval = self.worker.recovery.interval
        while True:
            try:
                recovered = self.worker.beat(self.queues, idle=self._holds_nothing())
                if recovered:
                    log.warning("requeued %d messages of dead workers", recovered)
            except Exception as exc:
                count_redis_error(exc)
                log.warning("queue heartbeat failed: %s", exc)
            if self._stop.wait(interval):
                return

    # -- the fetch loop --------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._busy = True
                self._give_back()
                handled = self._step()
                self._busy = False
                if not handled:
                    self._idle()
            except Exception as exc:
                self._busy = False
                if self._stop.is_set():
                    return
                count_redis_error(exc)
                log.exception("consuming %s failed; retrying shortly", ",".join(self.queues))
                self._stop.wait(_ERROR_PAUSE)

    def _give_back(self) -> None:
        # A batch interrupted by an error (Redis unreachable): its messages are still
        # in this worker's ack set, where nothing would requeue them while it lives.
        with self._outstanding_lock:
            outstanding, self._outstanding = self._outstanding, {}
        for queue, ids in outstanding.items():
            try:
                self.worker.requeue(queue, ids)
            except Exception:
                self._hold(queue, ids)
                raise

    def _held(self, queue: str) -> list[str]:
        """The redis ids of `queue` this process holds: running, or kept to give back.

        A fetch hands back whatever else the worker's ack set holds: messages of a
        fetch whose reply was lost (see `worker/fetch.lua`).
        """
        held = [redis_id for q, redis_id in list(self._in_flight.values()) if q == queue]
        with self._outstanding_lock:
            held.extend(self._outstanding.get(queue, ()))
        return held

    def _holds_nothing(self) -> bool:
        """Whether the fetch loop is idle with nothing running or kept: then anything in
        the worker's ack sets was fetched by a lost reply, and the beat wakes the loop."""
        return not self._busy and not self._in_flight and not self._outstanding

    def _hold(self, queue: str, ids: Sequence[str]) -> None:
        with self._outstanding_lock:
            self._outstanding.setdefault(queue, []).extend(ids)

    def _step(self) -> int:
        """Fetch and run what the queues hold; the number of messages taken (0: none)."""
        taken = 0
        for queue in self.queues:
            if self._batch_handler is not None:
                messages = self.worker.fetch(queue, self._batch_size, held=self._held(queue))
                if messages:
                    taken += len(messages)
                    self._run_batch(queue, messages)
                continue
            # One message per free thread: nothing waits fetched in this process.
            while not self._free.acquire(timeout=_SLOT_WAIT):
                if self._stop.is_set():
                    return taken
            if self._stop.is_set():
                self._free.release()
                return taken
            free = 1
            while free < self._threads and self._free.acquire(blocking=False):
                free += 1
            messages = []
            try:
                messages = self.worker.fetch(queue, free, held=self._held(queue))
            finally:
                # Also when the fetch raises (Redis killed): a slot kept here is a thread
                # lost for good, and with none left the loop waits for ever.
                for _ in range(free - len(messages)):
                    self._free.release()
            taken += len(messages)
            for message in messages:
                self._submit(queue, message)
        return taken

    def _idle(self) -> None:
        # The blocking pop holds one pooled connection; the wait is its bound. A due
        # message moved onto a queue pushes a token here.
        wait_for_wakeup(self.worker.redis, self._wake_keys, self._idle_wait)

    # -- running messages ------------------------------------------------------

    def _submit(self, queue: str, message: dramatiq.Message[Any]) -> None:
        assert self._pool is not None
        redis_id = message.options["redis_message_id"]
        future = self._pool.submit(self._run_one, queue, message)
        self._in_flight[future] = (queue, redis_id)
        future.add_done_callback(self._finished)

    def _finished(self, future: Future[None]) -> None:
        self._in_flight.pop(future, None)
        self._free.release()

    def _run_one(self, queue: str, message: dramatiq.Message[Any]) -> None:
        proxy = MessageProxy(message)
        broker = self.broker
        try:
            broker.emit_before("process_message", proxy)
            actor = broker.get_actor(proxy.actor_name)
            result = actor(*proxy.args, **proxy.kwargs)
            broker.emit_after("process_message", proxy, result=result)
        except SkipMessage:
            broker.emit_after("skip_message", proxy)
        except BaseException as exc:
            log.exception("message %s (%s) failed", proxy.message_id, proxy.actor_name)
            broker.emit_after("process_message", proxy, exception=exc)
        self._settle(queue, [proxy], held=[message.options["redis_message_id"]])

    def _run_batch(self, queue: str, messages: list[dramatiq.Message[Any]]) -> None:
        ids = [m.options["redis_message_id"] for m in messages]
        try:
            self._run_batch_held(queue, messages, ids)
        except BaseException:
            # Held by this worker and settled by nobody: the fetch loop gives them back.
            self._hold(queue, ids)
            raise

    def _run_batch_held(
        self, queue: str, messages: list[dramatiq.Message[Any]], ids: list[str]
    ) -> None:
        assert self._batch_handler is not None
        broker = self.broker
        proxies = [MessageProxy(m) for m in messages]
        deliveries: list[Delivery] = []
        settled: list[MessageProxy] = []
        for proxy in proxies:
            try:
                broker.emit_before("process_message", proxy)
            except SkipMessage:
                broker.emit_after("skip_message", proxy)
                settled.append(proxy)
                continue
            except BaseException as exc:
                broker.emit_after("process_message", proxy, exception=exc)
                settled.append(proxy)
                continue
            traceparent = current_traceparent() or proxy.options.get(TRACEPARENT, "")
            deliveries.append(Delivery(proxy, traceparent))
        errors: Sequence[BaseException | None]
        try:
            errors = self._batch_handler(deliveries) if deliveries else []
        except BaseException as exc:
            errors = [exc] * len(deliveries)
        # "After" hooks in reverse: each message's tracing context was attached on
        # top of the previous one's, so they come off in the opposite order.
        tracing = self._tracing
        for delivery, error in reversed(list(zip(deliveries, errors, strict=True))):
            proxy = delivery.message
            if error is None:
                if tracing is not None and delivery.unchanged is not None:
                    tracing.fold(proxy, delivery.unchanged)
                broker.emit_after("process_message", proxy, result=None)
            else:
                _log_failure(proxy, error)
                broker.emit_after("process_message", proxy, exception=error)
            settled.append(proxy)
        if tracing is not None:
            tracing.end_batch()
        self._settle(queue, settled, held=ids)

    def _settle(self, queue: str, proxies: Sequence[MessageProxy], *, held: Sequence[str]) -> None:
        """Ack what ran (or was retried under a new id), dead-letter what failed for good.

        When Redis cannot be told, the `held` messages are kept to be given back
        by the fetch loop once it answers again: they run again, which the
        handlers' idempotency makes harmless, rather than wait for this worker
        to die.
        """
        done = [p.options["redis_message_id"] for p in proxies if not p.failed]
        try:
            self.worker.ack(queue, done)
            for proxy in proxies:
                if proxy.failed:
                    self.worker.nack(queue, proxy.options["redis_message_id"])
        except Exception as exc:
            count_redis_error(exc)
            log.warning("could not settle %d messages of %s: %s", len(held), queue, exc)
            self._hold(queue, held)


_booted: weakref.WeakSet[dramatiq.Broker] = weakref.WeakSet()
_booted_lock = threading.Lock()


def _boot_process(broker: dramatiq.Broker) -> None:
    """Emit the broker's process-boot hooks once per process, as Dramatiq's CLI does.

    Middleware starts its threads there: TimeLimit's, which stops an actor
    that outruns its `time_limit` (TimeLimitExceeded, raised in the job's
    thread, fails the message like any error: its retries and the scheduler's
    run record follow), and ShutdownNotifications'.
    """
    with _booted_lock:
        if broker in _booted:
            return
        _booted.add(broker)
    # Only the "after" hook: Dramatiq's middleware has no "before" one (its CLI emits
    # only this), and asking for it logged a critical error per middleware.
    broker.emit_after("process_boot")


def _log_failure(proxy: MessageProxy, error: BaseException) -> None:
    log.error(
        "message %s (%s) failed: %r",
        proxy.message_id,
        proxy.actor_name,
        error,
        exc_info=(type(error), error, error.__traceback__),
    )
