"""The dispatcher: each replica's loop that turns due fire times into queued runs.

On every tick it reads Redis's clock and, per schedule, the shared `last_fired`.
Fire times after it are handled in order:

- a fire time at most `misfire_grace` old is due: claim it, enqueue it;
- older ones were missed while no replica ran: under `catch_up=once` the latest
  of them is claimed and run, under `skip` it is recorded as skipped; either way
  `last_fired` moves past them, so they are never fired again.

Claims are exclusive (see `tocsin.scheduler.claims`), so running the loop in
every replica needs no leader. A claim queues its run in the same step and
leases it until a worker finishes it; every replica re-dispatches runs whose
lease lapsed (a lost message, a dead worker, a lost acknowledgement), so a
claimed fire time is always either run or dispatched again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from itertools import islice

from prometheus_client import Counter

from tocsin.scheduler.claims import RunClaims
from tocsin.scheduler.jobs import Run
from tocsin.scheduler.schedule import CatchUp, Schedule, utc_text

__all__ = ["Dispatcher", "run_for"]

log = logging.getLogger(__name__)

FIRES = Counter(
    "tocsin_scheduler_fires_total",
    "Fire times this replica handled, by schedule and how (due, caught_up, skipped, rescued: "
    "dispatched again after its lease lapsed).",
    ["job", "how"],
)

# Due fire times handled in one tick per schedule; the rest wait for the next tick.
MAX_FIRES_PER_TICK = 1000

# Longest sleep between two ticks of an idle replica (a bound on clock drift).
MAX_IDLE_SECONDS = 30.0

# Seconds between two logs of a failing tick.
FAILURE_LOG_INTERVAL = 30.0


def run_for(schedule: Schedule, fire: int) -> Run:
    """The run of `schedule` at `fire`; its id is the same on every replica."""
    return Run(
        run_id=f"{schedule.name}@{utc_text(fire)}",
        schedule=schedule.name,
        job=schedule.job,
        fire=fire,
        params=dict(schedule.params),
    )


class Dispatcher:
    """Evaluates `schedules` on Redis's clock, claims (and so queues) due runs, and
    re-dispatches runs whose lease lapsed."""

    def __init__(
        self,
        claims: RunClaims,
        schedules: Sequence[Schedule],
        *,
        misfire_grace: float,
        redispatch_after: float,
    ) -> None:
        self._claims = claims
        self._schedules = tuple(schedules)
        self._grace = misfire_grace
        self._redispatch_after = redispatch_after
        self._next_rescue = 0.0
        # Per schedule, its first fire time after the last evaluation (Redis clock):
        # until then there is nothing to read, so an idle replica sleeps instead.
        self._next_due: dict[str, float] = {}
        self._now = 0.0

    def publish_catalog(self) -> None:
        """Record the configured schedules so the API and CLI can list them."""
        self._claims.publish_catalog({s.name: s.describe() for s in self._schedules})

    def tick(self) -> None:
        now = self._now = self._claims.now()
        for schedule in self._schedules:
            if now < self._next_due.get(schedule.name, 0.0):
                continue
            try:
                self._evaluate(schedule, now)
            except Exception:
                log.exception("schedule evaluation failed", extra={"schedule": schedule.name})
                continue
            self._next_due[schedule.name] = schedule.next_after(now)
        if now >= self._next_rescue:
            self._next_rescue = now + self._redispatch_after / 2
            self._rescue(now)

    def run_forever(self, stop: threading.Event, interval: float) -> None:
        logged_at = float("-inf")
        while not stop.is_set():
            try:
                self.tick()
            except Exception:
                # Redis away: keep ticking (the claims make a late tick safe), but
                # log the failure once per interval of quiet, not on every tick.
                if time.monotonic() - logged_at > FAILURE_LOG_INTERVAL:
                    logged_at = time.monotonic()
                    log.exception("scheduler tick failed; retrying every tick")
                stop.wait(interval)
                continue
            # Sleep until the next fire time or rescue round, at least `interval`.
            wake = min((*self._next_due.values(), self._next_rescue))
            stop.wait(min(MAX_IDLE_SECONDS, max(interval, wake - self._now)))

    def _evaluate(self, schedule: Schedule, now: float) -> None:
        last = self._claims.last_fired(schedule.name)
        latest = int(schedule.latest_at_or_before(now))
        if last is None:
            self._claims.set_baseline(schedule.name, latest, int(schedule.next_after(latest)))
            return
        if latest <= last:
            return
        start = last
        first_due = schedule.next_after(last)
        edge = now - self._grace
        if first_due < edge:
            missed = int(schedule.latest_at_or_before(edge))
            run = run_for(schedule, missed)
            next_fire = int(schedule.next_after(missed))
            if schedule.catch_up is CatchUp.ONCE:
                if self._claims.claim(run, next_fire):
                    FIRES.labels(schedule.name, "caught_up").inc()
                    log.info("caught up a missed run", extra={"run_id": run.run_id})
            elif self._claims.skip(run, next_fire):
                FIRES.labels(schedule.name, "skipped").inc()
                log.info("skipped missed runs", extra={"run_id": run.run_id})
            start = missed
        for fire in islice(schedule.fire_times(start, now), MAX_FIRES_PER_TICK):
            run = run_for(schedule, int(fire))
            if self._claims.claim(run, int(schedule.next_after(fire))):
                FIRES.labels(schedule.name, "due").inc()

    def _rescue(self, now: float) -> None:
        """Dispatch again the runs whose lease lapsed before a worker finished them."""
        for run in self._claims.lapsed(now):
            if self._claims.redispatch(run):
                log.warning(
                    "run not finished within its lease: dispatched again",
                    extra={"run_id": run.run_id},
                )
                FIRES.labels(run.schedule, "rescued").inc()
