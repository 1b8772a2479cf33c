"""Redis connection factories: plain or TLS URLs, sync and asyncio clients."""

from __future__ import annotations

import redis as redis_sync
import redis.asyncio as redis_async
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

__all__ = ["async_client", "sync_client"]

_RETRY_ERRORS = (redis_sync.ConnectionError, redis_sync.TimeoutError)


def sync_client(url: str, **options: object) -> redis_sync.Redis:
    """A blocking client that retries briefly across a reconnect."""
    return redis_sync.Redis.from_url(
        url,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        retry_on_error=list(_RETRY_ERRORS),
        health_check_interval=30,
        socket_keepalive=True,
        **options,
    )


def async_client(url: str, **options: object) -> redis_async.Redis:
    """An asyncio client that retries briefly across a reconnect."""
    return redis_async.Redis.from_url(
        url,
        retry=AsyncRetry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        retry_on_error=list(_RETRY_ERRORS),
        health_check_interval=30,
        socket_keepalive=True,
        **options,  # type: ignore[arg-type]
    )
