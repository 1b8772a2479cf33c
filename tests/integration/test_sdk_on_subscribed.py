"""The Python SDK's `on_subscribed`, against real gateways: it runs on every `subscribed`
answer, before the channel's events that follow it, so an application that loads its
state there (docs/protocol.md) gets whatever is published meanwhile as events."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest
import redis

from tocsin.client import Backoff, Event, EventStream, Subscribed
from tocsin.client.devserver import RedisServer
from tocsin.common.events import EventPublisher

pytestmark = pytest.mark.integration


async def test_on_subscribed_runs_before_the_events_after_each_answer_on_every_connect(
    start_service: Any, user_token: Any, redis_server: RedisServer
) -> None:
    first, second = start_service("gateway"), start_service("gateway")
    publisher = EventPublisher(redis.Redis.from_url(redis_server.url))
    for n in range(3):  # history from before the client came: its REST load's part
        publisher.publish(["alerts"], json.dumps({"n": n}))
    seen: list[Subscribed | Event] = []

    async def load(answer: Subscribed) -> None:
        seen.append(answer)
        # Published while the application loads, after the answer: it comes as an event.
        during = sum(isinstance(s, Subscribed) for s in seen)
        await asyncio.to_thread(publisher.publish, ["alerts"], json.dumps({"during": during}))

    stream = EventStream(
        [first.ws_url, second.ws_url],
        user_token(),
        channels=["alerts"],
        backoff=Backoff(base=0.05, cap=0.5),
        on_subscribed=load,
    )

    arrived = {1: asyncio.Event(), 2: asyncio.Event()}  # the event published in each load

    async def consume() -> None:
        async for event in stream:
            seen.append(event)
            if "during" in event.data:
                arrived[event.data["during"]].set()

    consumer = asyncio.create_task(consume())
    try:
        async with asyncio.timeout(60):
            await arrived[1].wait()
            first.stop()  # the stream reconnects to the second gateway and resubscribes
            await arrived[2].wait()
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
    answers = [s for s in seen if isinstance(s, Subscribed)]
    assert [(a.channel, a.recovered) for a in answers] == [("alerts", True), ("alerts", True)]
    assert answers[0].offset == 3, "events after the history follow the first answer"
    # Each answer comes before the events after it, and they follow it without a gap.
    after_first = seen[seen.index(answers[0]) + 1]
    assert isinstance(after_first, Event)
    assert after_first.offset == answers[0].offset + 1
    assert after_first.data == {"during": 1}
    assert answers[1].offset == after_first.offset, "resubscribed from the last event seen"
    offsets = [s.offset for s in seen if isinstance(s, Event)]
    assert offsets == [4, 5]
