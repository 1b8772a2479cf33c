"""Claiming fire times: one atomic script per fire time, on Redis's clock.

Every replica evaluates every schedule; the claim script (claims/claim.lua)
decides which replica gets each fire time, so exactly one enqueues it.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import msgspec
from redis import Redis

from tocsin.common import keys
from tocsin.scheduler.jobs import Run

__all__ = ["PendingRun", "RunClaims"]

_CLAIM_LUA = resources.files("tocsin.scheduler").joinpath("claims/claim.lua").read_text()
_encoder = msgspec.json.Encoder()
_run_decoder = msgspec.json.Decoder(Run)


class PendingRun(msgspec.Struct):
    """A claimed run not yet confirmed as enqueued, and when it was claimed (Redis time)."""

    run: Run
    claimed_at: float


class RunClaims:
    """The claim, skip and pending-run operations of one replica."""

    def __init__(self, redis: Redis, replica: str, claim_ttl_seconds: int) -> None:
        self._redis = redis
        self._script = redis.register_script(_CLAIM_LUA)
        self.replica = replica
        self._ttl = claim_ttl_seconds

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
        """Claim `run`'s fire time; True if this replica must enqueue it."""
        return self._call(run, next_fire, "run")

    def skip(self, run: Run, next_fire: int) -> bool:
        """Record `run`'s fire time as missed and skipped; True if this replica recorded it."""
        return self._call(run, next_fire, "skip")

    def _call(self, run: Run, next_fire: int, mode: str) -> bool:
        result = self._script(
            keys=[
                keys.schedule_claim(run.schedule, run.fire),
                keys.schedule_state(run.schedule),
                keys.schedule_pending(),
            ],
            args=[
                run.fire,
                run.run_id,
                self._ttl,
                self.replica,
                _encoder.encode(run),
                next_fire,
                mode,
            ],
        )
        return int(result) == 1

    def enqueued(self, run: Run) -> None:
        """The run is on its queue: it no longer needs a rescuer."""
        self._redis.hdel(keys.schedule_pending(), run.run_id)

    def pending(self) -> list[PendingRun]:
        runs: list[PendingRun] = []
        raw: dict[bytes, bytes] = self._redis.hgetall(keys.schedule_pending())  # type: ignore[assignment]
        for value in raw.values():
            claimed_at, _, body = value.partition(b" ")
            try:
                runs.append(PendingRun(_run_decoder.decode(body), float(claimed_at)))
            except (msgspec.DecodeError, ValueError):
                continue
        return runs
