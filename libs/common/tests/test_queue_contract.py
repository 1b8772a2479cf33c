"""The queue layer against Dramatiq's own RedisBroker and Worker, in both directions.

These pin the layout the layer writes by hand (`tocsin.common.queue`): a
Dramatiq upgrade that changes it fails here. Each test runs a real server.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import dramatiq
import pytest
from dramatiq import Worker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from redis import Redis
from tests.support import wait_until

from tocsin.client.devserver import RedisServer
from tocsin.common import keys, telemetry
from tocsin.common.broker import build_broker
from tocsin.common.metrics import JOBS
from tocsin.common.queue import (
    Consumer,
    Delivery,
    QueueWakeup,
    QueueWorker,
    Recovery,
    dead_letter_keys,
    encode_message,
    enqueue,
    queue_keys,
)
from tocsin.common.queue.due import DueMover, DueTimes, due_keys

QUEUE = "contract"


@pytest.fixture
def broker(redis_server: RedisServer) -> Iterator[RedisBroker]:
    broker = build_broker(redis_server.url, queues=(QUEUE,))
    yield broker
    broker.close()


class Calls:
    """What an actor was called with, from any thread."""

    def __init__(self) -> None:
        self.args: list[Any] = []
        self._lock = threading.Lock()

    def add(self, value: Any) -> None:
        with self._lock:
            self.args.append(value)


def _declare(broker: RedisBroker, calls: Calls, *, fail: bool = False, **options: Any) -> Any:
    def record(value: Any) -> None:
        calls.add(value)
        if fail:
            raise RuntimeError("refused")

    return dramatiq.actor(actor_name="record", queue_name=QUEUE, broker=broker, **options)(record)


def _dramatiq_worker(broker: RedisBroker) -> Worker:
    worker = Worker(broker, queues={QUEUE}, worker_threads=2, worker_timeout=50)
    worker.start()
    return worker


def test_message_sent_by_dramatiq_runs_on_the_layer_consumer_and_is_acked(
    broker: RedisBroker, redis: Redis
) -> None:
    calls = Calls()
    actor = _declare(broker, calls)
    before = JOBS.labels("record", QUEUE, "success")._value.get()
    consumer = Consumer(broker, [QUEUE], worker_threads=2, idle_wait=5)
    consumer.start()
    try:
        for n in range(5):
            actor.send(n)
        wait_until(lambda: len(calls.args) == 5, 15, "five runs")
        names = queue_keys(QUEUE)
        wait_until(lambda: redis.hlen(names.messages) == 0, 15, "every message acked")
    finally:
        consumer.stop()
    assert sorted(calls.args) == [0, 1, 2, 3, 4]
    assert redis.scard(consumer.worker.acks_key(QUEUE)) == 0
    # The broker's middleware ran around each message: JobMetrics counted them.
    assert JOBS.labels("record", QUEUE, "success")._value.get() - before == 5


def test_message_enqueued_by_the_layer_runs_on_dramatiqs_worker(
    broker: RedisBroker, redis: Redis
) -> None:
    calls = Calls()
    _declare(broker, calls)
    enqueue(redis, QUEUE, "record", ("from the layer",), message_id=str(uuid.uuid4()))
    worker = _dramatiq_worker(broker)
    try:
        wait_until(lambda: calls.args == ["from the layer"], 15, "the run")
        wait_until(lambda: redis.hlen(queue_keys(QUEUE).messages) == 0, 15, "the ack")
    finally:
        worker.stop()


def test_failing_message_is_retried_by_actor_options_then_dead_lettered_where_dramatiq_keeps_them(
    broker: RedisBroker, redis: Redis
) -> None:
    calls = Calls()
    actor = _declare(broker, calls, fail=True, max_retries=2, min_backoff=10, max_backoff=20)
    consumer = Consumer(broker, [QUEUE], idle_wait=5)
    consumer.start()
    try:
        actor.send("doomed")
        dead, dead_messages = dead_letter_keys(QUEUE)
        wait_until(lambda: redis.zcard(dead) == 1, 20, "the dead letter")
    finally:
        consumer.stop()
    # The first run and two retries (Retries' max_retries=2), then the dead-letter set.
    assert calls.args == ["doomed"] * 3
    [data] = redis.hvals(dead_messages)
    # As Dramatiq's nack: the data as it was fetched, before the last failure's count.
    assert dramatiq.Message.decode(data).options["retries"] == 2
    assert redis.hlen(queue_keys(QUEUE).messages) == 0
    assert redis.zcard(due_keys(QUEUE).entries) == 0


def test_message_sent_with_a_delay_waits_in_the_due_set_then_runs_on_the_layer(
    broker: RedisBroker, redis: Redis
) -> None:
    calls = Calls()
    actor = _declare(broker, calls)
    consumer = Consumer(broker, [QUEUE], idle_wait=30)
    consumer.start()
    try:
        sent = time.monotonic()
        actor.send_with_options(args=("later",), delay=1500)
        time.sleep(0.5)
        # Not run yet, and held by the queue's due set in Redis, not by the consumer's
        # memory nor by Dramatiq's delay queue: one delay mechanism.
        assert calls.args == []
        assert redis.zcard(due_keys(QUEUE).entries) == 1
        assert redis.llen(queue_keys(f"{QUEUE}.DQ").pending) == 0
        wait_until(lambda: calls.args == ["later"], 15, "the delayed run")
        # It ran once due, without waiting out the 30 s idle wait.
        assert 1.4 <= time.monotonic() - sent < 25
    finally:
        consumer.stop()


def test_retry_backoff_is_kept_while_the_consumer_stays_busy(
    broker: RedisBroker, redis: Redis
) -> None:
    # The delay queue used to be released only by an idle fetch loop: a steady
    # stream of work kept a retry waiting for as long as the stream lasted.
    calls = Calls()
    attempts: list[int] = []

    def flaky(value: str) -> None:
        if value == "retried":
            attempts.append(1)
            if len(attempts) == 1:
                raise RuntimeError("first attempt fails")
        calls.add(value)

    actor = dramatiq.actor(
        actor_name="flaky", queue_name=QUEUE, broker=broker, min_backoff=200, max_backoff=300
    )(flaky)
    consumer = Consumer(broker, [QUEUE], idle_wait=30)
    consumer.start()
    stop_feeding = threading.Event()

    def feed() -> None:
        while not stop_feeding.is_set():
            actor.send("filler")
            time.sleep(0.005)

    feeder = threading.Thread(target=feed, daemon=True)
    try:
        feeder.start()
        actor.send("retried")
        wait_until(lambda: "retried" in calls.args, 20, "the retry while the queue is busy")
    finally:
        stop_feeding.set()
        feeder.join()
        consumer.stop()
    assert len(attempts) == 2


def test_messages_left_on_dramatiqs_delay_queue_are_adopted_and_run_when_due(
    redis_server: RedisServer, redis: Redis
) -> None:
    # Written by Dramatiq's own RedisBroker: what an older release left behind.
    plain = RedisBroker(  # type: ignore[no-untyped-call]
        client=Redis.from_url(redis_server.url), namespace=keys.DRAMATIQ_NAMESPACE
    )
    plain.declare_queue(QUEUE)
    calls = Calls()
    _declare(plain, calls)
    plain.actors["record"].send_with_options(args=("left",), delay=800)
    assert redis.llen(queue_keys(f"{QUEUE}.DQ").pending) == 1
    broker = build_broker(redis_server.url, queues=(QUEUE,))
    _declare(broker, calls)
    consumer = Consumer(broker, [QUEUE], idle_wait=30)
    consumer.start()
    try:
        wait_until(lambda: calls.args == ["left"], 15, "the adopted message")
        assert redis.llen(queue_keys(f"{QUEUE}.DQ").pending) == 0
    finally:
        consumer.stop()
        broker.close()
        plain.close()


def test_retry_delayed_by_the_layer_runs_on_dramatiqs_worker_once_moved(
    broker: RedisBroker, redis: Redis
) -> None:
    calls = Calls()
    # The layer consumer runs it first and fails; Retries delays it the Dramatiq way.
    attempts: list[int] = []

    def flaky(value: str) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")
        calls.add(value)

    actor = dramatiq.actor(
        actor_name="flaky", queue_name=QUEUE, broker=broker, min_backoff=200, max_backoff=300
    )(flaky)
    consumer = Consumer(broker, [QUEUE], idle_wait=5)
    consumer.start()
    actor.send("twice")
    wait_until(lambda: len(attempts) == 1, 15, "the first attempt")
    consumer.stop()
    # The retry waits in the due set; a mover (any consumer runs one) hands it over.
    wait_until(lambda: redis.zcard(due_keys(QUEUE).entries) == 1, 10, "the scheduled retry")
    mover = DueMover(DueTimes(redis, QUEUE), redis)
    mover.start()
    worker = _dramatiq_worker(broker)
    try:
        wait_until(lambda: calls.args == ["twice"], 20, "the retry on Dramatiq's worker")
    finally:
        worker.stop()
        mover.stop()


def _strand(redis: Redis, worker_id: str, beat_ms_ago: int, ids: Sequence[str]) -> None:
    """Leave `ids` fetched by `worker_id`, whose last heartbeat was `beat_ms_ago`."""
    redis.zadd(
        f"{keys.DRAMATIQ_NAMESPACE}:__heartbeats__", {worker_id: current_millis() - beat_ms_ago}
    )
    names = queue_keys(QUEUE)
    for redis_id in ids:
        redis.lrem(names.pending, 0, redis_id)
        redis.sadd(f"{keys.DRAMATIQ_NAMESPACE}:__acks__.{worker_id}.{QUEUE}", redis_id)


def test_dead_dramatiq_workers_messages_are_requeued_by_the_layer_after_its_timeout(
    broker: RedisBroker, redis: Redis
) -> None:
    calls = Calls()
    actor = _declare(broker, calls)
    sent = [actor.send(n).options["redis_message_id"] for n in range(3)]
    # Dramatiq's own fetch into a worker's ack set, by a worker that then died
    # (its dispatch script: the contract is with this very file).
    fetched = broker.scripts["dispatch"](
        keys=[keys.DRAMATIQ_NAMESPACE],
        args=["fetch", current_millis() - 20_000, QUEUE, "dead-dramatiq-worker",
              60_000, 1, 0, 1000, 3],
    )  # fmt: skip
    assert len(fetched) == 3
    live = QueueWorker(redis, recovery=Recovery(timeout_ms=10_000))
    # Silent for 20 s against a 10 s timeout: dead, its messages go back with a wake-up.
    assert live.beat([QUEUE]) == 3
    assert sorted(redis.lrange(queue_keys(QUEUE).pending, 0, -1)) == sorted(
        s.encode() for s in sent
    )
    assert redis.llen(queue_keys(QUEUE).wakeup) >= 1
    assert not redis.exists(f"{keys.DRAMATIQ_NAMESPACE}:__acks__.dead-dramatiq-worker.{QUEUE}")


def test_live_worker_within_its_timeout_keeps_its_messages(
    broker: RedisBroker, redis: Redis
) -> None:
    _declare(broker, Calls()).send("held")
    [redis_id] = [i.decode() for i in redis.lrange(queue_keys(QUEUE).pending, 0, -1)]
    _strand(redis, "busy-worker", 2_000, [redis_id])
    assert QueueWorker(redis, recovery=Recovery(timeout_ms=10_000)).beat([QUEUE]) == 0
    assert redis.llen(queue_keys(QUEUE).pending) == 0


def test_dead_layer_workers_messages_are_requeued_by_dramatiqs_maintenance(
    broker: RedisBroker, redis: Redis
) -> None:
    calls = Calls()
    actor = _declare(broker, calls)
    actor.send("orphan")
    dying = QueueWorker(redis, worker_id="dead-layer-worker")
    [message] = dying.fetch(QUEUE, 10)
    # The layer's worker dies holding it; its beat is 20 s old.
    redis.zadd(
        f"{keys.DRAMATIQ_NAMESPACE}:__heartbeats__",
        {"dead-layer-worker": current_millis() - 20_000},
    )
    broker.heartbeat_timeout = 10_000
    broker.maintenance_chance = 1_000_000  # every command runs Dramatiq's maintenance
    worker = _dramatiq_worker(broker)
    try:
        wait_until(lambda: calls.args == ["orphan"], 20, "the rerun on Dramatiq's worker")
    finally:
        worker.stop()
    assert message.options["redis_message_id"]


def test_killed_consumers_messages_run_again_on_another_consumer_within_the_recovery_timeout(
    broker: RedisBroker, redis: Redis
) -> None:
    calls = Calls()
    actor = _declare(broker, calls)
    actor.send("survivor")
    # A consumer that fetched and then stopped beating (as a SIGKILL leaves it).
    QueueWorker(redis, worker_id="killed").fetch(QUEUE, 10)
    recovery = Recovery(timeout_ms=1_000)
    consumer = Consumer(broker, [QUEUE], idle_wait=30, recovery=recovery)
    started = time.monotonic()
    consumer.start()
    try:
        wait_until(lambda: calls.args == ["survivor"], 15, "the rerun")
    finally:
        consumer.stop()
    # Woken by the recovery's token, not by the 30 s idle wait.
    assert time.monotonic() - started < 20


@pytest.fixture
def exporter(broker: RedisBroker, monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    """Tracing on for `broker`: its spans end up in the returned exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(telemetry.setup, "_enabled", True)
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)
    broker.add_middleware(telemetry.TracingMiddleware(provider))
    return exporter


