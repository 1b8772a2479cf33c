"""Reading a channel's delivery log: its head (epoch, last offset) and missed events.

The publish script keeps `tocsin:chan:{channel}` (offset, epoch) and the capped
stream `tocsin:stream:{channel}` whose entry ids are `{offset}-1`, with the final
frame in field `f`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis_async

from tocsin.common import keys
from tocsin.gateway.frames import Frame, event_frame

__all__ = ["ChannelHead", "ChannelLog"]


@dataclass(frozen=True)
class ChannelHead:
    """Where a channel stands: its epoch ("" if never published) and last offset."""

    epoch: str
    offset: int


class ChannelLog:
    """Reads channel heads and stream history from Redis."""

    def __init__(self, redis: redis_async.Redis) -> None:
        self._redis = redis

    async def head(self, channel: str) -> ChannelHead:
        meta: dict[Any, Any] = await self._redis.hgetall(keys.channel_meta(channel))
        return ChannelHead(meta.get(b"epoch", b"").decode(), int(meta.get(b"offset", 0)))

    async def read(self, channel: str, after: int, count: int) -> list[Frame]:
        """Up to `count` frames with offsets above `after`, oldest first."""
        entries: Any = await self._redis.xrange(
            keys.channel_stream(channel), min=f"{after + 1}-0", max="+", count=count
        )
        frames = []
        for _entry_id, fields in entries:
            frame = event_frame(channel, fields[b"f"])
            frame.unobserved = False  # history is not live latency
            frames.append(frame)
        return frames
