"""Durable due-times against a real server and a real Dramatiq worker."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq import Worker
from tests.support import wait_until

from tocsin.client.devserver import RedisServer
from tocsin.common.broker import build_broker
from tocsin.common.queue import queue_keys
from tocsin.common.queue.due import DueMover, DueTimes, due_keys
from tocsin.common.queue.wakeup import wait_for_wakeup

QUEUE = "due-tests"


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_server.url)
    yield connection
    connection.close()


def test_a_message_stays_out_of_its_queue_until_due_then_moves_whole(
    client: redis.Redis,
) -> None:
    due = DueTimes(client, QUEUE)
    early = due.schedule("act", ("early",), 0.0)
    late = due.schedule("act", ("late",), 60.0)
    moved, wait = due.move()
    assert moved == 1
    assert wait is not None
    assert 55 < wait <= 60
    queue = queue_keys(QUEUE)
    assert client.lrange(queue.pending, 0, -1) == [early.encode()]
    assert client.hexists(queue.messages, early)
    assert not client.hexists(queue.messages, late)
    assert due.pending() == 1
    assert due.move() == (0, pytest.approx(wait, abs=1))


def test_scheduling_an_id_again_replaces_its_entry(client: redis.Redis) -> None:
    due = DueTimes(client, QUEUE)
    due.schedule("act", ("first",), 60.0, message_id="one")
    due.schedule("act", ("second",), 0.0, message_id="one")
    assert due.move()[0] == 1
    assert due.pending() == 0
    assert client.llen(queue_keys(QUEUE).pending) == 1


def test_a_real_dramatiq_worker_runs_what_the_mover_hands_over_when_due(
    redis_server: RedisServer, client: redis.Redis
) -> None:
    broker = build_broker(redis_server.url, queues=(QUEUE,))
    seen: list[tuple[str, float]] = []

    @dramatiq.actor(actor_name="record", queue_name=QUEUE, broker=broker)
    def record(label: str) -> None:
        seen.append((label, time.monotonic()))

    due = DueTimes(client, QUEUE)
    mover = DueMover(due, client, max_sleep=30.0)
    mover.start()
    worker = Worker(broker, queues={QUEUE}, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        scheduled_at = time.monotonic()
        due.schedule("record", ("later",), 1.0)
        # An earlier entry wakes the sleeping mover: it does not wait for the later one.
        due.schedule("record", ("sooner",), 0.2)
        wait_until(lambda: len(seen) == 2, timeout=30, what="both messages to run")
    finally:
        mover.stop()
        worker.stop()
        broker.close()
    assert [label for label, _ in seen] == ["sooner", "later"]
    assert seen[1][1] - scheduled_at >= 1.0  # never before it is due


def test_due_messages_survive_a_redis_kill_with_aof_and_move_after_the_restart() -> None:
    with RedisServer(appendfsync="everysec") as server:
        client = redis.Redis.from_url(server.url)
        due = DueTimes(client, QUEUE)
        ids = {due.schedule("act", (n,), 1.5) for n in range(20)}
        mover = DueMover(due, client, max_sleep=30.0)
        mover.start()
        server.kill()
        time.sleep(0.5)
        server.start()
        try:
            queue = queue_keys(QUEUE)
            wait_until(lambda: client.llen(queue.pending) == 20, timeout=30, what="the move")
            assert {i.decode() for i in client.lrange(queue.pending, 0, -1)} == ids
            assert due.pending() == 0
        finally:
            mover.stop()
            client.close()


def test_an_idle_mover_sleeps_instead_of_polling(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    due = DueTimes(client, QUEUE)
    mover = DueMover(due, client, max_sleep=5.0)
    calls: list[Any] = []
    original = due.move

    def counting_move(limit: int = 500) -> tuple[int, float | None]:
        calls.append(limit)
        return original(limit)

    due.move = counting_move  # type: ignore[method-assign]
    mover.start()
    time.sleep(2.0)
    mover.stop()
    assert len(calls) == 1  # one look, then a blocking wait for the next due time or token


def test_an_idle_mover_never_outwaits_the_clients_socket_timeout(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A pop cut off by the socket timeout may already have popped the wake-up token of a
    # new entry, which the retried pop then sleeps through.
    client = redis.Redis.from_url(redis_server.url, socket_timeout=0.5)
    due = DueTimes(client, QUEUE)
    mover = DueMover(due, client, max_sleep=30.0)
    with caplog.at_level(logging.WARNING, logger="tocsin.common.queue.due"):
        mover.start()
        time.sleep(3.0)  # idle: several socket timeouts long
        due.schedule("act", ("late",), 0.0)
        wait_until(lambda: client.llen(queue_keys(QUEUE).pending) == 1, timeout=3, what="the move")
        mover.stop()
    client.close()
    assert [r.getMessage() for r in caplog.records] == []


def test_a_wakeup_wait_longer_than_the_socket_timeout_keeps_its_connection(
    redis_server: RedisServer,
) -> None:
    # redis-py 8 cuts every read at 5 s by default (a default not in the pool's
    # settings); a pop cut off reconnects and may leave a token to the dead connection.
    waiter = redis.Redis.from_url(redis_server.url, socket_timeout=0.3)
    observer = redis.Redis.from_url(redis_server.url)
    waiter.ping()
    before = observer.info("stats")["total_connections_received"]
    started = time.monotonic()
    wait_for_wakeup(waiter, [due_keys(QUEUE).wake], 1.2)
    assert time.monotonic() - started >= 1.2  # the server's timeout ended it, not the client
    assert observer.info("stats")["total_connections_received"] == before
    observer.rpush(due_keys(QUEUE).wake, "1")
    wait_for_wakeup(waiter, [due_keys(QUEUE).wake], 30.0)  # a token ends it at once
    assert observer.llen(due_keys(QUEUE).wake) == 0
    waiter.close()
    observer.close()