def test_batch_handler_gets_each_message_with_its_own_consumer_span_when_tracing_is_on(
    broker: RedisBroker, redis: Redis, exporter: InMemorySpanExporter
) -> None:
    _declare(broker, Calls())
    seen: list[list[str]] = []

    def handle(deliveries: Sequence[Delivery]) -> list[BaseException | None]:
        seen.append([d.traceparent for d in deliveries])
        return [None] * len(deliveries)

    for n in range(3):
        enqueue(redis, QUEUE, "record", (n,), message_id=f"m{n}")
    consumer = Consumer(broker, [QUEUE], batch_handler=handle, batch_size=10, idle_wait=5)
    consumer.start()
    try:
        wait_until(lambda: sum(len(batch) for batch in seen) == 3, 15, "the batch")
    finally:
        consumer.stop()
    spans = [s for s in exporter.get_finished_spans() if s.name == f"process {QUEUE}"]
    assert len(spans) == 3
    span_ids = {f"{s.context.span_id:016x}" for s in spans}
    # Each delivery carries its own CONSUMER span's context, and none is left attached.
    assert {tp.split("-")[2] for batch in seen for tp in batch} == span_ids
    assert not trace.get_current_span().get_span_context().is_valid


def test_batch_handler_unchanged_messages_share_one_batch_span_linked_to_their_senders(
    broker: RedisBroker, redis: Redis, exporter: InMemorySpanExporter
) -> None:
    _declare(broker, Calls())
    senders = {n: f"00-{n + 1:032x}-{n + 1:016x}-01" for n in range(3)}
    handled: list[int] = []

    def handle(deliveries: Sequence[Delivery]) -> list[BaseException | None]:
        for delivery in deliveries:
            number = delivery.message.args[0]
            handled.append(number)
            if number != 1:  # 0 and 2 changed nothing; 1 did
                delivery.unchanged = {"duplicate": 1}
        return [None] * len(deliveries)

    for n, traceparent in senders.items():
        options = {"traceparent": traceparent}
        enqueue(redis, QUEUE, "record", (n,), message_id=f"m{n}", options=options)
    consumer = Consumer(broker, [QUEUE], batch_handler=handle, batch_size=10, idle_wait=5)
    consumer.start()
    try:
        wait_until(lambda: len(handled) == 3, 15, "the batch")
        wait_until(lambda: redis.hlen(queue_keys(QUEUE).messages) == 0, 15, "the acks")
    finally:
        consumer.stop()
    spans = [s for s in exporter.get_finished_spans() if s.name == f"process {QUEUE}"]
    [own] = [s for s in spans if s.parent is not None]
    [batch] = [s for s in spans if s.parent is None]
    # The message that changed something keeps its span, a child of its sender.
    assert own.parent is not None
    assert own.parent.span_id == 2
    assert own.attributes is not None
    assert own.attributes["messaging.message.id"] == "m1"
    # The other two: counted on the batch's span, linked to their senders.
    assert batch.kind == SpanKind.CONSUMER
    assert batch.attributes == {
        "messaging.system": "dramatiq",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": QUEUE,
        "messaging.batch.message_count": 2,
        "tocsin.unchanged.duplicate": 2,
    }
    linked = {(ln.context.trace_id, ln.context.span_id) for ln in batch.links}
    assert linked == {(1, 1), (3, 3)}
    assert {ln.attributes["messaging.message.id"] for ln in batch.links if ln.attributes} == {
        "m0",
        "m2",
    }
    assert not trace.get_current_span().get_span_context().is_valid


