"""Recovery reads shared in a reconnect storm: sockets resuming a channel from the same
offset get one XRANGE between them, and never an answer that stops short of their head."""

from __future__ import annotations

import asyncio
from typing import Any

import redis
import redis.asyncio as redis_async

from tocsin.client.devserver import RedisServer
from tocsin.common.events import EventPublisher
from tocsin.gateway.history import ChannelHead, ChannelLog


class CountingRedis:
    """A real client that counts the stream reads it is asked for (and can fail them)."""

    def __init__(self, client: redis_async.Redis) -> None:
        self.client = client
        self.stream_reads = 0
        self.fail = False

    async def xrange(self, *args: Any, **kwargs: Any) -> Any:
        self.stream_reads += 1
        if self.fail:
            raise redis_async.ConnectionError("down")
        return await self.client.xrange(*args, **kwargs)

    async def hgetall(self, key: str) -> Any:
        return await self.client.hgetall(key)


def _publish(url: str, count: int) -> None:
    publisher = EventPublisher(redis.Redis.from_url(url))
    for n in range(count):
        publisher.publish(["alerts"], f'{{"n":{n}}}')


async def test_resumes_from_one_offset_share_one_stream_read(redis_server: RedisServer) -> None:
    _publish(redis_server.url, 10)
    client = redis_async.Redis.from_url(redis_server.url)
    counting = CountingRedis(client)
    log = ChannelLog(counting)  # type: ignore[arg-type]
    head = await log.head("alerts")
    answers = await asyncio.gather(*(log.read("alerts", 4, 500, head) for _ in range(200)))
    later = await log.read("alerts", 4, 500, head)  # after the first read was answered
    assert counting.stream_reads == 1
    for frames in [*answers, later]:
        assert [f.offset for f in frames] == [5, 6, 7, 8, 9, 10]
    await client.aclose()


async def test_an_answer_short_of_the_callers_head_is_not_shared(
    redis_server: RedisServer,
) -> None:
    _publish(redis_server.url, 5)
    client = redis_async.Redis.from_url(redis_server.url)
    counting = CountingRedis(client)
    log = ChannelLog(counting)  # type: ignore[arg-type]
    first = await log.read("alerts", 2, 500, await log.head("alerts"))
    _publish(redis_server.url, 3)
    newer = await log.head("alerts")
    second = await log.read("alerts", 2, 500, newer)
    assert [f.offset for f in first] == [3, 4, 5]
    assert [f.offset for f in second] == [3, 4, 5, 6, 7, 8]
    assert counting.stream_reads == 2
    # Another epoch's head never takes this epoch's frames.
    await log.read("alerts", 2, 500, ChannelHead("another-epoch", 8))
    assert counting.stream_reads == 3
    await client.aclose()


async def test_a_full_batch_is_shared_and_reads_without_a_head_never_are(
    redis_server: RedisServer,
) -> None:
    _publish(redis_server.url, 12)
    client = redis_async.Redis.from_url(redis_server.url)
    counting = CountingRedis(client)
    log = ChannelLog(counting)  # type: ignore[arg-type]
    head = await log.head("alerts")
    await log.read("alerts", 0, 5, ChannelHead(head.epoch, 3))
    batch = await log.read("alerts", 0, 5, head)  # a full batch: the caller reads on from it
    assert [f.offset for f in batch] == [1, 2, 3, 4, 5]
    assert counting.stream_reads == 1
    await log.read("alerts", 0, 5)
    await log.read("alerts", 0, 5)
    assert counting.stream_reads == 3
    await client.aclose()


async def test_a_failed_shared_read_leaves_each_caller_to_read_again(
    redis_server: RedisServer,
) -> None:
    _publish(redis_server.url, 3)
    client = redis_async.Redis.from_url(redis_server.url)
    counting = CountingRedis(client)
    log = ChannelLog(counting)  # type: ignore[arg-type]
    head = await log.head("alerts")
    counting.fail = True
    failed = await asyncio.gather(
        *(log.read("alerts", 0, 500, head) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(result, redis_async.ConnectionError) for result in failed)
    counting.fail = False
    assert [f.offset for f in await log.read("alerts", 0, 500, head)] == [1, 2, 3]
    await client.aclose()
