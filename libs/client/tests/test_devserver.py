"""The private server launcher of `tocsin dev` and the tests, against a real binary."""

import pytest

from tocsin.client.devserver import RedisServer, find_server_binary


def test_an_explicit_binary_wins_over_path_and_wheel() -> None:
    assert (
        find_server_binary({"TOCSIN_REDIS_SERVER": "/opt/x/redis-server"}) == "/opt/x/redis-server"
    )


def test_a_missing_binary_is_reported_at_start() -> None:
    server = RedisServer(binary="/nonexistent/redis-server")
    with pytest.raises(FileNotFoundError):
        server.start()
    server.close()


def test_server_answers_ping_and_stops_cleanly() -> None:
    with RedisServer() as server:
        assert server.ping()
        pid = server.pid
        assert pid is not None
    assert not server.ping()
