"""Producer authentication by API key against a real Redis-compatible server."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio

from tocsin.client.devserver import RedisServer, free_port
from tocsin.common.apikeys import ApiKeyStore
from tocsin.common.errors import StoreUnavailableError
from tocsin.common.redis import async_client
from tocsin.ingest.producers import AuthError, ProducerAuth


def _key_reads(server: RedisServer) -> int:
    stats = redis.Redis.from_url(server.url).info("commandstats")
    return int(stats.get("cmdstat_hgetall", {}).get("calls", 0))


async def test_concurrent_requests_with_an_unchecked_key_read_it_from_redis_once(
    redis_server: RedisServer,
) -> None:
    key, _ = ApiKeyStore(redis.Redis.from_url(redis_server.url)).create("edge", {"dc": "eu"})
    auth = ProducerAuth(async_client(redis_server.url), None, cache_seconds=5.0)
    assert auth.known(key) is None, "an unchecked key needs a Redis read"
    before = _key_reads(redis_server)
    producers = await asyncio.gather(*(auth.authenticate(key) for _ in range(32)))
    assert {(p.name, tuple(p.labels.items())) for p in producers} == {("edge", (("dc", "eu"),))}
    assert _key_reads(redis_server) - before == 1
    known = auth.known(key)
    assert known is not None, "then it is known without a read"
    assert known.name == "edge"


async def test_concurrent_requests_with_an_unknown_key_are_all_refused(
    redis_server: RedisServer,
) -> None:
    auth = ProducerAuth(async_client(redis_server.url), None, cache_seconds=5.0)
    forged = "tsk_0000000000000000_" + "0" * 43
    results = await asyncio.gather(
        *(auth.authenticate(forged) for _ in range(8)), return_exceptions=True
    )
    assert all(isinstance(r, AuthError) and r.status == 401 for r in results), results
    with pytest.raises(AuthError):
        await auth.authenticate(forged)  # refusals are not cached: asked again


async def test_an_unreachable_redis_is_a_store_error_not_a_refused_key() -> None:
    unreachable = redis.asyncio.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    auth = ProducerAuth(unreachable, None, cache_seconds=5.0)
    try:
        with pytest.raises(StoreUnavailableError):
            await auth.authenticate("tsk_0000000000000000_" + "0" * 43)
    finally:
        await unreachable.aclose()
