"""Who is subscribed to what, and the one Redis pub/sub connection feeding them.

Subscriptions are reference-counted across the process's sockets: the first
socket on a channel subscribes in Redis, the last one out unsubscribes (never
PSUBSCRIBE). The reader turns each published message into one `Frame` and hands
it to every member without awaiting anything, so a slow socket never delays the
reader or its neighbours.

The connection is supervised: when it breaks, the hub reconnects with back-off,
resubscribes every channel, and asks every member to catch up from the streams,
because anything published while it was away is a possible gap. A probe
published on the hub's own channel every `probe_interval` proves that messages
still flow end to end; `healthy` turns false when probes stop coming back.

The hub also knows where each confirmed channel stands (`head`): the last
event it handed out, or else a head read issued after the channel was
confirmed. A socket joining then starts right after that head with no read of
its own: everything later reaches it live, nothing earlier is owed to it. A
mass reconnect therefore costs one head read per channel, not per socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Protocol

import redis.asyncio as redis_async
from redis.asyncio.client import PubSub

from tocsin.common import keys
from tocsin.gateway.frames import Frame, event_frame
from tocsin.gateway.history import ChannelHead, ChannelLog
from tocsin.gateway.metrics import Stats
from tocsin.gateway.tracing import event_delivery

__all__ = ["Hub", "Member", "SubscribeTimeoutError"]

log = logging.getLogger(__name__)

_REDIS_ERRORS = (redis_async.ConnectionError, redis_async.TimeoutError, OSError)


class SubscribeTimeoutError(Exception):
    """Redis did not confirm a SUBSCRIBE in time (it is unreachable or reconnecting)."""


class Member(Protocol):
    """A socket's receiving end, as the hub sees it."""

    def deliver(self, frame: Frame) -> None:
        """Take `frame` for sending; must not block or await."""

    def resume(self, channel: str) -> None:
        """Catch up on `channel` from the stream: pub/sub may have dropped events."""


