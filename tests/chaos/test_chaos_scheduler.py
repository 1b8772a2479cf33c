"""Chaos scenario of the scheduler: three replicas while Redis is SIGKILLed and restarted.

Redis keeps an append-only file, as production does. A one-second schedule fires through
the kills; afterwards every fire time in the window must have run (the claim queues the
run in the same step, and a lease that lapses dispatches it again), and the scenario
prints sent (fire times owed) / accepted (claimed) / delivered (ran) / lost / duplicated /
time to settle. The short version runs in `make test`; `TOCSIN_CHAOS_LONG=1` (`make chaos`)
runs the long one.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import redis
from conftest import ServiceFactory
from redis.exceptions import RedisError
from tests.integration.test_scheduler_replicas import _env, _last_fired, _runs
from tests.support import wait_until

from tocsin.common.server import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

LONG = os.environ.get("TOCSIN_CHAOS_LONG") == "1"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer(appendonly=True) as server:
        yield server


def test_three_scheduler_replicas_run_every_fire_time_across_redis_kills(
    redis_server: RedisServer, start_service: ServiceFactory
) -> None:
    kills, outage = (10, 3.0) if LONG else (2, 1.0)
    client = redis.Redis.from_url(redis_server.url)
    env = _env(
        [{"name": "tick", "job": "cache_health", "cron": "* * * * * *"}],
        TOCSIN_REDISPATCH_AFTER_SECONDS="3",
    )
    replicas = [start_service("scheduler", wait=False, **env) for _ in range(3)]
    for replica in replicas:
        replica.wait_ready()
    wait_until(lambda: len(_runs(client, "tick")) >= 3, 60, "the first runs")

    for _ in range(kills):
        time.sleep(2.0)  # a few fire times in flight, then the crash
        redis_server.kill()
        time.sleep(outage)
        redis_server.start()
    restarted = time.monotonic()

    def fired() -> int:
        try:
            return _last_fired(client, "tick")
        except RedisError:
            return 0

    end = wait_until(fired, 60, "a fire time after the last restart")
    first = min(int(r["fire"]) for r in _runs(client, "tick"))
    owed = range(first, end + 1)

    def ran() -> Counter[int]:
        return Counter(int(r["fire"]) for r in _runs(client, "tick") if r["outcome"] == "ok")

    wait_until(lambda: all(ran()[fire] for fire in owed), 90, "every owed fire time to run")
    settle = time.monotonic() - restarted
    time.sleep(2.0)  # room for a late duplicate
    counts = ran()
    delivered = sum(1 for fire in owed if counts[fire])
    duplicated = sum(counts[fire] - 1 for fire in owed if counts[fire] > 1)
    claimed = sum(1 for fire in owed if client.exists(f"tocsin:sched:claim:tick:{fire}"))
    print(
        f"\nchaos scheduler/redis-sigkill-3-replicas: kills={kills} sent={len(owed)} "
        f"accepted={claimed} delivered={delivered} lost={len(owed) - delivered} "
        f"duplicated={duplicated} settle={settle:.1f}s"
    )
    assert delivered == len(owed)
    assert client.zcard("tocsin:sched:leases") <= 2  # only the runs in flight, if any
