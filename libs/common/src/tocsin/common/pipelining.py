"""One pipelined Redis connection for a service's hot path (one script per request).

Ingest's admission and the gateway's cache lookups are one EVALSHA per request.
A pooled client would take a connection per concurrent request and pay its
bookkeeping on every call; here all requests share one connection: commands
issued during one event-loop turn go out in one write, and replies come back in
order, parsed by hiredis. Redis answers pipelined commands in the order sent, so
a FIFO of futures per connection is all the matching needed. A broken or
stalled connection, or one that cannot be opened, fails its calls in flight
with `StoreUnavailableError` and the next call opens a new one; a call whose
command had already been written fails with `OutcomeUnknownError`: Redis may
have run it. Both are `StoreError`s and `ConnectionError`s; an error reply is a
`RedisReplyError`: no other error leaves this module's connection.
`PipelinedScript` runs one Lua script this way, and can hand a call to a pooled
client (which retries) when the connection fails.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from collections.abc import Awaitable, Sequence
from typing import Any
from urllib.parse import unquote, urlparse

import hiredis
import redis.asyncio as redis_async
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisError

from tocsin.common.errors import OutcomeUnknownError, RedisReplyError, StoreUnavailableError
from tocsin.common.redis import SENTINEL_SCHEME, parse_sentinel_url, store_error

__all__ = [
    "OutcomeUnknownError",
    "PipelinedRedis",
    "PipelinedScript",
    "RedisReplyError",
    "StoreUnavailableError",
    "bulk",
    "encode_command",
]

Arg = bytes | str | int | float


def bulk(data: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%b\r\n" % (len(data), data)


def encode_command(*args: Arg) -> bytes:
    """A command in RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, float):
            data = repr(arg).encode()
        else:
            data = str(arg).encode()
        parts.append(b"$%d\r\n" % len(data))
        parts.append(data)
        parts.append(b"\r\n")
    return b"".join(parts)


class _Connection(asyncio.Protocol):
    """One TCP connection: its outgoing buffer, its calls in flight, its stall detector."""

    def __init__(self, reply_timeout: float, coalesce: bool = True) -> None:
        self.transport: asyncio.Transport | None = None
        self._coalesce = coalesce
        self.pending: deque[asyncio.Future[Any]] = deque()
        self.closed = False
        # Kept rather than asked for per command: on Python 3.11 every
        # `get_running_loop()` is a getpid(2) call.
        self._loop = asyncio.get_running_loop()
        self._reader = hiredis.Reader()
        self._outgoing: list[bytes] = []
        self._flush_scheduled = False
        # Calls at the tail of `pending` whose commands are still in `_outgoing`.
        self._unwritten = 0
        # A stall detector rather than a timer per command: when commands are in
        # flight and no reply at all came for `reply_timeout`, the connection is dead.
        self._reply_timeout = reply_timeout
        self._replies = 0
        self._watchdog: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, command: bytes) -> asyncio.Future[Any]:
        loop = self._loop
        future: asyncio.Future[Any] = loop.create_future()
        if self.closed:
            future.set_exception(StoreUnavailableError("connection to Redis closed"))
            return future
        self.pending.append(future)
        if not self._coalesce and self.transport is not None:
            self.transport.write(command)
            if self._watchdog is None:
                self._arm_watchdog()
            return future
        self._outgoing.append(command)
        self._unwritten += 1
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._flush_scheduled = False
        data, self._outgoing = b"".join(self._outgoing), []
        if self.closed or self.transport is None or not data:
            return
        self._unwritten = 0
        self.transport.write(data)
        if self._watchdog is None:
            self._arm_watchdog()

    def _arm_watchdog(self) -> None:
        self._watchdog = self._loop.call_later(self._reply_timeout, self._watch, self._replies)

    def _watch(self, replies_when_armed: int) -> None:
        self._watchdog = None
        if not self.pending or self.closed:
            return
        if self._replies == replies_when_armed:
            self.close(TimeoutError(f"no reply from Redis in {self._reply_timeout} s"))
            return
        self._arm_watchdog()

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            reply = self._reader.gets()
            if reply is False:
                return
            self._replies += 1
            if not self.pending:
                continue
            future = self.pending.popleft()
            if future.done():  # its caller gave up waiting
                continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(RedisReplyError(str(reply)))
                if str(reply).startswith("READONLY"):
                    # A failover made this server a replica: a new connection finds
                    # (with Sentinel) whichever server is the primary now.
                    self.close(StoreUnavailableError("Redis server became read-only"))
                    return
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.close(exc)

    def close(self, exc: Exception | None = None) -> None:
        """Fail the calls in flight and close; idempotent."""
        if self.closed:
            return
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self.transport is not None:
            # A stalled peer may never read what is buffered: abort rather than wait.
            if isinstance(exc, TimeoutError):
                self.transport.abort()
            else:
                self.transport.close()
        reason = f"connection to Redis lost: {exc or 'closed'}"
        pending, self.pending = self.pending, deque()
        written = len(pending) - self._unwritten
        for at, future in enumerate(pending):
            if not future.done():
                future.set_exception(
                    OutcomeUnknownError(f"{reason} after the command was sent")
                    if at < written
                    else StoreUnavailableError(reason)
                )


