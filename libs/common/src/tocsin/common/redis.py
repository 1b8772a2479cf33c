"""Redis connection factories: plain, TLS and Sentinel, sync and asyncio clients.

A URL names the target: `redis://` and `rediss://` (TLS) as redis-py reads them,
or `redis+sentinel://[:password@]host:port,host:port/<master>[/<db>]`, which asks
the Sentinels for the current primary on every reconnect, so a failover is
followed without a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import redis as redis_sync
import redis.asyncio as redis_async
import redis.asyncio.sentinel as sentinel_async
import redis.sentinel as sentinel_sync
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from tocsin.common.errors import RedisReplyError, StoreError, StoreUnavailableError
from tocsin.common.metrics import count_redis_error

__all__ = [
    "SENTINEL_SCHEME",
    "SentinelTarget",
    "async_client",
    "parse_sentinel_url",
    "store_error",
    "sync_client",
]

SENTINEL_SCHEME = "redis+sentinel://"
_RETRY_ERRORS = (redis_sync.ConnectionError, redis_sync.TimeoutError)


@dataclass(frozen=True)
class SentinelTarget:
    """Where the Sentinels are and which primary they watch."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int
    password: str | None


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Read a `redis+sentinel://` URL; raises ValueError naming what is wrong."""
    if not url.startswith(SENTINEL_SCHEME):
        raise ValueError(f"not a {SENTINEL_SCHEME} URL")
    rest = url[len(SENTINEL_SCHEME) :]
    password: str | None = None
    if "@" in rest:
        credentials, rest = rest.rsplit("@", 1)
        password = unquote(credentials.split(":", 1)[-1]) or None
    hosts_part, _, path = rest.partition("/")
    segments = [s for s in path.split("/") if s]
    if not hosts_part or not segments:
        raise ValueError(
            "a Sentinel URL needs hosts and a master name: redis+sentinel://h:26379/mymaster"
        )
    sentinels = []
    for host_port in hosts_part.split(","):
        host, _, port = host_port.rpartition(":")
        sentinels.append((host or host_port, int(port) if host else 26379))
    db = int(segments[1]) if len(segments) > 1 else 0
    return SentinelTarget(tuple(sentinels), unquote(segments[0]), db, password)


class _CountingRetry(Retry):
    """Retries like redis-py, and counts a command that still fails in the metrics."""

    def call_with_retry(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().call_with_retry(*args, **kwargs)
        except redis_sync.RedisError as exc:
            count_redis_error(exc)
            raise


class _CountingAsyncRetry(AsyncRetry):
    """The asyncio counterpart of `_CountingRetry`."""

    async def call_with_retry(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().call_with_retry(*args, **kwargs)
        except redis_sync.RedisError as exc:
            count_redis_error(exc)
            raise


def _common_options() -> dict[str, Any]:
    return {
        "retry_on_error": list(_RETRY_ERRORS),
        "health_check_interval": 30,
        "socket_keepalive": True,
    }


def _sentinel_primary(sentinel_class: Any, url: str, settings: dict[str, Any]) -> Any:
    """A client of the primary that `sentinel_class` (sync or asyncio) finds for `url`."""
    target = parse_sentinel_url(url)
    sentinel = sentinel_class(
        list(target.sentinels),
        sentinel_kwargs={"password": target.password, "socket_timeout": 2},
        password=target.password,
        db=target.db,
    )
    return sentinel.master_for(target.master, **settings)


def sync_client(url: str, **options: Any) -> redis_sync.Redis:
    """A blocking client that retries briefly across a reconnect."""
    settings = _common_options() | {
        "retry": _CountingRetry(ExponentialBackoff(cap=1.0, base=0.05), 3)
    }
    settings.update(options)
    if url.startswith(SENTINEL_SCHEME):
        primary: redis_sync.Redis = _sentinel_primary(sentinel_sync.Sentinel, url, settings)
        return primary
    return redis_sync.Redis.from_url(url, **settings)


def async_client(url: str, **options: Any) -> redis_async.Redis:
    """An asyncio client that retries briefly across a reconnect."""
    settings = _common_options() | {
        "retry": _CountingAsyncRetry(ExponentialBackoff(cap=1.0, base=0.05), 3)
    }
    settings.update(options)
    if url.startswith(SENTINEL_SCHEME):
        primary_async: redis_async.Redis = _sentinel_primary(sentinel_async.Sentinel, url, settings)
        return primary_async
    return redis_async.Redis.from_url(url, **settings)


def store_error(exc: BaseException) -> StoreError:
    """The `StoreError` a redis-py or socket error stands for, where Tocsin's code meets it.

    An error reply stays an error reply; anything else (refused, reset, timed
    out, no primary found) is the store being unavailable. Its message is kept.
    """
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, redis_sync.ResponseError):
        return RedisReplyError(str(exc))
    return StoreUnavailableError(str(exc) or type(exc).__name__)
