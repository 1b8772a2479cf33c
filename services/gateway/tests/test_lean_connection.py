"""Per-connection pieces that keep an idle socket small and a burst cheap: the shared
head read, the hub's known heads, the list-backed inbox, the writable flag and write
coalescing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio as redis_async

from tocsin.client.devserver import RedisServer
from tocsin.common.events import EventPublisher
from tocsin.gateway.broker import RedisBroker
from tocsin.gateway.frames import Frame
from tocsin.gateway.history import ChannelLog
from tocsin.gateway.hub import Hub
from tocsin.gateway.metrics import Stats
from tocsin.gateway.wire import Coalescer, Inbox, Wire, Writable


class CountingRedis:
    """A real client that counts the head reads it is asked for."""

    def __init__(self, client: redis_async.Redis) -> None:
        self.client = client
        self.head_reads = 0

    async def hgetall(self, key: str) -> Any:
        self.head_reads += 1
        return await self.client.hgetall(key)


async def test_heads_asked_in_one_turn_share_one_read_and_a_later_ask_reads_again(
    redis_server: RedisServer,
) -> None:
    publisher = EventPublisher(redis.Redis.from_url(redis_server.url))
    publisher.publish(["alerts"], '{"n":1}')
    client = redis_async.Redis.from_url(redis_server.url)
    counting = CountingRedis(client)
    log = ChannelLog(counting)  # type: ignore[arg-type]
    heads = await asyncio.gather(*(log.head("alerts") for _ in range(50)))
    assert counting.head_reads == 1
    assert {head.offset for head in heads} == {1}

    publisher.publish(["alerts"], '{"n":2}')
    assert (await log.head("alerts")).offset == 2
    assert counting.head_reads == 2
    await client.aclose()


async def eventually(check: Callable[[], object]) -> None:
    """Wait up to 10 s for `check` to come true."""
    for _ in range(1000):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition did not come true in time")


class Recorder:
    """A hub member that keeps what it is handed."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def deliver(self, frame: Frame) -> None:
        self.frames.append(frame)

    def resume(self, channel: str) -> None:
        pass


async def test_the_hub_reads_a_head_once_then_knows_it_from_live_events(
    redis_server: RedisServer,
) -> None:
    publisher = EventPublisher(redis.Redis.from_url(redis_server.url))
    publisher.publish(["alerts"], '{"n":1}')
    client = redis_async.Redis.from_url(redis_server.url)
    pubsub_client = redis_async.Redis.from_url(redis_server.url)
    counting = CountingRedis(client)
    stats = Stats()
    broker = RedisBroker(client, pubsub_client, ChannelLog(counting), stats)  # type: ignore[arg-type]
    hub = Hub(broker, stats)
    await hub.start()
    try:
        first = Recorder()
        await hub.join("alerts", first)
        assert (await hub.head("alerts")).offset == 1
        # Later joiners are told the head the hub already knows: no read of their own.
        for _ in range(20):
            await hub.join("alerts", Recorder())
            assert (await hub.head("alerts")).offset == 1
        assert counting.head_reads == 1

        publisher.publish(["alerts"], '{"n":2}')
        await eventually(lambda: first.frames)
        head = await hub.head("alerts")
        assert (head.offset, head.epoch) == (2, first.frames[0].epoch)
        assert counting.head_reads == 1

        # A broken pub/sub connection may have missed events: the hub forgets what it
        # knew and reads the head again once the channel is confirmed anew.
        await client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        await eventually(lambda: stats.pubsub_reconnects == 1 and hub.connected)
        await hub.join("alerts", Recorder())
        assert (await hub.head("alerts")).offset == 2
        assert counting.head_reads == 2
    finally:
        await hub.stop()
        await client.aclose()
        await pubsub_client.aclose()


async def test_the_inbox_hands_messages_to_its_reader_in_order() -> None:
    inbox = Inbox()
    reader = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait({"n": 1})
    inbox.put_nowait({"n": 2})
    assert await reader == {"n": 1}
    assert not inbox.empty()
    assert await inbox.get() == {"n": 2}
    assert inbox.empty()


async def test_a_cancelled_inbox_read_loses_no_message() -> None:
    inbox = Inbox()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(inbox.get(), 0.01)
    inbox.put_nowait("late")
    assert await inbox.get() == "late"


async def test_writable_wakes_every_waiter_when_set() -> None:
    writable = Writable()
    assert await writable.wait()
    writable.clear()
    waiters = [asyncio.create_task(writable.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(waiter.done() for waiter in waiters)
    writable.set()
    assert await asyncio.gather(*waiters) == [True, True, True]


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False


class FakeProtocol:
    def __init__(self) -> None:
        self.close_sent = False
        self.writable = Writable()
        self.transport = FakeTransport()


async def test_frames_written_in_one_turn_reach_the_transport_in_one_write_in_order() -> None:
    protocol = FakeProtocol()
    wire = Wire(protocol, Coalescer())  # type: ignore[arg-type]
    assert all([wire.write(b"a"), wire.write(b"b"), wire.write(b"c")])
    assert protocol.transport.writes == []
    await asyncio.sleep(0)
    assert protocol.transport.writes == [b"abc"]


async def test_a_write_refused_under_back_pressure_first_flushes_what_was_taken() -> None:
    protocol = FakeProtocol()
    wire = Wire(protocol, Coalescer())  # type: ignore[arg-type]
    assert wire.write(b"taken")
    protocol.writable.clear()
    assert not wire.write(b"refused")
    # The slow way sends next, so what the wire took is already on the transport.
    assert protocol.transport.writes == [b"taken"]
