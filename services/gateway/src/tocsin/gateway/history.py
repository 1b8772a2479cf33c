"""Reading a channel's delivery log: its head (epoch, last offset) and missed events.

The publish script keeps `tocsin:chan:{channel}` (offset, epoch) and the capped
stream `tocsin:stream:{channel}` whose entry ids are `{offset}-1`, with the final
frame in field `f`.

Heads are read on every subscribe, and a mass reconnect asks for the same few
channels thousands of times a second. Callers that ask for a channel's head
before the read for it is issued share that read: each of them asked after
joining the channel's live flow, and the shared read is issued after all of
them asked, so its answer is as fresh as each caller needs (no event can fall
between the head it gets and the live frames it buffers). A read already sent
is never shared with a later caller.

History reads are shared the other way: a resume needs the entries after its offset
up to its head, and an answer already read (or being read) for the same offset that
reaches that head serves it as well as a read of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis_async

from tocsin.common import keys
from tocsin.gateway.frames import Frame, event_frame

__all__ = ["ChannelHead", "ChannelLog"]

# Recovery reads kept for sharing: enough for every channel of a storm, few enough that
# the frames they hold stay small.
_SHARED_READS_KEPT = 256


@dataclass(frozen=True)
class ChannelHead:
    """Where a channel stands: its epoch ("" if never published) and last offset."""

    epoch: str
    offset: int


class ChannelLog:
    """Reads channel heads and stream history from Redis."""

    def __init__(self, redis: redis_async.Redis) -> None:
        self._redis = redis
        # Head reads asked for but not yet issued, by channel.
        self._unsent: dict[str, asyncio.Future[ChannelHead]] = {}
        self._reads: set[asyncio.Task[None]] = set()
        # Recent recovery reads by (channel, after, count), oldest first.
        self._recent: OrderedDict[tuple[str, int, int], asyncio.Future[list[Frame]]] = OrderedDict()

    async def head(self, channel: str) -> ChannelHead:
        """The channel's head as of a read issued after this call."""
        answer = self._unsent.get(channel)
        if answer is None:
            answer = asyncio.get_running_loop().create_future()
            self._unsent[channel] = answer
            # Issued on the next loop turn, so that whoever asks in this turn joins it.
            read = asyncio.create_task(self._read_head(channel, answer))
            self._reads.add(read)
            read.add_done_callback(self._reads.discard)
        # A cancelled caller must not cancel the read the others wait for.
        return await asyncio.shield(answer)

    async def _read_head(self, channel: str, answer: asyncio.Future[ChannelHead]) -> None:
        # From here on the read counts as sent: later callers start their own.
        if self._unsent.get(channel) is answer:
            del self._unsent[channel]
        try:
            meta: dict[Any, Any] = await self._redis.hgetall(keys.channel_meta(channel))
        except asyncio.CancelledError:
            answer.cancel()
            raise
        except Exception as exc:
            answer.set_exception(exc)
            answer.exception()  # retrieved here, so a failure nobody awaits logs nothing
            return
        if not answer.done():
            answer.set_result(
                ChannelHead(meta.get(b"epoch", b"").decode(), int(meta.get(b"offset", 0)))
            )

    async def read(
        self, channel: str, after: int, count: int, until: ChannelHead | None = None
    ) -> list[Frame]:
        """Up to `count` frames with offsets above `after`, oldest first.

        With `until`, the head the caller must reach, callers resuming a channel from
        the same offset share one read, in flight or recently answered, when its answer
        reaches that head in that epoch or is a full batch: entries never change within
        an epoch, so an earlier answer that covers what the caller needs is as good as
        its own. A reconnect storm then costs a read per channel and offset, not per socket.
        """
        if until is None:
            return await self._xrange(channel, after, count)
        key = (channel, after, count)
        shared = self._recent.get(key)
        if shared is not None:
            with contextlib.suppress(Exception):
                frames = await asyncio.shield(shared)
                if _covers(frames, until, count):
                    return frames
        answer: asyncio.Future[list[Frame]] = asyncio.get_running_loop().create_future()
        self._recent[key] = answer
        self._recent.move_to_end(key)
        while len(self._recent) > _SHARED_READS_KEPT:
            self._recent.popitem(last=False)
        try:
            frames = await self._xrange(channel, after, count)
        except BaseException as exc:
            if self._recent.get(key) is answer:
                del self._recent[key]
            # The sharers fall back to reads of their own (a cancelled reader must not
            # cancel them); retrieved here, so a failure nobody awaits logs nothing.
            answer.set_exception(exc if isinstance(exc, Exception) else ConnectionError(exc))
            answer.exception()
            raise
        answer.set_result(frames)
        return frames

    async def _xrange(self, channel: str, after: int, count: int) -> list[Frame]:
        entries: Any = await self._redis.xrange(
            keys.channel_stream(channel), min=f"{after + 1}-0", max="+", count=count
        )
        frames = []
        for _entry_id, fields in entries:
            frame = event_frame(channel, fields[b"f"])
            frame.unobserved = False  # history is not live latency
            frames.append(frame)
        return frames


def _covers(frames: list[Frame], until: ChannelHead, count: int) -> bool:
    """Whether `frames`, read from some offset, give a caller all it needs up to `until`."""
    if not frames or frames[0].epoch != until.epoch:
        return False
    return len(frames) == count or frames[-1].offset >= until.offset
