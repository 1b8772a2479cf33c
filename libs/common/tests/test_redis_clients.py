"""Redis clients: Sentinel URLs against a real Sentinel, and failed commands in the metrics."""

from __future__ import annotations

import pytest

from tocsin.client.devserver import RedisServer
from tocsin.common.redis import async_client, parse_sentinel_url, sync_client


def test_sentinel_urls_name_hosts_master_db_and_password() -> None:
    target = parse_sentinel_url("redis+sentinel://:s%40cret@a:26379,b:26380/prod-main/2")
    assert target.sentinels == (("a", 26379), ("b", 26380))
    assert target.master == "prod-main"
    assert target.db == 2
    assert target.password == "s@cret"


def test_a_sentinel_url_without_master_is_refused() -> None:
    with pytest.raises(ValueError, match="master name"):
        parse_sentinel_url("redis+sentinel://a:26379")


def test_clients_reach_the_primary_through_sentinel(sentinel_port: int) -> None:
    url = f"redis+sentinel://127.0.0.1:{sentinel_port}/tocsin/0"
    client = sync_client(url)
    client.set("tocsin:probe", "through-sentinel")
    assert client.get("tocsin:probe") == b"through-sentinel"

    async def read_async() -> bytes | None:
        async_redis = async_client(url)
        try:
            value: bytes | None = await async_redis.get("tocsin:probe")
            return value
        finally:
            await async_redis.aclose()

    import asyncio

    assert asyncio.run(read_async()) == b"through-sentinel"


def test_a_command_that_fails_after_its_retries_is_counted(redis_server: RedisServer) -> None:
    import redis as redis_lib

    from tocsin.common.metrics import REDIS_ERRORS

    client = sync_client(redis_server.url)
    assert client.ping()
    redis_server.stop()
    before = REDIS_ERRORS.labels("ConnectionError")._value.get()
    with pytest.raises(redis_lib.ConnectionError):
        client.ping()
    assert REDIS_ERRORS.labels("ConnectionError")._value.get() == before + 1
