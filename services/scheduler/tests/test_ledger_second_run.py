"""A run's start that Redis runs twice is still this worker's run.

Redis frozen past the client's 5 s socket timeout: redis-py sends the start
script again on a new connection, and after the thaw Redis runs both. The
second run, whose answer is the one that arrives, used to find the first's
`running` mark and answer "busy": the run was skipped and waited for its lease
to lapse (10-15 s late). Here a Redis that runs every start twice stands for it.
"""

from __future__ import annotations

from typing import Any

import dramatiq
import msgspec
import pytest
from dramatiq.broker import MessageProxy
from dramatiq.middleware import SkipMessage
from redis import Redis
from tests.support import wait_until

from tocsin.client.devserver import RedisServer
from tocsin.common import keys
from tocsin.scheduler.jobs import Run, actor_name
from tocsin.scheduler.ledger import RunLedger


def _message(run: Run, message_id: str) -> MessageProxy:
    return MessageProxy(
        dramatiq.Message(
            queue_name="maintenance",
            actor_name=actor_name(run.job),
            args=(msgspec.to_builtins(run),),
            kwargs={},
            options={},
            message_id=message_id,
        )
    )


def test_a_start_that_redis_runs_twice_runs_the_job_and_keeps_its_lease_renewed(
    redis_server: RedisServer,
) -> None:
    redis = Redis.from_url(redis_server.url)
    ledger = RunLedger(redis, worker="w1", running_ttl_ms=60_000, lease_ms=600,
                       done_ttl_seconds=60, history_cap=100)  # fmt: skip
    start = ledger._start

    def runs_twice(*args: Any, **kwargs: Any) -> Any:
        start(*args, **kwargs)
        return start(*args, **kwargs)

    ledger._start = runs_twice
    run = Run(run_id="tick@1", schedule="tick", job="tick", fire=1)
    started = _message(run, "m1")
    ledger.before_process_message(None, started)  # type: ignore[arg-type]
    # Renewed while it runs: the lease's end moves on (renewals every 0.2 s).
    first = redis.zscore(keys.schedule_leases(), "tick@1")
    assert first is not None
    wait_until(lambda: (redis.zscore(keys.schedule_leases(), "tick@1") or 0) > first, 5,
               "a renewal")  # fmt: skip
    # Another message of the same run (a re-dispatched copy) is another call: busy.
    with pytest.raises(SkipMessage):
        ledger.before_process_message(None, _message(run, "m2"))  # type: ignore[arg-type]
    # The run ends (its lease renewer has nothing left to renew): recorded done.
    ledger.after_process_message(None, started, result=None)  # type: ignore[arg-type]
    assert redis.get(keys.schedule_run("tick@1")) == b"done"
    redis.close()