class Hub:
    """Channel membership plus the process's single supervised pub/sub reader."""

    def __init__(
        self,
        redis: redis_async.Redis,
        pubsub_redis: redis_async.Redis,
        log: ChannelLog,
        stats: Stats,
        *,
        probe_interval: float = 1.0,
        probe_timeout: float = 5.0,
        subscribe_timeout: float = 5.0,
    ) -> None:
        self._redis = redis
        # Its own client, without transparent retries: a reconnect must be seen
        # here, because whatever was published meanwhile has to be caught up.
        self._pubsub_redis = pubsub_redis
        self._log = log
        self._stats = stats
        self._members: dict[str, set[Member]] = {}
        self._confirmed: dict[str, asyncio.Event] = {}
        # The head of each confirmed channel, as far as this hub has seen it.
        self._heads: dict[str, ChannelHead] = {}
        self._pubsub: PubSub | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._probe_channel = keys.probe(uuid.uuid4().hex)
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self._subscribe_timeout = subscribe_timeout
        self._last_probe = time.monotonic()
        self._live_prefix = keys.live("")
        self.connected = False

    @property
    def healthy(self) -> bool:
        """Pub/sub is connected and the last probe came back recently."""
        return self.connected and time.monotonic() - self._last_probe < self._probe_timeout

    async def start(self) -> None:
        self._last_probe = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._read_forever(), name="hub-reader"),
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

    async def join(self, channel: str, member: Member) -> None:
        """Add `member` to `channel`; returns once Redis delivers the channel's messages.

        Raises `SubscribeTimeoutError` if that cannot be confirmed in time; the
        member stays joined and is resumed when the connection returns.
        """
        members = self._members.get(channel)
        if members is None:
            members = self._members[channel] = set()
            self._confirmed[channel] = asyncio.Event()
            await self._subscribe(channel)
        members.add(member)
        confirmed = self._confirmed[channel]
        if confirmed.is_set():
            return
        try:
            await asyncio.wait_for(confirmed.wait(), self._subscribe_timeout)
        except TimeoutError:
            raise SubscribeTimeoutError(channel) from None

    async def head(self, channel: str) -> ChannelHead:
        """Where `channel` stands for a member that has joined it: every later event
        reaches the member live. Read from Redis only when the hub does not know."""
        known = self._heads.get(channel)
        if known is not None:
            return known
        confirmed = self._confirmed.get(channel)
        issued_confirmed = confirmed is not None and confirmed.is_set()
        head = await self._log.head(channel)
        # Remembered only if the read was issued after the subscription was
        # confirmed and it still is (a reconnect replaces the confirmation),
        # and no live event has told more since.
        if (
            issued_confirmed
            and self._confirmed.get(channel) is confirmed
            and (channel not in self._heads)
        ):
            self._heads[channel] = head
        return head

    async def leave(self, channel: str, member: Member) -> None:
        members = self._members.get(channel)
        if members is None or member not in members:
            return
        members.discard(member)
        if not members:
            del self._members[channel]
            del self._confirmed[channel]
            self._heads.pop(channel, None)
            if self._pubsub is not None and self.connected:
                with contextlib.suppress(*_REDIS_ERRORS):
                    await self._pubsub.unsubscribe(keys.live(channel))

    async def _subscribe(self, channel: str) -> None:
        if self._pubsub is not None and self.connected:
            # A failure here is the reader's to notice; it resubscribes everything.
            with contextlib.suppress(*_REDIS_ERRORS):
                await self._pubsub.subscribe(keys.live(channel))

    async def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _read_forever(self) -> None:
        delay = 0.05
        first = True
        while True:
            try:
                pubsub = self._pubsub_redis.pubsub()
                self._pubsub = pubsub
                await pubsub.subscribe(
                    self._probe_channel, *(keys.live(channel) for channel in self._members)
                )
                self.connected = True
                self._last_probe = time.monotonic()
                delay = 0.05
                if not first:
                    self._stats.pubsub_reconnects += 1
                    log.warning("pub/sub reconnected; catching up %d channels", len(self._members))
                first = False
                await self._read(pubsub)
            except asyncio.CancelledError:
                raise
            except _REDIS_ERRORS as exc:
                if self.connected:
                    log.warning("pub/sub connection lost: %s", exc)
            self.connected = False
            self._heads.clear()
            for channel, event in self._confirmed.items():
                if event.is_set():
                    # A fresh event: a head read issued under the old one is not remembered.
                    self._confirmed[channel] = asyncio.Event()
            await self._close_pubsub()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _read(self, pubsub: PubSub) -> None:
        prefix_len = len(self._live_prefix)
        probe = self._probe_channel.encode()
        stats = self._stats
        while True:
            message = await pubsub.get_message(timeout=self._probe_interval)
            if time.monotonic() - self._last_probe > self._probe_timeout:
                # Connected but silent: the failure mode that otherwise stays
                # green forever. Start over on a fresh connection.
                raise redis_async.ConnectionError("pub/sub probes stopped arriving")
            if message is None:
                continue
            kind = message["type"]
            name: bytes = message["channel"]
            if kind == "message":
                if name == probe:
                    self._last_probe = time.monotonic()
                    stats.pubsub_lag = max(0.0, time.time() - float(message["data"]))
                    continue
                channel = name[prefix_len:].decode()
                try:
                    frame = event_frame(channel, message["data"])
                except ValueError:
                    log.warning("dropped a malformed frame on %s", channel)
                    continue
                stats.events_received += 1
                self._heads[channel] = ChannelHead(frame.epoch, frame.offset)
                # One CONSUMER span (plus its fan-out child) per event when tracing is on.
                with event_delivery(channel, message["data"]) as delivery:
                    delivery.fan_out(
                        self._members.get(channel, ()),
                        lambda member, frame=frame: member.deliver(frame),  # type: ignore[misc]
                    )
            elif kind == "subscribe" and name != probe:
                channel = name[prefix_len:].decode()
                confirmed = self._confirmed.get(channel)
                if confirmed is not None and not confirmed.is_set():
                    confirmed.set()
                    # Whoever was subscribed before this (re)subscription may
                    # have missed events while the channel was not confirmed.
                    for member in list(self._members.get(channel, ())):
                        member.resume(channel)

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self._probe_interval)
            with contextlib.suppress(*_REDIS_ERRORS):
                await self._redis.publish(self._probe_channel, repr(time.time()))