def test_batch_handler_failure_of_one_message_retries_only_that_message(
    broker: RedisBroker, redis: Redis
) -> None:
    _declare(broker, Calls(), max_retries=0)
    for n in range(3):
        enqueue(redis, QUEUE, "record", (n,), message_id=f"m{n}")

    def handle(deliveries: Sequence[Delivery]) -> list[BaseException | None]:
        return [RuntimeError("bad") if d.message.args[0] == 1 else None for d in deliveries]

    consumer = Consumer(broker, [QUEUE], batch_handler=handle, batch_size=10, idle_wait=5)
    consumer.start()
    dead, dead_messages = dead_letter_keys(QUEUE)
    try:
        wait_until(lambda: redis.zcard(dead) == 1, 15, "the dead letter")
        wait_until(lambda: redis.hlen(queue_keys(QUEUE).messages) == 0, 15, "the acks")
    finally:
        consumer.stop()
    [data] = redis.hvals(dead_messages)
    assert list(dramatiq.Message.decode(data).args) == [1]


def test_encoded_message_is_what_dramatiqs_own_encoding_decodes_to() -> None:
    args = ([{"name": "Disk ½ full", "value": 0.1 + 0.2, "n": 2**53, "none": None}],)
    options = {"traceparent": "00-abc-def-01", "retries": 2}
    ours = encode_message(
        QUEUE, "record", args, message_id="m-1", options=options, timestamp_ms=1_700_000_000_123
    )
    theirs = dramatiq.Message(
        queue_name=QUEUE,
        actor_name="record",
        args=args,
        kwargs={},
        options={**options, "redis_message_id": "m-1"},
        message_id="m-1",
        message_timestamp=1_700_000_000_123,
    ).encode()
    assert dramatiq.Message.decode(ours).asdict() == dramatiq.Message.decode(theirs).asdict()


