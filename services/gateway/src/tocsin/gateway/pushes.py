"""`PushReader`: pub/sub replies read straight off a redis-py connection with hiredis.

The broker reads every event published to the gateway's channels, so the cost
per message of reading them is paid by the whole fan-out. redis-py's
`PubSub.get_message` spends most of it around the parse: an `async with`
timeout (a loop timer) per message, the connection's read lock and health
checks, then a dict built per message and its bookkeeping of pending
unsubscribes. The bytes themselves are parsed by hiredis either way.

Here redis-py still opens the connection (address, TLS, AUTH, SELECT: all its
settings) and sends SUBSCRIBE and UNSUBSCRIBE; this reader then takes what the
connection's stream holds in one read, feeds it to its own `hiredis.Reader`,
and hands back every complete reply of that read as a list `[kind, channel,
data]`, once per read rather than once per message. The only redis-py internal
reached is the connection's stream (`stream_of`); `test_pushes.py` checks the
replies against `PubSub.get_message` on the same traffic.
"""

from __future__ import annotations

import asyncio
from typing import Any

import hiredis
import redis.asyncio as redis_async
from redis.asyncio.client import PubSub

__all__ = ["PushReader", "stream_of"]

# What one read takes off the socket at most: a burst of events arrives in one read.
_READ_SIZE = 1 << 16


def stream_of(pubsub: PubSub) -> asyncio.StreamReader:
    """The connected stream under `pubsub` (redis-py keeps it as `Connection._reader`)."""
    connection = pubsub.connection
    stream = getattr(connection, "_reader", None) if connection is not None else None
    if not isinstance(stream, asyncio.StreamReader):
        raise redis_async.ConnectionError("the pub/sub connection is not open")
    return stream


class PushReader:
    """Pub/sub replies (`[kind, channel, data]`, all bytes) from one connection's stream."""

    __slots__ = ("_parser", "_stream")

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self._stream = stream
        self._parser = hiredis.Reader()

    async def read(self) -> list[list[Any]]:
        """The replies complete after one read of the stream (waiting for one if none is).

        A closed connection or an error reply raises `redis.ConnectionError`: the
        broker starts over on a fresh connection. Cancelling the wait loses nothing.
        """
        replies = self._complete()
        while not replies:
            data = await self._stream.read(_READ_SIZE)
            if not data:
                raise redis_async.ConnectionError("the pub/sub connection was closed")
            self._parser.feed(data)
            replies = self._complete()
        return replies

    def _complete(self) -> list[list[Any]]:
        replies: list[list[Any]] = []
        gets = self._parser.gets
        try:
            reply = gets()
            while reply is not False:
                if isinstance(reply, hiredis.ReplyError):
                    # A refused SUBSCRIBE (an ACL, say): nothing here can be trusted.
                    raise redis_async.ConnectionError(f"pub/sub error reply: {reply}")
                replies.append(reply)
                reply = gets()
        except hiredis.ProtocolError as exc:
            raise redis_async.ConnectionError(f"pub/sub protocol error: {exc}") from exc
        return replies
