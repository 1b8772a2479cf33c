"""Chaos scenario of the scheduler: three replicas while Redis is SIGKILLed and restarted.

Redis keeps an append-only file, as production does. A one-second schedule fires through
the kills; afterwards every fire time in the window must have run (the claim queues the
run in the same step, and a lease that lapses dispatches it again), and the scenario
prints the harness's tally: sent (fire times owed), accepted (claimed), stored (runs in the
history), delivered (fire times run), lost, duplicated (extra runs), time to settle. The
short form runs in `make test`; `make chaos` (`TOCSIN_CHAOS=long`) runs ten kills.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from redis.exceptions import RedisError

from tests.chaos.harness import LONG, ChaosRedis, Stack, Tally, settle
from tests.integration.test_scheduler_replicas import _env, _last_fired, _runs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def test_three_scheduler_replicas_run_every_fire_time_across_redis_kills(
    chaos_redis: ChaosRedis, stack: Stack
) -> None:
    kills, outage = (10, 3.0) if LONG else (2, 1.0)
    client = chaos_redis.client()
    env = _env(
        [{"name": "tick", "job": "cache_health", "cron": "* * * * * *"}],
        TOCSIN_REDISPATCH_AFTER_SECONDS="3",
    )
    replicas = [stack.start("scheduler", wait=False, **env) for _ in range(3)]
    for replica in replicas:
        replica.wait_ready()
    settle(lambda: len(_runs(client, "tick")) >= 3, 60, "the first runs")

    for _ in range(kills):
        time.sleep(2.0)  # a few fire times in flight, then the crash
        chaos_redis.kill()
        time.sleep(outage)
        chaos_redis.restart()
    restarted = time.monotonic()

    def fired() -> int:
        try:
            return _last_fired(client, "tick")
        except RedisError:
            return 0

    settle(fired, 60, "a fire time after the last restart")
    end = fired()
    first = min(int(r["fire"]) for r in _runs(client, "tick"))
    owed = range(first, end + 1)

    def ran() -> Counter[int]:
        return Counter(int(r["fire"]) for r in _runs(client, "tick") if r["outcome"] == "ok")

    settle(lambda: all(ran()[fire] for fire in owed), 90, "every owed fire time to run")
    settled = time.monotonic() - restarted
    time.sleep(2.0)  # room for a late duplicate
    counts = ran()
    delivered = sum(1 for fire in owed if counts[fire])
    tally = Tally(
        "scheduler/redis-sigkill-3-replicas",
        sent=len(owed),
        accepted=sum(1 for fire in owed if client.exists(f"tocsin:sched:claim:tick:{fire}")),
        stored=sum(counts[fire] for fire in owed),
        delivered=delivered,
        lost=len(owed) - delivered,
        duplicated=sum(counts[fire] - 1 for fire in owed if counts[fire] > 1),
        settle_seconds=settled,
        notes={"kills": kills},
    )
    tally.report()
    # Runs are idempotent by run id; one cut off by a kill may run again: reported, allowed.
    assert tally.lost == 0, tally.report()
    assert client.zcard("tocsin:sched:leases") <= 2  # only the runs in flight, if any