class PipelinedRedis:
    """A single auto-pipelining connection to the Redis at `url`.

    `url` is `redis://`, `rediss://` (TLS) or `redis+sentinel://` (see
    `tocsin.common.redis`); with Sentinel, every new connection asks the
    Sentinels which server is the primary.
    """

    def __init__(
        self,
        url: str,
        connect_timeout: float = 5.0,
        reply_timeout: float = 5.0,
        *,
        coalesce: bool = True,
    ) -> None:
        self._sentinel: Sentinel | None = None
        self._master = ""
        self._host = "127.0.0.1"
        self._port = 6379
        self._tls = False
        self._username = ""
        self._password = ""
        self._db = 0
        if url.startswith(SENTINEL_SCHEME):
            target = parse_sentinel_url(url)
            self._sentinel = Sentinel(  # type: ignore[no-untyped-call]
                list(target.sentinels),
                sentinel_kwargs={"password": target.password, "socket_timeout": 2},
            )
            self._master = target.master
            self._password = target.password or ""
            self._db = target.db
        else:
            parsed = urlparse(url)
            self._host = parsed.hostname or self._host
            self._port = parsed.port or self._port
            self._tls = parsed.scheme == "rediss"
            self._username = unquote(parsed.username) if parsed.username else ""
            self._password = unquote(parsed.password) if parsed.password else ""
            path = parsed.path.strip("/")
            self._db = int(path) if path.isdigit() else 0
        self._connect_timeout = connect_timeout
        self._reply_timeout = reply_timeout
        self._coalesce = coalesce
        self._connection: _Connection | None = None
        self._connecting: asyncio.Lock | None = None

    async def _connect(self) -> _Connection:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            current = self._connection
            if current is not None and not current.closed:
                return current
            host, port = self._host, self._port
            if self._sentinel is not None:
                host, port = await self._sentinel.discover_master(self._master)
            context = ssl.create_default_context() if self._tls else None
            loop = asyncio.get_running_loop()
            _, connection = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(self._reply_timeout, self._coalesce),
                    host,
                    port,
                    ssl=context,
                ),
                self._connect_timeout,
            )
            setup: list[tuple[Arg, ...]] = []
            if self._password:
                setup.append(("AUTH", self._username, self._password) if self._username
                             else ("AUTH", self._password))  # fmt: skip
            if self._db:
                setup.append(("SELECT", self._db))
            try:
                for command in setup:
                    await connection.send(encode_command(*command))
            except BaseException:
                connection.close()
                raise
            self._connection = connection
            return connection

    async def execute(self, *args: Arg) -> Any:
        """Send one command (pipelined with others of this loop turn) and await its reply."""
        return await self.execute_encoded(encode_command(*args))

    def execute_encoded(self, command: bytes) -> Awaitable[Any]:
        """As `execute`, for a command already in RESP (see `encode_command`, `bulk`).

        Connected, this hands back the reply's future itself: it runs once per
        request on hot paths, where a coroutine around it costs a frame more at
        every suspend and resume.
        """
        connection = self._connection
        if connection is None or connection.closed:
            return self._connect_and_send(command)
        return connection.send(command)

    async def _connect_and_send(self, command: bytes) -> Any:
        try:
            connection = await self._connect()
        except (RedisError, OSError) as exc:  # refused, timed out, no primary from Sentinel
            raise store_error(exc) from exc
        return await connection.send(command)

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class PipelinedScript:
    """A Lua script run by EVALSHA on a `PipelinedRedis` (EVAL, which caches it, on NOSCRIPT).

    With `fallback`, a call whose connection fails (`OSError`) is made again
    through that pooled client, whose own retries ride out a reconnect; its
    errors reach the caller as `StoreError`s too.
    """

    def __init__(
        self, redis: PipelinedRedis, source: str, fallback: redis_async.Redis | None = None
    ) -> None:
        self._redis = redis
        self._source = source
        self._sha = hashlib.sha1(source.encode()).hexdigest()
        self._fallback = None if fallback is None else fallback.register_script(source)

    async def __call__(self, keys: Sequence[str] = (), args: Sequence[Arg] = ()) -> Any:
        """The script's reply, as hiredis gives it (bytes, int, list or None)."""
        try:
            try:
                return await self._redis.execute_encoded(
                    encode_command("EVALSHA", self._sha, len(keys), *keys, *args)
                )
            except RedisReplyError as exc:
                if not str(exc).startswith("NOSCRIPT"):
                    raise
                return await self._redis.execute_encoded(
                    encode_command("EVAL", self._source, len(keys), *keys, *args)
                )
        except OSError:
            if self._fallback is None:
                raise
            try:
                return await self._fallback(keys=keys, args=args)
            except (RedisError, OSError) as exc:  # redis-py's, as the store's, like ours
                raise store_error(exc) from exc
