"""The cached dashboard reads: how cached pages and stats are spliced into responses."""

from __future__ import annotations

import json
import time

from tocsin.client.devserver import RedisServer
from tocsin.common import keys
from tocsin.common.redis import async_client
from tocsin.gateway.api.alerts import _RECORDS_LUA, SEVERITIES, STATUSES, CachedPage
from tocsin.gateway.api.stats import (
    _COUNTS_LUA,
    _PER_MINUTE_LUA,
    MINUTES,
    alerts_per_minute,
    counts_fragment,
)


def test_a_cached_page_names_its_records_and_keeps_the_rest_encoded() -> None:
    cached = json.dumps({"alerts": ["a1", "a2"], "total": 2, "next_cursor": None}).encode()
    page = CachedPage.decode(cached)
    assert json.loads(page.ids) == ["a1", "a2"]
    served = b'{"alerts":[' + b'{"id":"a1"},{"id":"a2"}' + b"]," + page.rest
    assert json.loads(served) == {
        "alerts": [{"id": "a1"}, {"id": "a2"}],
        "total": 2,
        "next_cursor": None,
    }


def test_cached_counts_take_more_members_after_them() -> None:
    cached = json.dumps({"total": 3, "by_status": {"firing": 3}}, separators=(",", ":")).encode()
    served = counts_fragment(cached) + b',"alerts_per_minute":[]}'
    assert json.loads(served) == {"total": 3, "by_status": {"firing": 3}, "alerts_per_minute": []}


async def test_the_records_script_joins_the_records_that_still_exist_in_page_order(
    redis_server: RedisServer,
) -> None:
    redis = async_client(redis_server.url)
    await redis.set(keys.alert("b"), '{"id":"b"}')
    await redis.set(keys.alert('a"1'), '{"id":"a\\"1"}')
    script = redis.register_script(_RECORDS_LUA)
    ids = json.dumps(["b", "gone", 'a"1']).encode()
    joined = await script(args=[keys.alert_prefix(), ids, keys.TAG_LENGTH])
    assert json.loads(b"[" + joined + b"]") == [{"id": "b"}, {"id": 'a"1'}]
    await redis.aclose()


async def test_the_per_minute_script_serves_the_series_alerts_per_minute_reads(
    redis_server: RedisServer,
) -> None:
    redis = async_client(redis_server.url)
    now = time.time()
    current = int(now // 60)
    await redis.set(keys.stats_minute(current), 7)
    await redis.set(keys.stats_minute(current - 1), 12)
    await redis.set(keys.stats_minute(current - MINUTES + 1), 1)
    await redis.set(keys.stats_minute(current - MINUTES), 99)  # outside the window
    script = redis.register_script(_PER_MINUTE_LUA)
    encoded = await script(args=[keys.stats_minute_prefix(), current, MINUTES])
    assert json.loads(encoded) == await alerts_per_minute(redis, now)
    assert json.loads(encoded)[-1] == {"minute": current * 60, "count": 7}
    await redis.aclose()


async def test_the_counts_script_counts_by_status_and_open_alerts_by_severity_and_service(
    redis_server: RedisServer,
) -> None:
    redis = async_client(redis_server.url)
    alerts = {
        # id: (status, severity, service)
        "a": ("firing", "critical", "db"),
        "b": ("acknowledged", "critical", 'quote"d'),
        "c": ("resolved", "warning", "db"),
        "d": ("firing", "info", "web"),
    }
    for alert_id, (status, severity, service) in alerts.items():
        await redis.zadd(keys.alert_index(), {alert_id: 1})
        await redis.zadd(keys.alert_index("status", status), {alert_id: 1})
        await redis.zadd(keys.alert_index("severity", severity), {alert_id: 1})
        await redis.zadd(keys.alert_index("service", service), {alert_id: 1})
        await redis.sadd(keys.known_values("services"), service)
        if status != "resolved":
            await redis.zadd(keys.open_alerts(), {alert_id: 1})
    await redis.sadd(keys.known_values("services"), "quiet")  # known, nothing open
    script = redis.register_script(_COUNTS_LUA)
    counts_keys = [keys.alert_index(), keys.open_alerts(), keys.known_values("services")]
    counts_args = [keys.alert_index_prefix(), ",".join(STATUSES), ",".join(SEVERITIES)]
    assert json.loads(await script(keys=counts_keys, args=[*counts_args, 200])) == {
        "total": 4,
        "by_status": {"firing": 2, "acknowledged": 1, "resolved": 1},
        "open_by_severity": {"critical": 2, "error": 0, "warning": 0, "info": 1},
        "open_by_service": {"db": 1, 'quote"d': 1, "web": 1},
    }
    # Services are counted in name order up to the limit.
    limited = json.loads(await script(keys=counts_keys, args=[*counts_args, 1]))
    assert limited["open_by_service"] == {"db": 1}
    await redis.aclose()