def test_long_job_keeps_its_worker_alive_so_its_message_is_not_run_twice(
    broker: RedisBroker, redis: Redis
) -> None:
    calls = Calls()
    release = threading.Event()

    def slow(value: str) -> None:
        calls.add(value)
        release.wait(30)

    actor = dramatiq.actor(actor_name="slow", queue_name=QUEUE, broker=broker)(slow)
    # The job outlasts the timeout several times over; the beat has its own thread.
    consumer = Consumer(broker, [QUEUE], idle_wait=5, recovery=Recovery(timeout_ms=1_000))
    consumer.start()
    try:
        actor.send("long")
        wait_until(lambda: calls.args == ["long"], 15, "the job to start")
        watcher = QueueWorker(redis, recovery=Recovery(timeout_ms=1_000))
        for _ in range(6):
            time.sleep(0.5)
            assert watcher.beat([QUEUE]) == 0, "a live worker's message was requeued"
        release.set()
        wait_until(lambda: redis.hlen(queue_keys(QUEUE).messages) == 0, 15, "the ack")
    finally:
        release.set()
        consumer.stop()
    assert calls.args == ["long"]


def test_stopped_consumer_takes_nothing_more_and_hands_back_the_job_it_could_not_finish(
    broker: RedisBroker, redis: Redis
) -> None:
    calls = Calls()
    release = threading.Event()

    def slow(value: str) -> None:
        calls.add(value)
        release.wait(30)

    actor = dramatiq.actor(actor_name="slow", queue_name=QUEUE, broker=broker)(slow)
    consumer = Consumer(broker, [QUEUE], worker_threads=1, idle_wait=5)
    consumer.start()
    try:
        actor.send("first")
        wait_until(lambda: calls.args == ["first"], 15, "the first job to start")
        actor.send("second")  # waits: the one thread is busy
        time.sleep(0.3)
        consumer.stop(timeout=0.5)
    finally:
        release.set()
    # The running job is back on the queue for whoever comes next; the waiting one stayed.
    assert calls.args == ["first"]
    assert redis.llen(queue_keys(QUEUE).pending) == 2
    assert redis.scard(consumer.worker.acks_key(QUEUE)) == 0


