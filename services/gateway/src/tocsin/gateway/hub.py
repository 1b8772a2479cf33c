"""Who is subscribed to what, fed by the process's one `RedisBroker`.

Subscriptions are reference-counted across the process's sockets: the first
socket on a channel subscribes in Redis, the last one out unsubscribes. The hub
turns each published message the broker reports into one `Frame` and hands it
to every member without awaiting anything, so a slow socket never delays the
reader or its neighbours. When the broker reconnects and confirms a channel
again, every member of it catches up from the stream, because anything
published while it was away is a possible gap.

The hub also knows where each confirmed channel stands (`head`): the last
event it handed out, or else a head read issued after the channel was
confirmed. A socket joining then starts right after that head with no read of
its own: everything later reaches it live, nothing earlier is owed to it. A
mass reconnect therefore costs one head read per channel, not per socket.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Protocol

from tocsin.common.errors import StoreUnavailableError
from tocsin.gateway.broker import RedisBroker
from tocsin.gateway.frames import Frame, event_frame
from tocsin.gateway.history import ChannelHead
from tocsin.gateway.metrics import Stats
from tocsin.gateway.tracing import event_delivery

__all__ = ["Hub", "Member", "SubscribeTimeoutError"]

log = logging.getLogger(__name__)


class SubscribeTimeoutError(StoreUnavailableError):
    """Redis did not confirm a SUBSCRIBE in time (it is unreachable or reconnecting)."""


class Member(Protocol):
    """A socket's receiving end, as the hub sees it."""

    def deliver(self, frame: Frame) -> None:
        """Take `frame` for sending; must not block or await."""

    def resume(self, channel: str) -> None:
        """Catch up on `channel` from the stream: pub/sub may have dropped events."""


class Hub:
    """Channel membership and head cache; the broker's `BrokerHandler`."""

    def __init__(
        self, broker: RedisBroker, stats: Stats, *, subscribe_timeout: float = 5.0
    ) -> None:
        # Handed in, not built here: the broker's Redis settings are its own.
        self.broker = broker
        self._stats = stats
        self._members: dict[str, set[Member]] = {}
        self._confirmed: dict[str, asyncio.Event] = {}
        # The head of each confirmed channel, as far as this hub has seen it.
        self._heads: dict[str, ChannelHead] = {}
        self._subscribe_timeout = subscribe_timeout

    @property
    def connected(self) -> bool:
        return self.broker.connected

    @property
    def healthy(self) -> bool:
        """Pub/sub is connected and the last probe came back recently."""
        return self.broker.healthy

    async def start(self) -> None:
        await self.broker.start(self)

    async def stop(self) -> None:
        await self.broker.stop()

    async def join(self, channel: str, member: Member) -> None:
        """Add `member` to `channel`; returns once Redis delivers the channel's messages.

        Raises `SubscribeTimeoutError` if that cannot be confirmed in time; the
        member stays joined and is resumed when the connection returns.
        """
        members = self._members.get(channel)
        if members is None:
            members = self._members[channel] = set()
            self._confirmed[channel] = asyncio.Event()
            await self.broker.subscribe(channel)
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
        head = await self.broker.read_head(channel)
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
            await self.broker.unsubscribe(channel)

    # -- what the broker reports (`BrokerHandler`) ----------------------------------

    def channels(self) -> Iterable[str]:
        return list(self._members)

    def on_message(self, channel: str, data: bytes) -> None:
        try:
            frame = event_frame(channel, data)
        except ValueError:
            log.warning("dropped a malformed frame on %s", channel)
            return
        self._stats.events_received += 1
        self._heads[channel] = ChannelHead(frame.epoch, frame.offset)
        # One CONSUMER span (plus its fan-out child) per event when tracing is on.
        with event_delivery(channel, data) as delivery:
            delivery.fan_out(
                self._members.get(channel, ()),
                lambda member, frame=frame: member.deliver(frame),  # type: ignore[misc]
            )

    def on_subscribed(self, channel: str) -> None:
        confirmed = self._confirmed.get(channel)
        if confirmed is not None and not confirmed.is_set():
            confirmed.set()
            # Whoever was subscribed before this (re)subscription may
            # have missed events while the channel was not confirmed.
            for member in list(self._members.get(channel, ())):
                member.resume(channel)

    def on_lost(self) -> None:
        self._heads.clear()
        for channel, event in self._confirmed.items():
            if event.is_set():
                # A fresh event: a head read issued under the old one is not remembered.
                self._confirmed[channel] = asyncio.Event()
