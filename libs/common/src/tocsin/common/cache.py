"""A read-through Redis cache with tag invalidation and metrics.

Each tag has a generation counter (`tocsin:cache:tag:{tag}`); an entry's key
is the digest of its query *and* the current generations of its tags, so a
write invalidates by incrementing a counter: O(1), no key scan, and the stale
entries simply expire. The writer increments the generation in the same atomic
step as its data write (the processor's Lua script does), so:

    a read that begins after a write reads the new generation, misses every
    entry stored under the old one, and loads data that includes the write.

A lookup is one round trip (a script, `cache/lookup.lua`, reads the
generations and the entry); concurrent misses of one key in one process share
a single load. Each process also keeps a decoded copy of the entries it read
or stored lately, with the generations they were stored under; the lookup
sends those generations, and when they are still current and the entry still
exists, the reply carries no entry bytes and the copy is served. Every lookup
still asks Redis, so the guarantee above is the same for the copies.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from importlib import resources
from typing import Any, Generic, TypeVar, overload

import redis.asyncio as redis_async
from prometheus_client import Counter, Histogram
from redis.commands.core import AsyncScript

from tocsin.common import keys
from tocsin.common.metrics import health_signals
from tocsin.common.pipelining import PipelinedRedis, PipelinedScript

__all__ = [
    "CACHE_HITS",
    "CACHE_INVALIDATIONS",
    "CACHE_MISSES",
    "CACHE_OPERATION_SECONDS",
    "ReadThroughCache",
    "normalised_query",
]

CACHE_HITS = Counter("tocsin_cache_hits_total", "Cache lookups served from the cache.", ["cache"])
CACHE_MISSES = Counter("tocsin_cache_misses_total", "Cache lookups that loaded.", ["cache"])
CACHE_INVALIDATIONS = Counter(
    "tocsin_cache_invalidations_total", "Tag generations incremented.", ["tag"]
)
CACHE_OPERATION_SECONDS = Histogram(
    "tocsin_cache_operation_seconds",
    "Time of one cache operation against Redis (lookup or store), without the load.",
    ["operation"],
    # Fine around the 1 ms target, so its p99 is read from a bucket, not guessed across one.
    buckets=(0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.0025, 0.005, 0.01, 0.05),
)

_LOOKUP_LUA = resources.files("tocsin.common").joinpath("cache/lookup.lua").read_text()
# What `lookup.lua` returns in place of the entry when the caller's copy is current.
_COPY_IS_CURRENT = 1

T = TypeVar("T")


def _as_bytes(raw: bytes) -> bytes:
    return raw


def normalised_query(params: Mapping[str, str | Sequence[str]]) -> str:
    """A canonical text of query parameters: sorted names, sorted repeated values."""
    parts: list[str] = []
    for name in sorted(params):
        value = params[name]
        values = sorted([value] if isinstance(value, str) else value)
        parts.extend(f"{name}={item}" for item in values)
    return "&".join(parts)


class ReadThroughCache(Generic[T]):
    """Caches loader results under a query, invalidated by tag generations.

    `decode` turns stored bytes into what `get` returns (the bytes themselves
    by default); it runs once per entry and process, not once per hit, since
    the process's copy holds the decoded value. `local_entries` bounds those
    copies (least recently used dropped first). With `lookups`, lookups go over
    that pipelined connection (the pooled `redis` takes over a call whose
    connection fails), and so do stores; that costs the event loop far less than
    a pooled call.
    """

    @overload
    def __init__(
        self: ReadThroughCache[bytes],
        redis: redis_async.Redis,
        name: str,
        ttl_seconds: float = 60.0,
        *,
        local_entries: int = 256,
        lookups: PipelinedRedis | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        redis: redis_async.Redis,
        name: str,
        ttl_seconds: float = 60.0,
        *,
        decode: Callable[[bytes], T],
        local_entries: int = 256,
        lookups: PipelinedRedis | None = None,
    ) -> None: ...

    def __init__(
        self,
        redis: redis_async.Redis,
        name: str,
        ttl_seconds: float = 60.0,
        *,
        decode: Callable[[bytes], Any] = _as_bytes,
        local_entries: int = 256,
        lookups: PipelinedRedis | None = None,
    ) -> None:
        self._redis = redis
        self._name = name
        self._ttl_ms = max(1, int(ttl_seconds * 1000))
        self._decode: Callable[[bytes], T] = decode
        self._lookup: PipelinedScript | AsyncScript = (
            redis.register_script(_LOOKUP_LUA)
            if lookups is None
            else PipelinedScript(lookups, _LOOKUP_LUA, fallback=redis)
        )
        self._pipelined = lookups
        self._entry_prefix = keys.cache_entry("")
        self._loading: dict[str, asyncio.Future[T]] = {}
        # digest source -> (generations it was stored under, decoded value)
        self._copies: OrderedDict[str, tuple[str, T]] = OrderedDict()
        self._max_copies = local_entries

    async def get(
        self, query: str, tags: Sequence[str], load: Callable[[], Awaitable[bytes]]
    ) -> tuple[T, bool]:
        """The cached value of `query`, or `load()`'s, stored; and whether it was a hit."""
        digest_source = f"{self._name}|{query}"
        copy = self._copies.get(digest_source)
        started = time.perf_counter()
        joined_raw, entry = await self._lookup(
            keys=[keys.cache_tag(tag) for tag in tags],
            args=[self._entry_prefix, digest_source, "" if copy is None else "=" + copy[0]],
        )
        CACHE_OPERATION_SECONDS.labels("lookup").observe(time.perf_counter() - started)
        joined = joined_raw.decode() if isinstance(joined_raw, bytes) else str(joined_raw)
        if entry is not None:
            CACHE_HITS.labels(self._name).inc()
            health_signals.add("cache_hits")
            if entry == _COPY_IS_CURRENT and copy is not None:
                self._copies.move_to_end(digest_source)
                return copy[1], True
            value = self._decode(bytes(entry))
            self._keep(digest_source, joined, value)
            return value, True
        key = self._entry_prefix + hashlib.sha1(f"{digest_source}|{joined}".encode()).hexdigest()
        # A load already running for the same query and generations serves
        # this request too: it began no earlier than any write it must see.
        pending = self._loading.get(key)
        if pending is not None:
            CACHE_HITS.labels(self._name).inc()
            health_signals.add("cache_hits")
            return await asyncio.shield(pending), True
        CACHE_MISSES.labels(self._name).inc()
        health_signals.add("cache_misses")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            raw = await load()
            started = time.perf_counter()
            await self._store(key, raw)
            CACHE_OPERATION_SECONDS.labels("store").observe(time.perf_counter() - started)
            value = self._decode(raw)
            self._keep(digest_source, joined, value)
            future.set_result(value)
            return value, False
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here, so an unshared failure is not logged twice
            raise
        finally:
            del self._loading[key]

    async def _store(self, key: str, raw: bytes) -> None:
        if self._pipelined is not None:
            try:
                await self._pipelined.execute("SET", key, raw, "PX", self._ttl_ms)
                return
            except OSError:
                pass  # the pooled client's retries ride out the reconnect
        await self._redis.set(key, raw, px=self._ttl_ms)

    def _keep(self, digest_source: str, joined: str, value: T) -> None:
        """Remember `value` as stored under generations `joined`, dropping the oldest copy."""
        copies = self._copies
        copies[digest_source] = (joined, value)
        copies.move_to_end(digest_source)
        while len(copies) > self._max_copies:
            copies.popitem(last=False)

    async def invalidate(self, *tags: str) -> None:
        """Invalidate every entry under `tags` (for writers outside a Lua script)."""
        pipe = self._redis.pipeline(transaction=False)
        for tag in tags:
            pipe.incr(keys.cache_tag(tag))
            CACHE_INVALIDATIONS.labels(tag).inc()
        await pipe.execute()
