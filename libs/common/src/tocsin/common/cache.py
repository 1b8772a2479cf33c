"""A read-through Redis cache with tag invalidation and metrics.

Each tag has a generation counter (`tocsin:cache:tag:{tag}`); an entry's key
is the digest of its query *and* the current generations of its tags, so a
write invalidates by incrementing a counter: O(1), no key scan, and the stale
entries simply expire. The writer increments the generation in the same atomic
step as its data write (the processor's Lua script does), so:

    a read that begins after a write reads the new generation, misses every
    entry stored under the old one, and loads data that includes the write.

A lookup is one round trip (a script reads the generations and the entry);
concurrent misses of one key in one process share a single load.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

import redis.asyncio as redis_async
from prometheus_client import Counter, Histogram

from tocsin.common import keys
from tocsin.common.metrics import health_signals

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
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05),
)

# KEYS: the tag generation keys. ARGV[1]: entry key prefix, ARGV[2]: query digest.
# Returns {generations joined by ':', entry or false}.
_LOOKUP_LUA = """
local gens = {}
for i, key in ipairs(KEYS) do gens[i] = redis.call('GET', key) or '0' end
local joined = table.concat(gens, ':')
local entry = redis.call('GET', ARGV[1] .. redis.sha1hex(ARGV[2] .. '|' .. joined))
return {joined, entry}
"""


def normalised_query(params: Mapping[str, str | Sequence[str]]) -> str:
    """A canonical text of query parameters: sorted names, sorted repeated values."""
    parts: list[str] = []
    for name in sorted(params):
        value = params[name]
        values = sorted([value] if isinstance(value, str) else value)
        parts.extend(f"{name}={item}" for item in values)
    return "&".join(parts)


class ReadThroughCache:
    """Caches loader results under a query, invalidated by tag generations."""

    def __init__(self, redis: redis_async.Redis, name: str, ttl_seconds: float = 60.0) -> None:
        self._redis = redis
        self._name = name
        self._ttl_ms = max(1, int(ttl_seconds * 1000))
        self._lookup = redis.register_script(_LOOKUP_LUA)
        self._loading: dict[str, asyncio.Future[bytes]] = {}

    async def get(
        self, query: str, tags: Sequence[str], load: Callable[[], Awaitable[bytes]]
    ) -> tuple[bytes, bool]:
        """The cached value of `query`, or `load()`'s, stored; and whether it was a hit."""
        digest_source = f"{self._name}|{query}"
        started = time.perf_counter()
        joined_raw, entry = await self._lookup(
            keys=[keys.cache_tag(tag) for tag in tags],
            args=[keys.cache_entry(""), digest_source],
        )
        CACHE_OPERATION_SECONDS.labels("lookup").observe(time.perf_counter() - started)
        if entry is not None:
            CACHE_HITS.labels(self._name).inc()
            health_signals.add("cache_hits")
            return bytes(entry), True
        joined = joined_raw.decode() if isinstance(joined_raw, bytes) else str(joined_raw)
        key = keys.cache_entry(hashlib.sha1(f"{digest_source}|{joined}".encode()).hexdigest())
        # A load already running for the same query and generations serves
        # this request too: it began no earlier than any write it must see.
        pending = self._loading.get(key)
        if pending is not None:
            CACHE_HITS.labels(self._name).inc()
            health_signals.add("cache_hits")
            return await asyncio.shield(pending), True
        CACHE_MISSES.labels(self._name).inc()
        health_signals.add("cache_misses")
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            value = await load()
            started = time.perf_counter()
            await self._redis.set(key, value, px=self._ttl_ms)
            CACHE_OPERATION_SECONDS.labels("store").observe(time.perf_counter() - started)
            future.set_result(value)
            return value, False
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here, so an unshared failure is not logged twice
            raise
        finally:
            del self._loading[key]

    async def invalidate(self, *tags: str) -> None:
        """Invalidate every entry under `tags` (for writers outside a Lua script)."""
        pipe = self._redis.pipeline(transaction=False)
        for tag in tags:
            pipe.incr(keys.cache_tag(tag))
            CACHE_INVALIDATIONS.labels(tag).inc()
        await pipe.execute()
