"""`GET /v1/stats`: alert counts by status, severity and service (cached), alerts per minute.

Counts by status cover every stored alert; counts by severity and service
cover open (unresolved) alerts, which is what a dashboard's tiles show. The
counts are cached under the `alerts` tag, like the alert pages; the
per-minute series counts every message, so it is read fresh, by one script
(`stats/per_minute.lua`) that returns it encoded. A hit is served as the cached
counts' bytes and the series' bytes spliced together, with no JSON work here.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from typing import Any

import redis.asyncio as redis_async
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tocsin.common import keys
from tocsin.common.cache import ReadThroughCache
from tocsin.common.pipelining import PipelinedScript
from tocsin.gateway.api.alerts import ALERTS_TAG, SEVERITIES, STATUSES
from tocsin.gateway.api.context import ApiContext, Unauthorized

__all__ = ["MINUTES", "alert_counts", "alert_stats", "alerts_per_minute", "routes"]

MINUTES = 60
MAX_SERVICES = 200
_PER_MINUTE_LUA = resources.files("tocsin.gateway.api").joinpath("stats/per_minute.lua").read_text()


async def alert_counts(redis: redis_async.Redis) -> dict[str, Any]:
    """Counts by status (all alerts), and by severity and service (open alerts)."""
    members: set[bytes] = await redis.smembers(keys.known_values("services"))  # type: ignore[assignment]
    services = sorted(member.decode() for member in members)[:MAX_SERVICES]
    pipe = redis.pipeline(transaction=False)
    pipe.zcard(keys.alert_index())
    for status in STATUSES:
        pipe.zcard(keys.alert_index("status", status))
    for severity in SEVERITIES:
        pipe.zintercard(2, [keys.open_alerts(), keys.alert_index("severity", severity)])
    for service in services:
        pipe.zintercard(2, [keys.open_alerts(), keys.alert_index("service", service)])
    results = await pipe.execute()
    total, rest = results[0], results[1:]
    by_status = dict(zip(STATUSES, rest[: len(STATUSES)], strict=True))
    rest = rest[len(STATUSES) :]
    by_severity = dict(zip(SEVERITIES, rest[: len(SEVERITIES)], strict=True))
    rest = rest[len(SEVERITIES) :]
    by_service = {name: count for name, count in zip(services, rest, strict=True) if count}
    return {
        "total": total,
        "by_status": by_status,
        "open_by_severity": by_severity,
        "open_by_service": by_service,
    }


async def alerts_per_minute(redis: redis_async.Redis, now: float) -> list[dict[str, int]]:
    """Alert messages received in each of the last `MINUTES` minutes (epoch s of the minute)."""
    current = int(now // 60)
    minutes = list(range(current - MINUTES + 1, current + 1))
    raw = await redis.mget([keys.stats_minute(minute) for minute in minutes])
    return [
        {"minute": minute * 60, "count": int(value or 0)}
        for minute, value in zip(minutes, raw, strict=True)
    ]


async def alert_stats(redis: redis_async.Redis, now: float) -> dict[str, Any]:
    """The whole `/v1/stats` body, uncached."""
    return {**await alert_counts(redis), "alerts_per_minute": await alerts_per_minute(redis, now)}


def counts_fragment(cached: bytes) -> bytes:
    """The cached counts object without its closing brace, so more members can follow."""
    return cached.rstrip()[:-1]


def routes(context: ApiContext) -> list[BaseRoute]:
    cache = ReadThroughCache(
        context.redis,
        "stats",
        context.settings.api_cache_ttl_seconds,
        decode=counts_fragment,
        lookups=context.pipelined,
    )
    per_minute = PipelinedScript(context.pipelined, _PER_MINUTE_LUA, fallback=context.redis)
    minute_prefix = keys.stats_minute_prefix()

    async def load() -> bytes:
        return json.dumps(await alert_counts(context.redis), separators=(",", ":")).encode()

    async def stats_endpoint(request: Request) -> Response:
        try:
            context.authorize(request, "read")
        except Unauthorized as refused:
            return refused.response
        now = time.time()
        # Counts change only with transitions (which increment the tag); the
        # per-minute series counts every message, so it is read fresh.
        counts, hit = await cache.get("counts", [ALERTS_TAG], load)
        series = await per_minute(args=[minute_prefix, int(now // 60), MINUTES])
        return Response(
            counts + b',"alerts_per_minute":' + bytes(series) + b"}",
            media_type="application/json",
            headers={"x-cache": "hit" if hit else "miss"},
        )

    return [Route("/v1/stats", stats_endpoint, methods=["GET"])]
