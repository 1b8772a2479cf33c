"""The read-through cache against a real Redis-compatible server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from tocsin.client.devserver import RedisServer
from tocsin.common.cache import ReadThroughCache, normalised_query
from tocsin.common.pipelining import PipelinedRedis
from tocsin.common.redis import async_client


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as started:
        yield started


@pytest.fixture(params=["pooled", "pipelined"])
async def cache(
    server: RedisServer, request: pytest.FixtureRequest
) -> AsyncIterator[ReadThroughCache[bytes]]:
    """A cache doing its lookups and stores through the pooled client, or a pipelined one."""
    redis = async_client(server.url)
    await redis.flushall()
    pipelined = PipelinedRedis(server.url) if request.param == "pipelined" else None
    yield ReadThroughCache(redis, "test", ttl_seconds=30, lookups=pipelined)
    if pipelined is not None:
        await pipelined.close()
    await redis.aclose()


class NumberedLoads:
    """A loader whose n-th load returns `value n`."""

    def __init__(self) -> None:
        self.count = 0

    async def __call__(self) -> bytes:
        self.count += 1
        return f"value {self.count}".encode()


def test_normalised_query_ignores_parameter_and_value_order() -> None:
    assert normalised_query({"b": "2", "a": ["y", "x"]}) == normalised_query(
        {"a": ["x", "y"], "b": ["2"]}
    )


async def test_second_read_hits_and_an_invalidated_tag_forces_a_load(
    cache: ReadThroughCache[bytes],
) -> None:
    load = NumberedLoads()
    assert await cache.get("q", ["alerts"], load) == (b"value 1", False)
    assert await cache.get("q", ["alerts"], load) == (b"value 1", True)
    assert await cache.get("other", ["alerts"], load) == (b"value 2", False)
    await cache.invalidate("alerts")
    assert await cache.get("q", ["alerts"], load) == (b"value 3", False)
    await cache.invalidate("unrelated")
    assert await cache.get("q", ["alerts"], load) == (b"value 3", True)


async def test_concurrent_misses_of_one_query_share_a_single_load(
    cache: ReadThroughCache[bytes],
) -> None:
    loads = 0
    release = asyncio.Event()

    async def load() -> bytes:
        nonlocal loads
        loads += 1
        await release.wait()
        return b"page"

    readers = [asyncio.create_task(cache.get("q", ["alerts"], load)) for _ in range(5)]
    await asyncio.sleep(0.05)
    release.set()
    results = await asyncio.gather(*readers)
    assert loads == 1
    assert all(value == b"page" for value, _ in results)
    assert sum(not hit for _, hit in results) == 1


async def test_a_current_copy_is_served_without_the_entry_crossing_the_wire(
    cache: ReadThroughCache[bytes], server: RedisServer
) -> None:
    decoded: list[bytes] = []

    def decode(raw: bytes) -> list[bytes]:
        decoded.append(raw)
        return [raw]

    redis = async_client(server.url)
    pages = ReadThroughCache(redis, "pages", ttl_seconds=30, decode=decode)

    async def load() -> bytes:
        return b"page"

    first, hit = await pages.get("q", ["alerts"], load)
    assert (first, hit) == ([b"page"], False)
    second, hit = await pages.get("q", ["alerts"], load)
    # The same decoded object: the reply said the copy is current, nothing was decoded.
    assert hit
    assert second is first
    assert decoded == [b"page"]
    await redis.aclose()


async def test_a_copy_is_not_served_once_its_tag_moved_or_its_entry_expired(
    cache: ReadThroughCache[bytes], server: RedisServer
) -> None:
    load = NumberedLoads()
    assert await cache.get("q", ["alerts"], load) == (b"value 1", False)
    await cache.invalidate("alerts")
    assert await cache.get("q", ["alerts"], load) == (b"value 2", False)
    redis = async_client(server.url)
    for key in await redis.keys("tocsin:cache:entry:*"):
        await redis.delete(key)
    assert await cache.get("q", ["alerts"], load) == (b"value 3", False)
    await redis.aclose()


async def test_another_process_entry_replaces_a_stale_copy(
    cache: ReadThroughCache[bytes], server: RedisServer
) -> None:
    redis = async_client(server.url)
    other = ReadThroughCache(redis, "test", ttl_seconds=30)

    async def load_here() -> bytes:
        return b"here"

    async def load_there() -> bytes:
        return b"there"

    assert await cache.get("q", ["alerts"], load_here) == (b"here", False)
    await other.invalidate("alerts")
    # The other process loads and stores under the new generation; this one reads its entry.
    assert await other.get("q", ["alerts"], load_there) == (b"there", False)
    assert await cache.get("q", ["alerts"], load_here) == (b"there", True)
    await redis.aclose()
