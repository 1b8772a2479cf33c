"""Fixtures of the chaos scenarios: a killable Redis with AOF on, and a stack of services."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.harness import ChaosRedis, Stack


@pytest.fixture
def chaos_redis() -> Iterator[ChaosRedis]:
    """A fresh server with AOF (fsync always) on a free port, for one scenario."""
    server = ChaosRedis()
    server.start()
    try:
        yield server
    finally:
        server.thaw()
        server.close()


@pytest.fixture
def stack(chaos_redis: ChaosRedis, tmp_path: Path) -> Iterator[Stack]:
    """Services started by the scenario against `chaos_redis`; all stopped after it."""
    with Stack(chaos_redis, tmp_path) as services:
        yield services
