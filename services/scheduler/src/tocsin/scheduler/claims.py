"""Claiming fire times: one atomic script per fire time, on Redis's clock.

Every replica evaluates every schedule; the claim script (claims/claim.lua)
decides which replica gets each fire time, so exactly one dispatches it, and
puts the run on its queue in the same step. Until a worker finishes it, the run
holds a lease (`tocsin:sched:leases`): the worker running it renews the lease,
and a lease that lapses (the message was lost, the worker died, its
acknowledgement went missing) is re-dispatched by `redispatch_lapsed`.
"""

from __future__ import annotations

import uuid
from importlib import resources
from typing import Any

import msgspec
from redis import Redis

from tocsin.common import keys
from tocsin.common.queue import WAKEUP_TOKENS_KEPT, encode_message, queue_keys
from tocsin.common.queue.due import script_with_functions
from tocsin.scheduler.jobs import JOB_QUEUES, Run, actor_name

__all__ = ["RunClaims", "run_message"]

_SCRIPTS = resources.files("tocsin.scheduler").joinpath("claims")
_CLAIM_LUA = script_with_functions(_SCRIPTS.joinpath("claim.lua").read_text())
_REDISPATCH_LUA = script_with_functions(_SCRIPTS.joinpath("redispatch.lua").read_text())
_encoder = msgspec.json.Encoder()
_run_decoder = msgspec.json.Decoder(Run)


def run_message(run: Run) -> tuple[str, bytes]:
    """A new queue message for `run`: its id and its encoded form."""
    message_id = uuid.uuid4().hex
    data = encode_message(
        JOB_QUEUES[run.job],
        actor_name(run.job),
        (msgspec.to_builtins(run),),
        message_id=message_id,
    )
    return message_id, data


class RunClaims:
    """The claim, skip and re-dispatch operations of one replica."""

    def __init__(
        self, redis: Redis, replica: str, claim_ttl_seconds: int, *, lease_seconds: float
    ) -> None:
        self._redis = redis
        self._script = redis.register_script(_CLAIM_LUA)
        self._redispatch = redis.register_script(_REDISPATCH_LUA)
        self.replica = replica
        self._ttl = claim_ttl_seconds
        self._lease_ms = max(1, int(lease_seconds * 1000))

    def now(self) -> float:
        """Redis's clock, the one clock every replica agrees on."""
        seconds, micros = self._redis.time()
        return float(seconds) + float(micros) / 1e6

    def publish_catalog(self, catalog: dict[str, dict[str, Any]]) -> None:
        """Replace the published schedules: the replica that started last defines the list."""
        encoded = {name: _encoder.encode(entry) for name, entry in catalog.items()}
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(keys.schedule_catalog())
        if encoded:
            pipe.hset(keys.schedule_catalog(), mapping=encoded)  # type: ignore[arg-type]
        pipe.execute()

    def last_fired(self, schedule: str) -> int | None:
        raw = self._redis.hget(keys.schedule_state(schedule), "last_fired")
        return None if raw is None else int(raw)

    def set_baseline(self, schedule: str, fire: int, next_fire: int) -> None:
        """On a schedule's very first start, count `fire` as done: nothing before it is owed."""
        state = keys.schedule_state(schedule)
        if self._redis.hsetnx(state, "last_fired", fire):
            self._redis.hset(state, "next_fire", next_fire)

    def claim(self, run: Run, next_fire: int) -> bool:
        """Claim `run`'s fire time and queue it; True if this replica claimed it."""
        return self._call(run, next_fire, "run")

    def skip(self, run: Run, next_fire: int) -> bool:
        """Record `run`'s fire time as missed and skipped; True if this replica recorded it."""
        return self._call(run, next_fire, "skip")

    def _call(self, run: Run, next_fire: int, mode: str) -> bool:
        message_id, data = run_message(run)
        result = self._script(
            keys=[
                keys.schedule_claim(run.schedule, run.fire),
                keys.schedule_state(run.schedule),
                keys.schedule_pending(),
                keys.schedule_leases(),
                *queue_keys(JOB_QUEUES[run.job]).as_list(),
            ],
            args=[
                run.fire,
                run.run_id,
                self._ttl,
                self.replica,
                _encoder.encode(run),
                next_fire,
                mode,
                message_id,
                data,
                self._lease_ms,
                WAKEUP_TOKENS_KEPT,
            ],
        )
        return int(result) == 1

    def lapsed(self, now: float, limit: int = 100) -> list[Run]:
        """Runs whose lease lapsed by `now` (Redis time, seconds)."""
        ids: list[bytes] = self._redis.zrangebyscore(  # type: ignore[assignment]
            keys.schedule_leases(), "-inf", int(now * 1000), start=0, num=limit
        )
        if not ids:
            return []
        runs: list[Run] = []
        for run_id, body in zip(ids, self._redis.hmget(keys.schedule_pending(), ids), strict=True):
            if body is None:
                # Nothing left to dispatch it from: the lease is all that remained.
                self._redis.zrem(keys.schedule_leases(), run_id)
                continue
            try:
                runs.append(_run_decoder.decode(body))
            except msgspec.DecodeError:
                self._redis.zrem(keys.schedule_leases(), run_id)
        return runs

    def redispatch(self, run: Run) -> bool:
        """Queue `run` again if its lease has lapsed; True if this replica did."""
        message_id, data = run_message(run)
        result = self._redispatch(
            keys=[
                keys.schedule_leases(),
                keys.schedule_pending(),
                keys.schedule_run(run.run_id),
                *queue_keys(JOB_QUEUES[run.job]).as_list(),
            ],
            args=[run.run_id, message_id, data, self._lease_ms, WAKEUP_TOKENS_KEPT],
        )
        return int(result) == 1
