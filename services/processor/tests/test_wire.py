"""Pre-packed pipelines against redis-py's own pipeline, on a real server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis import Redis
from redis.exceptions import ResponseError

from tocsin.client.devserver import RedisServer
from tocsin.common.pipelining import bulk, encode_command
from tocsin.common.redis import sync_client
from tocsin.processor.wire import RespChunks, bulks, execute_packed, pack_command


@pytest.fixture
def redis() -> Iterator[Redis]:
    with RedisServer() as server:
        yield sync_client(server.url)


def test_packed_commands_answer_as_redis_py_pipeline_does(redis: Redis) -> None:
    commands = [
        ("SET", "k", "v"),
        ("GET", "k"),
        ("HSET", "h", "a", "1", "b", "2"),
        ("HGETALL", "h"),
        ("EVAL", "return ARGV[1] .. KEYS[1]", "1", "key", "arg"),
        ("INCR", "n"),
    ]
    packed = execute_packed(redis, [encode_command(*command) for command in commands])
    redis.flushall()
    pipe = redis.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    expected = pipe.execute()
    # The raw replies, before redis-py's per-command callbacks (SET's OK -> True).
    assert (packed[0], expected[0]) == (b"OK", True)
    assert packed[1:] == expected[1:]


def test_pack_command_with_chunks_is_the_plain_encoding() -> None:
    chunks = RespChunks()
    packed = pack_command(b"EVALSHA", [chunks("abc"), chunks("1"), bulk(b"key"), chunks("abc")])
    assert packed == encode_command("EVALSHA", "abc", "1", "key", "abc")
    assert bulks([b"", b"a\r\nb"]) == encode_command("", "a\r\nb").split(b"\r\n", 1)[1]


def test_chunk_cache_starts_over_at_its_limit() -> None:
    chunks = RespChunks(limit=2)
    for value in ("a", "b", "c", "a"):
        assert chunks(value) == bulk(value.encode())
    assert len(chunks._chunks) <= 2


def test_commands_from_a_generator_go_out_in_flushes_and_answer_in_order(redis: Redis) -> None:
    commands = (encode_command("RPUSH", "order", str(n)) for n in range(50))
    assert execute_packed(redis, commands, flush_every=8) == list(range(1, 51))
    assert redis.lrange("order", 0, -1) == [str(n).encode() for n in range(50)]


def test_an_error_reply_raises_after_every_reply_is_read(redis: Redis) -> None:
    commands = [
        encode_command("SET", "s", "x"),
        encode_command("INCR", "s"),  # not an integer: an error reply
        encode_command("SET", "after", "1"),
    ]
    with pytest.raises(ResponseError):
        execute_packed(redis, commands)
    assert redis.get("after") == b"1", "the command after the error still ran"
    # The connection went back to the pool in step: the next call reads its own reply.
    assert execute_packed(redis, [encode_command("GET", "after")]) == [b"1"]


def test_a_batch_after_the_server_killed_the_connection_runs_once_in_order(
    redis_server: RedisServer,
) -> None:
    redis = sync_client(redis_server.url)
    assert execute_packed(redis, [encode_command("PING")]) == [b"PONG"]
    killer = sync_client(redis_server.url)
    assert killer.client_kill_filter(_type="normal", skipme=True) >= 1
    commands = (encode_command("INCR", "n") for _ in range(10))
    assert execute_packed(redis, commands, flush_every=3) == list(range(1, 11))
    killer.close()
