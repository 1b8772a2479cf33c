"""Fixtures shared by every test: a private Redis-compatible server and real service processes."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from tests.support import wait_until_serving

from tocsin.client.devserver import RedisServer, free_port, stop_process
from tocsin.client.devtoken import mint_token

TEST_JWT_SECRET = "test-secret-for-tocsin-integration-tests"

# No wall-clock bound on a property example: on a loaded machine one example can pause
# past Hypothesis's 200 ms default, and how fast code runs is for tests/load to measure.
settings.register_profile("tocsin", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("tocsin")


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh Redis-compatible server on a free loopback port, for one test."""
    with RedisServer() as server:
        yield server


@dataclass
class ServiceProcess:
    """A Tocsin service running as a real OS process (`python -m tocsin.client <name>`)."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def wait_ready(self, timeout: float = 20.0) -> None:
        wait_until_serving(f"{self.url}/readyz", self.process, timeout, self.log)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> int:
        return stop_process(self.process, timeout)


ServiceFactory = Callable[..., ServiceProcess]


@contextlib.contextmanager
def _services(redis_server: RedisServer, logs: Path) -> Iterator[ServiceFactory]:
    """A factory of service processes against `redis_server`, all stopped on exit."""
    started: list[ServiceProcess] = []

    def start(name: str, *, wait: bool = True, **env_overrides: str) -> ServiceProcess:
        port = free_port()
        env = dict(os.environ)
        env.update(
            REDIS_URL=redis_server.url,
            TOCSIN_PORT=str(port),
            TOCSIN_LOG_FORMAT="json",
            TOCSIN_JWT_SECRET=TEST_JWT_SECRET,
            PYTHONUNBUFFERED="1",
        )
        env.update(env_overrides)
        log_path = logs / f"{name}-{port}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "tocsin.client", name],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        service = ServiceProcess(name, port, process, log_path, env)
        started.append(service)
        if wait:
            service.wait_ready()
        return service

    try:
        yield start
    finally:
        for service in reversed(started):
            service.stop()


@pytest.fixture
def start_service(redis_server: RedisServer, tmp_path: Path) -> Iterator[ServiceFactory]:
    """Start services as real processes against `redis_server`; all are stopped after the test."""
    with _services(redis_server, tmp_path) as start:
        yield start


@pytest.fixture(scope="module")
def module_redis_server() -> Iterator[RedisServer]:
    """One Redis-compatible server shared by a module's tests (for costly stacks, e.g. browsers)."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def start_module_service(
    module_redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceFactory]:
    """`start_service` for a whole module: the processes live until its last test."""
    with _services(module_redis_server, tmp_path_factory.mktemp("services")) as start:
        yield start


@pytest.fixture
def user_token() -> Callable[..., str]:
    """Mint a user JWT signed with the secret the test services use."""

    def mint(**kwargs: object) -> str:
        kwargs.setdefault("scopes", ("read", "write"))
        return mint_token(TEST_JWT_SECRET, "tester", **kwargs)  # type: ignore[arg-type]

    return mint