def test_messages_a_lost_fetch_reply_left_in_a_live_workers_ack_set_run_at_its_first_fetch(
    broker: RedisBroker, redis: Redis
) -> None:
    calls = Calls()
    actor = _declare(broker, calls)
    consumer = Consumer(broker, [QUEUE], idle_wait=5)
    for n in range(3):
        actor.send(n)
    # The fetch ran in Redis but its reply never reached the consumer (a restart, a
    # broken connection): the messages sit in its own ack set, unknown to it, and its
    # heartbeat goes on, so no dead-worker recovery would ever look there.
    QueueWorker(redis, worker_id=consumer.worker.worker_id).fetch(QUEUE, 10)
    consumer.start()
    try:
        wait_until(lambda: sorted(calls.args) == [0, 1, 2], 15, "the messages taken back")
    finally:
        consumer.stop()


def test_a_fetch_hands_back_what_the_ack_set_holds_beyond_the_held_ids_first(
    broker: RedisBroker, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    for n in range(5):
        enqueue(redis, QUEUE, "record", (n,), message_id=f"m{n}")
    worker = QueueWorker(redis)
    lost = worker.fetch(QUEUE, 3)  # a reply that never arrived: m0..m2 held, unknown
    assert [m.args for m in lost] == [(0,), (1,), (2,)]
    # The caller runs m1; of the rest, two fit: the lost ones come before new ones.
    again = worker.fetch(QUEUE, 2, held=["m1"])
    assert sorted(m.message_id for m in again) == ["m0", "m2"]
    assert f"took back 2 messages of {QUEUE}" in caplog.text
    assert [m.message_id for m in worker.fetch(QUEUE, 5, held=["m0", "m1", "m2"])] == ["m3", "m4"]
    assert redis.scard(worker.acks_key(QUEUE)) == 5
    # An id acked elsewhere (its data gone) leaves the ack set instead of coming back.
    redis.hdel(queue_keys(QUEUE).messages, "m4")
    assert [m.message_id for m in worker.fetch(QUEUE, 5, held=["m0", "m1", "m2"])] == ["m3"]
    assert redis.scard(worker.acks_key(QUEUE)) == 4


@pytest.mark.parametrize("batched", [True, False], ids=["batch", "threads"])
def test_a_lost_fetch_that_redis_runs_late_strands_nothing_in_a_live_idle_worker(
    broker: RedisBroker, redis: Redis, batched: bool
) -> None:
    # Found by the Redis-SIGSTOP chaos scenario: the processor's fetch reached a
    # frozen Redis, its reply timed out, redis-py retried it on a new connection
    # (so the consumer saw no error) and the retry found nothing. The first fetch
    # still ran, after the thaw, into the live worker's ack set, where it sat while
    # the worker went idle. Here that late fetch is run from outside, while the
    # consumer idles with a wait far longer than the test allows.
    calls = Calls()
    actor = _declare(broker, calls)

    def handle(deliveries: Sequence[Delivery]) -> list[BaseException | None]:
        for delivery in deliveries:
            calls.add(delivery.message.args[0])
        return [None] * len(deliveries)

    consumer = Consumer(
        broker, [QUEUE], idle_wait=60, batch_handler=handle if batched else None, batch_size=10
    )
    consumer.start()
    try:
        time.sleep(0.5)  # idle: blocked on the wake-up list
        # Written without a wake-up token (the late fetch dropped it), then fetched.
        names = queue_keys(QUEUE)
        for n in range(3):
            message_id = f"late-{n}"
            redis.hset(
                names.messages,
                message_id,
                encode_message(QUEUE, actor.actor_name, (n,), message_id=message_id),
            )
            redis.rpush(names.pending, message_id)
        QueueWorker(redis, worker_id=consumer.worker.worker_id).fetch(QUEUE, 10)
        wait_until(lambda: sorted(calls.args) == [0, 1, 2], 15, "the stranded messages")
        # Each is acked after it ran: the last ack may still be on its way.
        wait_until(lambda: redis.scard(consumer.worker.acks_key(QUEUE)) == 0, 15, "acked")
    finally:
        consumer.stop()


def test_idle_wait_longer_than_the_socket_timeout_neither_reconnects_nor_misses_a_wakeup(
    redis_server: RedisServer, redis: Redis
) -> None:
    # A blocking pop cut off by the client's socket timeout is retried on a new
    # connection and may lose the wake-up token to the abandoned one: the consumer
    # reads a pop's reply with its own bound, however short the socket timeout.
    broker = RedisBroker(  # type: ignore[no-untyped-call]
        client=Redis.from_url(redis_server.url, socket_timeout=0.5),
        namespace=keys.DRAMATIQ_NAMESPACE,
    )
    broker.add_middleware(QueueWakeup())
    broker.declare_queue(QUEUE)
    calls = Calls()
    actor = _declare(broker, calls)
    consumer = Consumer(broker, [QUEUE], idle_wait=30)
    consumer.start()
    try:
        time.sleep(2.5)  # the fetcher's and the heartbeat's pooled connections exist
        before = redis.info("stats")["total_connections_received"]
        time.sleep(2.0)  # four socket timeouts of idling
        assert redis.info("stats")["total_connections_received"] == before
        actor.send("after idling")
        wait_until(lambda: calls.args == ["after idling"], 5, "the message after idling")
    finally:
        consumer.stop()
        broker.close()
