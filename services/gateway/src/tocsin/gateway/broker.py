"""`RedisBroker`: the process's one supervised Redis pub/sub connection.

It subscribes and unsubscribes live channels (never PSUBSCRIBE), reads every
published message and reports it to a `BrokerHandler` (the hub) without
awaiting anything. A probe published on the broker's own channel every
`probe_interval` proves that messages still flow end to end; `healthy` turns
false when probes stop coming back, and a connection that stays silent is
dropped. When the connection breaks the broker reconnects with back-off,
resubscribes every channel the handler names, and reports each confirmation,
so the handler can have its members catch up on what was published meanwhile.

redis-py connects and sends the (UN)SUBSCRIBE commands; the replies are read
by `PushReader` (`pushes.py`), all of one socket read at once, not through
`PubSub.get_message` one message at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterable
from typing import Protocol

import redis.asyncio as redis_async
from redis.asyncio.client import PubSub

from tocsin.common import keys
from tocsin.gateway.history import ChannelHead, ChannelLog
from tocsin.gateway.metrics import Stats
from tocsin.gateway.pushes import PushReader, stream_of

__all__ = ["BrokerHandler", "RedisBroker"]

log = logging.getLogger(__name__)

REDIS_ERRORS = (redis_async.ConnectionError, redis_async.TimeoutError, OSError)


class BrokerHandler(Protocol):
    """What the broker reports to; every call must return without awaiting."""

    def channels(self) -> Iterable[str]:
        """The channels to (re)subscribe on a fresh connection."""

    def on_message(self, channel: str, data: bytes) -> None:
        """An event published on `channel`."""

    def on_subscribed(self, channel: str) -> None:
        """Redis confirmed the subscription of `channel`."""

    def on_lost(self) -> None:
        """The connection broke: nothing is confirmed until resubscribed."""


class RedisBroker:
    """Pub/sub reader, health probe and head reads against Redis."""

    def __init__(
        self,
        redis: redis_async.Redis,
        pubsub_redis: redis_async.Redis,
        log: ChannelLog,
        stats: Stats,
        *,
        probe_interval: float = 1.0,
        probe_timeout: float = 5.0,
    ) -> None:
        self._redis = redis
        # Its own client, without transparent retries: a reconnect must be seen
        # here, because whatever was published meanwhile has to be caught up.
        self._pubsub_redis = pubsub_redis
        self._log = log
        self._stats = stats
        self._handler: BrokerHandler | None = None
        self._pubsub: PubSub | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._probe_channel = keys.probe(uuid.uuid4().hex)
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self._last_probe = time.monotonic()
        self._live_prefix = keys.live("")
        self.connected = False

    @property
    def healthy(self) -> bool:
        """Pub/sub is connected and the last probe came back recently."""
        return self.connected and time.monotonic() - self._last_probe < self._probe_timeout

    async def start(self, handler: BrokerHandler) -> None:
        self._handler = handler
        self._last_probe = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._read_forever(handler), name="hub-reader"),
            asyncio.create_task(self._probe_forever(), name="hub-probe"),
        ]

    async def stop(self) -> None:
        # redis-py can swallow a cancellation that lands inside a (re)connect, and the
        # reader then loops on: cancel until each task has really ended, or a gateway
        # whose server failed to bind never finishes shutting down.
        for task in self._tasks:
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=1.0)
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close_pubsub()

    async def subscribe(self, channel: str) -> None:
        if self._pubsub is not None and self.connected:
            # A failure here is the reader's to notice; it resubscribes everything.
            with contextlib.suppress(*REDIS_ERRORS):
                await _send(self._pubsub, "SUBSCRIBE", keys.live(channel))

    async def unsubscribe(self, channel: str) -> None:
        if self._pubsub is not None and self.connected:
            with contextlib.suppress(*REDIS_ERRORS):
                await _send(self._pubsub, "UNSUBSCRIBE", keys.live(channel))

    async def read_head(self, channel: str) -> ChannelHead:
        """Where `channel`'s stream stands now (one Redis read)."""
        return await self._log.head(channel)

    async def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _read_forever(self, handler: BrokerHandler) -> None:
        delay = 0.05
        first = True
        while True:
            try:
                pubsub = self._pubsub_redis.pubsub()
                self._pubsub = pubsub
                channels = [keys.live(channel) for channel in handler.channels()]
                await pubsub.connect()  # type: ignore[no-untyped-call]
                await _send(pubsub, "SUBSCRIBE", self._probe_channel, *channels)
                self.connected = True
                self._last_probe = time.monotonic()
                delay = 0.05
                if not first:
                    self._stats.pubsub_reconnects += 1
                    log.warning("pub/sub reconnected; catching up %d channels", len(channels))
                first = False
                await self._read(pubsub, handler)
            except asyncio.CancelledError:
                raise
            except REDIS_ERRORS as exc:
                if self.connected:
                    log.warning("pub/sub connection lost: %s", exc)
            self.connected = False
            handler.on_lost()
            await self._close_pubsub()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _read(self, pubsub: PubSub, handler: BrokerHandler) -> None:
        prefix_len = len(self._live_prefix)
        probe = self._probe_channel.encode()
        stats = self._stats
        on_message = handler.on_message
        reader = PushReader(stream_of(pubsub))
        while True:
            replies = []
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._probe_interval):
                    replies = await reader.read()
            if time.monotonic() - self._last_probe > self._probe_timeout:
                # Connected but silent: the failure mode that otherwise stays
                # green forever. Start over on a fresh connection.
                raise redis_async.ConnectionError("pub/sub probes stopped arriving")
            for reply in replies:
                kind = reply[0]
                name: bytes = reply[1]
                if kind == b"message":
                    if name == probe:
                        self._last_probe = time.monotonic()
                        stats.pubsub_lag = max(0.0, time.time() - float(reply[2]))
                        continue
                    on_message(name[prefix_len:].decode(), reply[2])
                elif kind == b"subscribe" and name != probe:
                    handler.on_subscribed(name[prefix_len:].decode())

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self._probe_interval)
            with contextlib.suppress(*REDIS_ERRORS):
                await self._redis.publish(self._probe_channel, repr(time.time()))


async def _send(pubsub: PubSub, *command: str) -> None:
    """Send a pub/sub command on `pubsub`'s connection; its reply comes to the reader.

    Sent on the connection itself: `PubSub.subscribe` would also keep its own record of
    the channels, which only its `get_message` (not used here) ever trims.
    """
    connection = pubsub.connection
    if connection is None:
        raise redis_async.ConnectionError("the pub/sub connection is not open")
    await connection.send_command(*command, check_health=False)
