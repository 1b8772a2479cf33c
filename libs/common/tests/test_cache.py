"""The read-through cache against a real Redis-compatible server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from tocsin.common.cache import ReadThroughCache, normalised_query
from tocsin.common.redis import async_client
from tocsin.common.server import RedisServer


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as started:
        yield started


@pytest.fixture
async def cache(server: RedisServer) -> AsyncIterator[ReadThroughCache]:
    redis = async_client(server.url)
    await redis.flushall()
    yield ReadThroughCache(redis, "test", ttl_seconds=30)
    await redis.aclose()


def test_normalised_query_ignores_parameter_and_value_order() -> None:
    assert normalised_query({"b": "2", "a": ["y", "x"]}) == normalised_query(
        {"a": ["x", "y"], "b": ["2"]}
    )


async def test_second_read_hits_and_an_invalidated_tag_forces_a_load(
    cache: ReadThroughCache,
) -> None:
    loads = 0

    async def load() -> bytes:
        nonlocal loads
        loads += 1
        return f"value {loads}".encode()

    assert await cache.get("q", ["alerts"], load) == (b"value 1", False)
    assert await cache.get("q", ["alerts"], load) == (b"value 1", True)
    assert await cache.get("other", ["alerts"], load) == (b"value 2", False)
    await cache.invalidate("alerts")
    assert await cache.get("q", ["alerts"], load) == (b"value 3", False)
    await cache.invalidate("unrelated")
    assert await cache.get("q", ["alerts"], load) == (b"value 3", True)


async def test_concurrent_misses_of_one_query_share_a_single_load(
    cache: ReadThroughCache,
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
