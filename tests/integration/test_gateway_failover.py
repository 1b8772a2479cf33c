"""Horizontal fan-out and failures across real gateway processes: three gateways and one
processor, a SIGKILLed gateway, a restarted Redis-compatible server, and a SIGTERM drain.
Clients use the SDK; every check is by offsets, never by time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
import time
from typing import Any

import httpx
import pytest
import redis
import websockets
from tests.support import next_frame

from tocsin.client import Backoff, EventStream, Reset
from tocsin.client.devserver import RedisServer
from tocsin.common import keys
from tocsin.common.events import EventPublisher

pytestmark = pytest.mark.integration

FAST_BACKOFF = {"base": 0.05, "factor": 2.0, "cap": 0.5}


class Collector:
    """Runs one SDK stream in the background and records what it yields."""

    def __init__(self, stream: EventStream) -> None:
        self.stream = stream
        self.events: list[tuple[str, int]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for event in self.stream:
            self.events.append((event.epoch, event.offset))

    @property
    def offsets(self) -> list[int]:
        return [offset for _, offset in self.events]

    async def wait(self, done: Any, what: str, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while not done(self):
            if self.task.done():
                self.task.result()  # surfaces a fatal error
                raise AssertionError(f"stream ended before {what}")
            assert time.monotonic() < deadline, f"{what}: {self.offsets[-5:]}"
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def stream(urls: list[str], token: str) -> EventStream:
    return EventStream(urls, token, channels=["alerts"], backoff=Backoff(**FAST_BACKOFF))


async def subscribed(collectors: list[Collector]) -> None:
    for collector in collectors:
        await collector.wait(lambda c: "alerts" in c.stream.positions, "subscribed")


def publish_in_background(publisher: EventPublisher, count: int) -> threading.Thread:
    def run() -> None:
        for n in range(count):
            publisher.publish(["alerts"], json.dumps({"n": n}))
            time.sleep(0.002)  # a steady flow, so failures happen mid-stream

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def ready_status(url: str) -> int:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code
    except httpx.HTTPError:
        return 0


async def wait_status(url: str, accept: set[int], within: float = 30.0) -> int:
    deadline = time.monotonic() + within
    while (status := ready_status(url)) not in accept:
        assert time.monotonic() < deadline, f"/readyz stayed {status}"
        await asyncio.sleep(0.05)
    return status


async def test_clients_spread_over_three_gateways_get_every_event_once_in_offset_order(
    start_service, user_token, redis_server: RedisServer
) -> None:
    start_service("processor")
    ingest = start_service("ingest")
    gateways = [start_service("gateway") for _ in range(3)]
    sockets = []
    for gateway in gateways:
        for _ in range(2):
            socket = await websockets.connect(
                gateway.ws_url, additional_headers={"authorization": f"Bearer {user_token()}"}
            )
            await socket.recv()  # welcome
            await socket.send(json.dumps({"type": "subscribe", "channel": "alerts"}))
            # Subscribed before anything is published: the subscription starts at the head.
            await next_frame(socket, "subscribed")
            sockets.append(socket)
    alerts = [
        {"name": f"Fanout{n}", "severity": "warning", "service": "db", "labels": {"n": str(n)}}
        for n in range(30)
    ]
    producer = {"authorization": f"Bearer {user_token(scopes=('ingest',))}"}
    for batch in (alerts[:10], alerts[10:20], alerts[20:]):
        response = await asyncio.to_thread(
            httpx.post, f"{ingest.url}/v1/alerts", json=batch, headers=producer, timeout=10
        )
        assert response.status_code == 202, response.text

    admin = redis.Redis.from_url(redis_server.url)
    deadline = time.monotonic() + 60
    while int(admin.hget(keys.channel_meta("alerts"), "offset") or 0) < 30:
        assert time.monotonic() < deadline, "the processor did not publish the alerts"
        await asyncio.sleep(0.05)
    last = int(admin.hget(keys.channel_meta("alerts"), "offset") or 0)

    names = set()
    for socket in sockets:
        offsets = []
        while not offsets or offsets[-1] < last:
            frame = json.loads(await asyncio.wait_for(socket.recv(), 30))
            if frame["type"] == "event":
                offsets.append(frame["offset"])
                names.add(frame["data"]["alert"]["name"])
        assert offsets == list(range(1, last + 1))
        await socket.close()
    assert names == {alert["name"] for alert in alerts}


async def test_clients_of_a_sigkilled_gateway_resume_on_another_with_every_event_once(
    start_service, user_token, redis_server: RedisServer
) -> None:
    doomed, survivor = start_service("gateway"), start_service("gateway")
    collectors = [
        Collector(stream([doomed.ws_url, survivor.ws_url], user_token())) for _ in range(4)
    ]
    await subscribed(collectors)
    total = 300
    flow = publish_in_background(EventPublisher(redis.Redis.from_url(redis_server.url)), total)
    for collector in collectors:
        await collector.wait(lambda c: len(c.offsets) >= 30, "events before the kill")
    doomed.signal(signal.SIGKILL)
    await asyncio.to_thread(flow.join)
    for collector in collectors:
        # Every event may have come before the kill: the move to the survivor is waited
        # for too, not assumed.
        await collector.wait(
            lambda c: len(c.offsets) >= total and c.stream.url == survivor.ws_url,
            "every event, and the client on the survivor",
        )
        await collector.stop()
        assert collector.offsets == list(range(1, total + 1))
        assert collector.stream.reconnects >= 1


async def test_after_a_redis_restart_clients_are_told_what_was_lost_and_readyz_showed_it(
    start_service, user_token, redis_server: RedisServer
) -> None:
    gateway = start_service("gateway", TOCSIN_PROBE_INTERVAL="0.2", TOCSIN_PROBE_TIMEOUT="1")
    collectors = [Collector(stream([gateway.ws_url], user_token())) for _ in range(3)]
    await subscribed(collectors)
    publisher = EventPublisher(redis.Redis.from_url(redis_server.url))
    for n in range(20):
        publisher.publish(["alerts"], json.dumps({"n": n}))
    for collector in collectors:
        await collector.wait(lambda c: len(c.offsets) >= 20, "events before the restart")
    old_epoch = collectors[0].events[-1][0]

    redis_server.stop()  # persistence is off: the streams are lost with it
    assert await wait_status(gateway.url, {503}) == 503
    redis_server.start()
    assert await wait_status(gateway.url, {200}) == 200

    admin = redis.Redis.from_url(redis_server.url)
    publisher = EventPublisher(admin)
    for n in range(20):
        publisher.publish(["alerts"], json.dumps({"n": n}))
    new_epoch = admin.hget(keys.channel_meta("alerts"), "epoch").decode()
    assert new_epoch != old_epoch
    for collector in collectors:
        # Where each client ends depends on when its catch-up read the new stream;
        # that it ends at the new head, knowing of the reset, does not.
        await collector.wait(
            lambda c: c.stream.positions.get("alerts") == (new_epoch, 20), "the new head"
        )
        await collector.stop()
        resets: list[Reset] = collector.stream.resets
        assert resets, "the client was told the stream was lost"
        # Events from the new epoch: exactly those after the reset's offset, once each.
        after = [offset for epoch, offset in collector.events if epoch == new_epoch]
        assert after == list(range(resets[-1].offset + 1, 21))
        assert collector.offsets[:20] == list(range(1, 21))


async def test_sigterm_drains_with_the_restart_code_and_clients_lose_nothing(
    start_service, user_token, redis_server: RedisServer
) -> None:
    draining = start_service("gateway", TOCSIN_DRAIN_WINDOW="1")
    other = start_service("gateway")
    collectors = [
        Collector(stream([draining.ws_url, other.ws_url], user_token())) for _ in range(4)
    ]
    await subscribed(collectors)
    total = 600
    flow = publish_in_background(EventPublisher(redis.Redis.from_url(redis_server.url)), total)
    for collector in collectors:
        await collector.wait(lambda c: len(c.offsets) >= 30, "events before the drain")
    draining.signal(signal.SIGTERM)
    assert await wait_status(draining.url, {0, 503}) in {0, 503}
    # The process exits once every socket has been closed, within the drain window.
    assert await asyncio.to_thread(draining.process.wait, 30) is not None
    await asyncio.to_thread(flow.join)
    for collector in collectors:
        await collector.wait(lambda c: 4000 in c.stream.close_codes, "the restart close")
        await collector.wait(
            lambda c: len(c.offsets) >= total and c.stream.url == other.ws_url,
            "every event, and the client on the other gateway",
        )
        await collector.stop()
        assert collector.offsets == list(range(1, total + 1))
