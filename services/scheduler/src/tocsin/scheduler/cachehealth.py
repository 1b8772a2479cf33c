"""Cache health: hit rate, operation latency, memory use and evictions of Redis.

The hit rate is the application cache's (hits and misses every process adds to
the health signals, last five minutes), with Redis's own keyspace hit rate
beside it. Latency is measured here with a few PINGs and GETs. The result is
stored at `tocsin:health:cache` for the health score and the dashboards.
"""

from __future__ import annotations

import json
import time
from typing import Any

from redis import Redis

from tocsin.common import keys
from tocsin.common.models import rfc3339

__all__ = ["check_cache_health"]

PROBES = 5
SIGNAL_MINUTES = 5


def _ratio(hits: int, misses: int) -> float | None:
    total = hits + misses
    return None if total == 0 else round(hits / total, 4)


def _app_cache_counts(redis: Redis, now: float) -> tuple[int, int] | None:
    signals = getattr(keys, "health_signals", None)
    if signals is None:
        return None
    minute = int(now // 60)
    pipe = redis.pipeline(transaction=False)
    for m in range(minute - SIGNAL_MINUTES + 1, minute + 1):
        pipe.hmget(signals(m), "cache_hits", "cache_misses")
    hits = misses = 0
    for hit, miss in pipe.execute():
        hits += int(hit or 0)
        misses += int(miss or 0)
    return hits, misses


def _latency_ms(redis: Redis) -> dict[str, float]:
    probe_key = keys.cache_health() + ":probe"
    samples: list[float] = []
    for _ in range(PROBES):
        started = time.perf_counter()
        redis.ping()
        redis.get(probe_key)
        samples.append((time.perf_counter() - started) * 1000 / 2)
    samples.sort()
    return {"p50_ms": round(samples[len(samples) // 2], 3), "max_ms": round(samples[-1], 3)}


def check_cache_health(redis: Redis, now: float) -> dict[str, Any]:
    """Measure, store and return the cache health."""
    memory: dict[str, Any] = redis.info("memory")
    stats: dict[str, Any] = redis.info("stats")
    counts = _app_cache_counts(redis, now)
    maxmemory = int(memory.get("maxmemory", 0))
    used = int(memory.get("used_memory", 0))
    report: dict[str, Any] = {
        "checked_at": rfc3339(now),
        "hit_rate": None if counts is None else _ratio(*counts),
        "cache_hits": None if counts is None else counts[0],
        "cache_misses": None if counts is None else counts[1],
        "redis_keyspace_hit_rate": _ratio(
            int(stats.get("keyspace_hits", 0)), int(stats.get("keyspace_misses", 0))
        ),
        "latency": _latency_ms(redis),
        "used_memory_bytes": used,
        "maxmemory_bytes": maxmemory,
        "memory_use_ratio": round(used / maxmemory, 4) if maxmemory else None,
        "fragmentation_ratio": memory.get("mem_fragmentation_ratio"),
        "evicted_keys": int(stats.get("evicted_keys", 0)),
    }
    redis.set(keys.cache_health(), json.dumps(report))
    return {"hit_rate": report["hit_rate"], "evicted_keys": report["evicted_keys"]}
