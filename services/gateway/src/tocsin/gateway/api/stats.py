"""`GET /v1/stats`: alert counts by status, severity and service (cached), alerts per minute.

Counts by status cover every stored alert; counts by severity and service
cover open (unresolved) alerts, which is what a dashboard's tiles show. The
counts are cached under the `alerts` tag, like the alert pages; they are
counted by one script (`stats/counts.lua`). The per-minute series counts every
message, so it is read fresh, by one script (`stats/per_minute.lua`) that
returns it encoded. A hit is served as the cached counts' bytes and the series'
bytes spliced together, with no JSON work here.
"""

from __future__ import annotations

import time
from importlib import resources

import redis.asyncio as redis_async
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tocsin.common import keys
from tocsin.common.cache import ReadThroughCache
from tocsin.common.pipelining import PipelinedScript
from tocsin.gateway.api.alerts import ALERTS_TAG, SEVERITIES, STATUSES
from tocsin.gateway.api.context import ApiContext, Unauthorized

__all__ = ["MINUTES", "alerts_per_minute", "routes"]

MINUTES = 60
MAX_SERVICES = 200
_SCRIPTS = resources.files("tocsin.gateway.api").joinpath("stats")
_COUNTS_LUA = _SCRIPTS.joinpath("counts.lua").read_text()
_PER_MINUTE_LUA = _SCRIPTS.joinpath("per_minute.lua").read_text()


async def alerts_per_minute(redis: redis_async.Redis, now: float) -> list[dict[str, int]]:
    """Alert messages received in each of the last `MINUTES` minutes (epoch s of the minute)."""
    current = int(now // 60)
    minutes = list(range(current - MINUTES + 1, current + 1))
    raw = await redis.mget([keys.stats_minute(minute) for minute in minutes])
    return [
        {"minute": minute * 60, "count": int(value or 0)}
        for minute, value in zip(minutes, raw, strict=True)
    ]


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
    counts_script = PipelinedScript(context.pipelined, _COUNTS_LUA, fallback=context.redis)
    per_minute = PipelinedScript(context.pipelined, _PER_MINUTE_LUA, fallback=context.redis)
    minute_prefix = keys.stats_minute_prefix()
    counts_keys = [keys.alert_index(), keys.open_alerts(), keys.known_values("services")]
    counts_args: list[str | int] = [
        keys.alert_index_prefix(),
        ",".join(STATUSES),
        ",".join(SEVERITIES),
        MAX_SERVICES,
    ]

    async def load() -> bytes:
        # Counted in Redis by one script: a miss costs this loop one round trip.
        return bytes(await counts_script(keys=counts_keys, args=counts_args))

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
