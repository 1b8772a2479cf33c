"""Who is subscribed to what, and one Redis pub/sub connection feeding them.

Subscriptions are reference-counted across the process's sockets: the first
socket on a channel subscribes in Redis, the last one out unsubscribes. The
reader hands each frame, as received, to the sockets' bounded queues and never
waits on a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from typing import Protocol

import redis.asyncio as redis_async

from tocsin.common import keys

__all__ = ["Hub", "Subscriber"]

log = logging.getLogger(__name__)


class Subscriber(Protocol):
    """A socket's receiving end, as the hub sees it."""

    def offer(self, frame: bytes) -> None:
        """Queue `frame` for sending; must not block."""


class Hub:
    """Channel membership plus the process's single pub/sub reader."""

    def __init__(self, redis: redis_async.Redis) -> None:
        self._redis = redis
        self._members: dict[str, set[Subscriber]] = defaultdict(set)
        self._pubsub = redis.pubsub(ignore_subscribe_messages=True)
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self._reader = asyncio.create_task(self._read(), name="hub-reader")

    async def stop(self) -> None:
        if self._reader:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    async def join(self, channel: str, subscriber: Subscriber) -> None:
        async with self._lock:
            members = self._members[channel]
            if not members:
                await self._pubsub.subscribe(keys.live(channel))
            members.add(subscriber)

    async def leave(self, channel: str, subscriber: Subscriber) -> None:
        async with self._lock:
            members = self._members.get(channel)
            if not members or subscriber not in members:
                return
            members.discard(subscriber)
            if not members:
                del self._members[channel]
                await self._pubsub.unsubscribe(keys.live(channel))

    async def _read(self) -> None:
        prefix_len = len(keys.live(""))
        while True:
            if not self._pubsub.subscribed:
                await asyncio.sleep(0.01)
                continue
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except (redis_async.ConnectionError, OSError) as exc:
                log.warning("pub/sub connection lost: %s", exc)
                await asyncio.sleep(0.1)
                continue
            if message is None or message["type"] != "message":
                continue
            channel = message["channel"].decode()[prefix_len:]
            frame: bytes = message["data"]
            for subscriber in self._members.get(channel, ()):
                subscriber.offer(frame)
