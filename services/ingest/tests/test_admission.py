"""The admission script against a real Redis-compatible server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import dramatiq
import pytest
import redis

from tocsin.client.devserver import RedisServer
from tocsin.common import broker as queues
from tocsin.common.pipelining import PipelinedRedis
from tocsin.common.queue import QueueWorker, queue_keys
from tocsin.ingest.admission import Admission, Outcome, Verdict, encode_message


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[PipelinedRedis]:
    connection = PipelinedRedis(redis_server.url)
    yield connection
    await connection.close()


def _admission(client: PipelinedRedis, **overrides: float) -> Admission:
    options: dict[str, float] = {"rate_per_second": 1000.0, "burst": 1000,
                                 "max_backlog": 1000, "idempotency_ttl": 60}  # fmt: skip
    options.update(overrides)
    return Admission(client, queues.ALERTS_QUEUE, **options)  # type: ignore[arg-type]


async def _admit(
    admission: Admission, cost: int = 1, key: str = "", answer: bytes = b"{}"
) -> Verdict:
    message_id, message = encode_message("alerts", "process_alerts", ([],), {"traceparent": "t"})
    command = admission.command(
        "producer", message_id, message, cost=cost, answer=answer, idempotency_key=key
    )
    return await admission.admit_command(command)


async def test_enqueued_message_is_consumed_by_a_dramatiq_worker_as_is(
    client: PipelinedRedis, redis_server: RedisServer
) -> None:
    message_id, message = encode_message(
        "alerts", "process_alerts", ([{"id": "a"}],), {"traceparent": "00-abc"}
    )
    admission = _admission(client)
    verdict = await admission.admit_command(
        admission.command("p", message_id, message, cost=1, answer=b"")
    )
    assert verdict.outcome is Outcome.ENQUEUED
    broker = queues.build_broker(redis_server.url)
    try:
        consumer = broker.consume(queues.ALERTS_QUEUE, prefetch=1, timeout=1000)
        received: dramatiq.broker.MessageProxy | None = next(iter(consumer))
        assert received is not None
        assert received.actor_name == "process_alerts"
        assert received.args == ([{"id": "a"}],)
        assert received.options["traceparent"] == "00-abc"
        assert received.options["redis_message_id"] == message_id
        assert received.message_id == message_id
        consumer.ack(received)
        consumer.close()
    finally:
        broker.close()


async def test_repeated_idempotency_key_enqueues_once_and_replays_the_first_answer(
    client: PipelinedRedis, redis_server: RedisServer
) -> None:
    admission = _admission(client)
    first = await _admit(admission, key="retry-1", answer=b'{"first":true}')
    second = await _admit(admission, key="retry-1", answer=b'{"second":true}')
    assert first.outcome is Outcome.ENQUEUED
    assert second.outcome is Outcome.REPLAYED
    assert second.replay == b'{"first":true}'
    assert redis.Redis.from_url(redis_server.url).llen("tocsin:dramatiq:alerts") == 1


async def test_empty_bucket_refuses_with_a_wait_and_enqueues_nothing(
    client: PipelinedRedis, redis_server: RedisServer
) -> None:
    # A slow refill keeps the bucket empty for the rest of the test, however slow the machine.
    admission = _admission(client, rate_per_second=0.01, burst=3)
    assert (await _admit(admission, cost=3)).outcome is Outcome.ENQUEUED
    refused = await _admit(admission, cost=1)
    assert refused.outcome is Outcome.RATE_LIMITED
    assert refused.retry_after >= 1
    assert redis.Redis.from_url(redis_server.url).llen("tocsin:dramatiq:alerts") == 1


async def test_batch_larger_than_the_bucket_may_take_a_full_bucket(client: PipelinedRedis) -> None:
    admission = _admission(client, rate_per_second=0.01, burst=10)
    assert (await _admit(admission, cost=500)).outcome is Outcome.ENQUEUED
    assert (await _admit(admission, cost=1)).outcome is Outcome.RATE_LIMITED


async def test_backlog_counts_alerts_and_refuses_past_its_bound_without_spending_tokens(
    client: PipelinedRedis, redis_server: RedisServer
) -> None:
    admission = _admission(client, max_backlog=150, rate_per_second=0.01, burst=500)
    # Two messages, 150 alerts: the bound is reached by alerts, not by messages.
    assert (await _admit(admission, cost=100)).outcome is Outcome.ENQUEUED
    assert (await _admit(admission, cost=50)).outcome is Outcome.ENQUEUED
    refused = await _admit(admission, cost=1)
    assert refused.outcome is Outcome.BACKLOGGED
    sync = redis.Redis.from_url(redis_server.url)
    # The processor takes and acks the first message: its 100 alerts leave the backlog.
    worker = QueueWorker(sync)
    first = worker.fetch(queues.ALERTS_QUEUE, 1)
    worker.ack(queues.ALERTS_QUEUE, [m.options["redis_message_id"] for m in first])
    assert sync.get(queue_keys(queues.ALERTS_QUEUE).backlog) == b"50"
    assert (await _admit(admission, cost=1)).outcome is Outcome.ENQUEUED, "tokens were kept"


async def test_dead_lettered_message_leaves_the_backlog(
    client: PipelinedRedis, redis_server: RedisServer
) -> None:
    admission = _admission(client, max_backlog=10)
    assert (await _admit(admission, cost=10)).outcome is Outcome.ENQUEUED
    assert (await _admit(admission)).outcome is Outcome.BACKLOGGED
    worker = QueueWorker(redis.Redis.from_url(redis_server.url))
    [message] = worker.fetch(queues.ALERTS_QUEUE, 1)
    worker.nack(queues.ALERTS_QUEUE, message.options["redis_message_id"])
    assert (await _admit(admission)).outcome is Outcome.ENQUEUED


def test_message_ids_are_distinct_canonical_version_4_uuids() -> None:
    seen: set[str] = set()
    for _ in range(500):
        redis_id, message = encode_message("alerts", "process_alerts", ([],), {})
        assert dramatiq.Message.decode(message).message_id == redis_id
        parsed = uuid.UUID(redis_id)
        assert str(parsed) == redis_id
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        seen.add(redis_id)
    assert len(seen) == 500
