"""Fixtures the tests of `tocsin.common` share."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from tocsin.client.devserver import RedisServer, free_port


@pytest.fixture
def redis(redis_server: RedisServer) -> Iterator[Redis]:
    """A client of the test's own Redis server."""
    client = Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture
def sentinel_port(redis_server: RedisServer, tmp_path: Path) -> Iterator[int]:
    """A real Sentinel (the same binary in sentinel mode) watching `redis_server` as `tocsin`."""
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor tocsin 127.0.0.1 {redis_server.port} 1\n"
    )
    process = subprocess.Popen(
        [redis_server.binary, str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    probe = RedisServer(binary=redis_server.binary, port=port)
    deadline = time.monotonic() + 10
    while not probe.ping() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield port
    finally:
        process.terminate()
        process.wait(10)
