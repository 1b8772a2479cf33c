"""The pipelined connection against a real Redis-compatible server."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import redis

from tocsin.client.devserver import RedisServer, free_port
from tocsin.common.pipelining import (
    PipelinedRedis,
    PipelinedScript,
    RedisReplyError,
    StoreUnavailableError,
    encode_command,
)
from tocsin.common.redis import async_client


def test_commands_are_encoded_as_resp_bulk_string_arrays() -> None:
    assert encode_command("SET", "k", 1.5, b"\x00") == (
        b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\n1.5\r\n$1\r\n\x00\r\n"
    )


@pytest.mark.parametrize("coalesce", [True, False])
async def test_concurrent_commands_get_their_own_replies_in_order(
    redis_server: RedisServer, coalesce: bool
) -> None:
    connection = PipelinedRedis(redis_server.url, coalesce=coalesce)
    try:
        replies = await asyncio.gather(
            *(connection.execute("INCRBY", "counter", n) for n in range(1, 101))
        )
        assert replies == [n * (n + 1) // 2 for n in range(1, 101)]
        with pytest.raises(RedisReplyError):
            await connection.execute("NOSUCHCOMMAND")
        assert await connection.execute("PING") == b"PONG", "an error reply breaks nothing"
    finally:
        await connection.close()


async def test_a_script_is_loaded_when_the_server_lacks_it(redis_server: RedisServer) -> None:
    connection = PipelinedRedis(redis_server.url)
    script = PipelinedScript(connection, "return ARGV[1] .. KEYS[1]")
    try:
        assert await script(keys=["k"], args=["v"]) == b"vk"  # NOSCRIPT, then EVAL
        assert await script(keys=["k"], args=["w"]) == b"wk"  # EVALSHA
    finally:
        await connection.close()


async def test_a_script_call_whose_connection_fails_goes_through_the_fallback(
    redis_server: RedisServer,
) -> None:
    unreachable = PipelinedRedis(f"redis://127.0.0.1:{free_port()}/0")
    pooled = async_client(redis_server.url)
    script = PipelinedScript(unreachable, "return ARGV[1] .. KEYS[1]", fallback=pooled)
    try:
        assert await script(keys=["k"], args=["v"]) == b"vk"
        # No fallback: the error is the caller's, as the store's, with the socket's as cause.
        with pytest.raises(StoreUnavailableError) as refused:
            await PipelinedScript(unreachable, "return 1")()
        assert isinstance(refused.value.__cause__, ConnectionRefusedError)
    finally:
        await unreachable.close()
        await pooled.aclose()


async def test_a_fallback_call_that_fails_raises_the_store_s_errors_not_redis_py_s(
    redis_server: RedisServer,
) -> None:
    unreachable = PipelinedRedis(f"redis://127.0.0.1:{free_port()}/0")
    pooled = async_client(redis_server.url)
    pooled_unreachable = async_client(f"redis://127.0.0.1:{free_port()}/0")
    try:
        refusing = PipelinedScript(unreachable, "return redis.error_reply('BOOM no')", pooled)
        with pytest.raises(RedisReplyError, match="BOOM no"):
            await refusing()
        gone = PipelinedScript(unreachable, "return 1", fallback=pooled_unreachable)
        with pytest.raises(StoreUnavailableError) as refused:
            await gone()
        assert isinstance(refused.value.__cause__, redis.ConnectionError)
    finally:
        await unreachable.close()
        await pooled.aclose()
        await pooled_unreachable.aclose()


async def test_connection_recovers_after_a_redis_restart(redis_server: RedisServer) -> None:
    connection = PipelinedRedis(redis_server.url)
    try:
        assert await connection.execute("PING") == b"PONG"
        await asyncio.to_thread(redis_server.restart)
        # The call in flight when the connection broke may fail; the next one reconnects.
        with contextlib.suppress(OSError):
            await connection.execute("PING")
        assert await connection.execute("PING") == b"PONG"
    finally:
        await connection.close()


async def test_a_server_that_stops_answering_fails_the_calls_in_flight() -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass  # reads every command and answers none, like a hung Redis
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connection = PipelinedRedis(f"redis://127.0.0.1:{port}/0", reply_timeout=0.2)
    try:
        with pytest.raises(OSError, match="no reply"):
            # The outer bound only keeps a broken detector from hanging the suite.
            await asyncio.wait_for(connection.execute("PING"), 30)
    finally:
        await connection.close()
        server.close()
        await server.wait_closed()


async def test_sentinel_url_reaches_the_primary(sentinel_port: int) -> None:
    connection = PipelinedRedis(f"redis+sentinel://127.0.0.1:{sentinel_port}/tocsin/0")
    try:
        assert await connection.execute("SET", "tocsin:probe", "pipelined") == b"OK"
        assert await connection.execute("GET", "tocsin:probe") == b"pipelined"
    finally:
        await connection.close()
