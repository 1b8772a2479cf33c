"""`PushReader` against redis-py's `PubSub.get_message`: the same traffic from a real Redis
read both ways gives the same replies, in the same order, however the bytes are split."""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

import hiredis
import pytest
import redis.asyncio as redis_async

from tocsin.client.devserver import RedisServer
from tocsin.gateway.pushes import PushReader, stream_of

pytestmark = pytest.mark.integration

CHANNELS = [b"live:alerts", b"live:team.ops", "live:\u00e9quipe".encode()]
PAYLOADS = [
    b"",
    b"plain",
    b"line\r\nbreak and $5\r\n*3\r\n",  # RESP syntax inside a payload
    bytes(range(256)),  # not UTF-8
    b"x" * 200_000,  # spans many reads
    *(b'{"n":%d}' % n for n in range(500)),  # a burst: many replies per read
]


def _as_redis_py(reply: list[Any]) -> tuple[str, bytes, Any]:
    """A `PushReader` reply in the shape `get_message` reports."""
    kind, channel, data = reply
    return kind.decode(), channel, data


async def _received_by_redis_py(pubsub: Any, count: int) -> list[tuple[str, bytes, Any]]:
    got: list[tuple[str, bytes, Any]] = []
    while len(got) < count:
        message = await pubsub.get_message(timeout=5.0)
        assert message is not None, f"redis-py got {len(got)} of {count}"
        got.append((message["type"], message["channel"], message["data"]))
    return got


async def _received_by_push_reader(reader: PushReader, count: int) -> list[tuple[str, bytes, Any]]:
    got: list[tuple[str, bytes, Any]] = []
    while len(got) < count:
        async with asyncio.timeout(5.0):
            got += [_as_redis_py(reply) for reply in await reader.read()]
    return got


async def test_push_reader_reads_what_redis_py_reads_from_the_same_traffic(
    redis_server: RedisServer,
) -> None:
    client = redis_async.Redis.from_url(redis_server.url)
    reference = client.pubsub()
    ours = client.pubsub()
    try:
        await reference.subscribe(*CHANNELS)
        await ours.connect()  # type: ignore[no-untyped-call]
        assert ours.connection is not None
        await ours.connection.send_command("SUBSCRIBE", *CHANNELS, check_health=False)
        reader = PushReader(stream_of(ours))
        # Both subscribed before anything is published (each confirmation read both ways).
        confirmed = await _received_by_redis_py(reference, len(CHANNELS))
        assert await _received_by_push_reader(reader, len(CHANNELS)) == confirmed
        assert [kind for kind, _, _ in confirmed] == ["subscribe"] * 3
        rng = random.Random(7)
        published = 0
        for payload in PAYLOADS:
            await client.publish(rng.choice(CHANNELS), payload)
            published += 1
        await ours.connection.send_command("UNSUBSCRIBE", CHANNELS[1], check_health=False)
        await reference.unsubscribe(CHANNELS[1])
        await client.publish(CHANNELS[1], b"after the unsubscribe")  # seen by neither
        await client.publish(CHANNELS[0], b"last")
        count = published + 1 + 1
        expected = await _received_by_redis_py(reference, count)
        assert await _received_by_push_reader(reader, count) == expected
        assert expected[-2][0] == "unsubscribe"
        assert expected[-1][2] == b"last"
    finally:
        await reference.aclose()  # type: ignore[no-untyped-call]
        await ours.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()


async def test_replies_split_at_any_byte_come_out_whole_and_in_order(
    redis_server: RedisServer,
) -> None:
    # The bytes Redis sends for a subscribe and a few publishes, captured raw ...
    client = redis_async.Redis.from_url(redis_server.url)
    subscriber = client.pubsub()
    try:
        await subscriber.connect()  # type: ignore[no-untyped-call]
        assert subscriber.connection is not None
        await subscriber.connection.send_command("SUBSCRIBE", CHANNELS[0], check_health=False)
        for payload in PAYLOADS[:6]:
            await client.publish(CHANNELS[0], payload)
        stream = stream_of(subscriber)
        raw = b""
        expected: list[list[Any]] = []
        parser = hiredis.Reader()
        while len(expected) < 7:
            async with asyncio.timeout(5.0):
                data = await stream.read(1 << 16)
            raw += data
            parser.feed(data)
            while (reply := parser.gets()) is not False:
                expected.append(reply)
        assert [reply[0] for reply in expected] == [b"subscribe"] + [b"message"] * 6
    finally:
        await subscriber.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()
    # ... then fed in random pieces: the same replies, none early and none twice.
    rng = random.Random(11)
    for _ in range(20):
        stream = asyncio.StreamReader()
        reader = PushReader(stream)
        got: list[list[Any]] = []

        async def read_all(reader: PushReader = reader, got: list[list[Any]] = got) -> None:
            with contextlib.suppress(redis_async.ConnectionError):  # the end of the bytes
                while True:
                    got += await reader.read()

        reading = asyncio.create_task(read_all())
        at = 0
        while at < len(raw):
            step = rng.choice((1, 2, 7, 100, 5000, 70_000))
            stream.feed_data(raw[at : at + step])
            at += step
            await asyncio.sleep(0)  # the reader takes this piece alone
        stream.feed_eof()
        await reading
        assert got == expected


async def test_a_closed_connection_or_an_error_reply_is_a_connection_error() -> None:
    stream = asyncio.StreamReader()
    stream.feed_eof()
    with pytest.raises(redis_async.ConnectionError):
        await PushReader(stream).read()
    stream = asyncio.StreamReader()
    stream.feed_data(b"-NOPERM no permission to subscribe\r\n")
    with pytest.raises(redis_async.ConnectionError, match="NOPERM"):
        await PushReader(stream).read()
    stream = asyncio.StreamReader()
    stream.feed_data(b"!bogus\r\n")
    with pytest.raises(redis_async.ConnectionError, match="protocol"):
        await PushReader(stream).read()
