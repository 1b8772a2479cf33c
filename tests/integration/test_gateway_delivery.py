"""Delivery through one real gateway: gap-free recovery with `since`, `recovered: false`
when history is gone, catch-up after the pub/sub connection drops, and slow consumers."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket as sockets
import time
from typing import Any

import psutil
import pytest
import redis
import websockets
from tests.support import metric, next_frame, recv

from tocsin.client import EventStream
from tocsin.client.devserver import RedisServer
from tocsin.common.events import EventPublisher

pytestmark = pytest.mark.integration


async def subscribe(socket: Any, channel: str, **extra: Any) -> dict[str, Any]:
    await socket.send(json.dumps({"type": "subscribe", "channel": channel, **extra}))
    return await next_frame(socket, "subscribed")


async def offsets_until(socket: Any, last: int, within: float = 30.0) -> list[int]:
    offsets: list[int] = []
    while not offsets or offsets[-1] < last:
        frame = await recv(socket, within)
        if frame["type"] == "event":
            offsets.append(frame["offset"])
    return offsets


def publish(publisher: EventPublisher, count: int, channel: str = "alerts", size: int = 0) -> None:
    filler = "x" * size
    for n in range(count):
        publisher.publish([channel], json.dumps({"n": n, "filler": filler}))


@pytest.fixture
def publisher(redis_server: RedisServer) -> EventPublisher:
    return EventPublisher(redis.Redis.from_url(redis_server.url))


async def test_since_replays_missed_events_and_joins_the_live_flow_without_gap_or_duplicate(
    start_service, user_token, publisher: EventPublisher
) -> None:
    gateway = start_service("gateway", TOCSIN_HISTORY_BATCH="37")
    publish(publisher, 120)
    headers = {"authorization": f"Bearer {user_token()}"}
    async with websockets.connect(gateway.ws_url, additional_headers=headers) as socket:
        await next_frame(socket, "welcome")
        head = await subscribe(socket, "alerts")
        epoch = head["epoch"]
        assert (head["offset"], head["recovered"]) == (120, True)
    async with websockets.connect(gateway.ws_url, additional_headers=headers) as socket:
        await next_frame(socket, "welcome")
        # Events keep flowing while the history is read: the merge must be exact.
        flowing = asyncio.create_task(asyncio.to_thread(publish, publisher, 300))
        subscribed = await subscribe(socket, "alerts", since=20, epoch=epoch)
        assert (subscribed["offset"], subscribed["epoch"], subscribed["recovered"]) == (
            20,
            epoch,
            True,
        )
        await flowing
        assert await offsets_until(socket, 420) == list(range(21, 421))


async def test_since_older_than_the_stream_or_from_another_epoch_is_not_recovered(
    start_service, user_token, redis_server: RedisServer
) -> None:
    gateway = start_service("gateway")
    capped = EventPublisher(redis.Redis.from_url(redis_server.url), stream_cap=10)
    publish(capped, 400)  # MAXLEN ~ trims whole nodes: the earliest offsets are gone
    headers = {"authorization": f"Bearer {user_token()}"}
    async with websockets.connect(gateway.ws_url, additional_headers=headers) as socket:
        await next_frame(socket, "welcome")
        head = await subscribe(socket, "alerts")
        # A position the channel never reached: its stream was lost.
        ahead = await subscribe(socket, "alerts.severity.none", since=3)
        assert (ahead["recovered"], ahead["offset"]) == (False, 0)
    async with websockets.connect(gateway.ws_url, additional_headers=headers) as socket:
        await next_frame(socket, "welcome")
        lost = await subscribe(socket, "alerts", since=3, epoch=head["epoch"])
        assert (lost["recovered"], lost["offset"], lost["epoch"]) == (False, 400, head["epoch"])
    async with websockets.connect(gateway.ws_url, additional_headers=headers) as socket:
        await next_frame(socket, "welcome")
        other = await subscribe(socket, "alerts", since=399, epoch="12345")
        assert (other["recovered"], other["offset"]) == (False, 400)
        await asyncio.to_thread(publish, capped, 1)
        assert (await next_frame(socket, "event"))["offset"] == 401


async def test_a_dropped_pubsub_connection_is_resubscribed_and_caught_up_from_the_stream(
    start_service, user_token, publisher: EventPublisher, redis_server: RedisServer
) -> None:
    gateway = start_service("gateway", TOCSIN_PROBE_INTERVAL="0.2", TOCSIN_PROBE_TIMEOUT="2")
    stream = EventStream(gateway.ws_url, user_token(), channels=["alerts"])
    received: list[int] = []

    async def consume() -> None:
        async for event in stream:
            received.append(event.offset)

    consumer = asyncio.create_task(consume())
    try:
        deadline = time.monotonic() + 30
        while "alerts" not in stream.positions:
            assert time.monotonic() < deadline, "never subscribed"
            await asyncio.sleep(0.02)
        publish(publisher, 10)
        admin = redis.Redis.from_url(redis_server.url)
        # Kill only the gateway's pub/sub connection, then publish at once: these
        # events can reach the gateway only through the stream.
        admin.client_kill_filter(_type="pubsub")
        publish(publisher, 40)
        deadline = time.monotonic() + 60
        while len(received) < 50:
            assert time.monotonic() < deadline, received
            await asyncio.sleep(0.05)
    finally:
        consumer.cancel()
    assert received == list(range(1, 51))
    assert stream.reconnects == 0, "the socket itself stayed open"
    assert metric(gateway.url, "tocsin_gateway_pubsub_reconnects_total") >= 1


class StalledClient:
    """A WebSocket client spoken by hand over a raw socket, so that it can stop reading."""

    def __init__(self, port: int, token: str) -> None:
        self.socket = sockets.socket()
        self.socket.setsockopt(sockets.SOL_SOCKET, sockets.SO_RCVBUF, 4096)
        self.socket.settimeout(30)
        self.socket.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.socket.sendall(
            f"GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.received = b""

    def send_text(self, text: str) -> None:
        data = text.encode()
        assert len(data) < 126
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(data))
        self.socket.sendall(bytes([0x81, 0x80 | len(data)]) + mask + masked)

    def read_until(self, marker: bytes) -> None:
        while marker not in self.received:
            chunk = self.socket.recv(65536)
            assert chunk, "closed early"
            self.received += chunk

    def read_to_end(self, last: bytes) -> bytes:
        """Read until the connection ends or the bytes end with `last`."""
        while not self.received.endswith(last) and (chunk := self.socket.recv(65536)):
            self.received += chunk
        return self.received


async def test_a_client_that_stops_reading_is_closed_as_slow_while_a_reader_sees_no_gap(
    start_service, user_token, publisher: EventPublisher
) -> None:
    gateway = start_service(
        "gateway",
        TOCSIN_OUTBOUND_QUEUE_FRAMES="100",
        TOCSIN_OUTBOUND_QUEUE_BYTES="400000",
        TOCSIN_CLOSE_TIMEOUT="120",
        TOCSIN_HEARTBEAT_INTERVAL="600",  # the hand-made client answers no pings
    )
    process = psutil.Process(gateway.process.pid)
    stalled = StalledClient(gateway.port, user_token())
    stalled.read_until(b'"welcome"')
    stalled.send_text(json.dumps({"type": "subscribe", "channel": "alerts"}))
    stalled.read_until(b'"subscribed"')

    reader = await websockets.connect(
        gateway.ws_url, additional_headers={"authorization": f"Bearer {user_token()}"}
    )
    await next_frame(reader, "welcome")
    await subscribe(reader, "alerts")
    rss_before = process.memory_info().rss

    received: list[int] = []
    chunk = 50
    published = 0
    while metric(gateway.url, 'tocsin_ws_disconnects_total{code="slow_consumer"}') < 1:
        assert published < 20_000, "the stalled client was never closed"
        await asyncio.to_thread(publish, publisher, chunk, "alerts", 4000)
        published += chunk
        # Pace on the reader, never on time: it must not become slow itself.
        received += await offsets_until(reader, published)
    for _ in range(4):  # the process goes on serving the reader alone
        await asyncio.to_thread(publish, publisher, chunk, "alerts", 4000)
        published += chunk
        received += await offsets_until(reader, published)
    rss_after = process.memory_info().rss
    await reader.close()

    assert received == list(range(1, published + 1))
    # Bounded: far less than what the stalled client was sent and never read.
    assert rss_after - rss_before < 64 * 1024 * 1024
    dropped = metric(gateway.url, 'tocsin_ws_deliveries_dropped_total{reason="slow_consumer"}')
    assert dropped >= 1

    # Reading again, the stalled client finds its backlog, then the slow-consumer close.
    close_frame = bytes([0x88, 2 + len(b"slow_consumer")]) + (4001).to_bytes(2, "big")
    backlog = await asyncio.to_thread(stalled.read_to_end, close_frame + b"slow_consumer")
    assert backlog.endswith(close_frame + b"slow_consumer")
