"""Unit tests: schedule parsing, cron evaluation in time zones, and the dispatcher's decisions.

The dispatcher is driven with an in-memory stand-in for the Redis claims (pure
logic); the real claims run against Redis in tests/integration/test_scheduler_*.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tocsin.scheduler.analytics import duration_stats
from tocsin.scheduler.dispatch import Dispatcher, run_for
from tocsin.scheduler.jobs import Run
from tocsin.scheduler.retention import frame_time
from tocsin.scheduler.schedule import (
    DEFAULT_SCHEDULES,
    CatchUp,
    InvalidScheduleError,
    Schedule,
    load_schedules,
    parse_schedules,
)


def _at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_empty_setting_gives_the_built_in_schedules() -> None:
    assert load_schedules("") == DEFAULT_SCHEDULES
    assert {s.job for s in DEFAULT_SCHEDULES} == {
        "daily_analytics", "pattern_detection", "cache_health", "health_score", "retention",
        "prediction_history", "volume_forecast",
    }  # fmt: skip


def test_schedules_parse_from_json_with_defaults_and_from_a_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    text = json.dumps([{"job": "retention", "cron": "0 3 * * *", "timezone": "Europe/Paris",
                        "catch_up": "skip", "params": {"x": 1}}])  # fmt: skip
    (schedule,) = parse_schedules(text)
    assert schedule.name == "retention"
    assert schedule.catch_up is CatchUp.SKIP
    assert schedule.params == {"x": 1}
    path = tmp_path / "schedules.json"
    path.write_text(text)
    assert load_schedules(str(path)) == (schedule,)


@pytest.mark.parametrize(
    "item",
    [
        {"job": "nope", "cron": "* * * * *"},
        {"job": "retention", "cron": "61 * * * *"},
        {"job": "retention", "cron": "0 0 31 2 *"},
        {"job": "retention", "cron": "* * * * *", "timezone": "Mars/Olympus"},
        {"job": "retention", "cron": "* * * * *", "catch_up": "always"},
        {"job": "retention", "cron": "* * * * *", "colour": "red"},
        {"job": "retention"},
    ],
)
def test_invalid_schedule_is_refused_with_a_message(item: dict[str, object]) -> None:
    with pytest.raises(InvalidScheduleError):
        parse_schedules(json.dumps([item]))


def test_duplicate_schedule_names_are_refused() -> None:
    item = {"job": "retention", "cron": "* * * * *"}
    with pytest.raises(InvalidScheduleError, match="unique"):
        parse_schedules(json.dumps([item, item]))


def test_cron_in_a_time_zone_follows_daylight_saving() -> None:
    nine_paris = Schedule("s", "retention", "0 9 * * *", timezone="Europe/Paris")
    # Before the switch to summer time 09:00 Paris is 08:00 UTC, after it 07:00 UTC.
    assert nine_paris.next_after(_at("2026-03-28T12:00:00")) == _at("2026-03-29T07:00:00")
    assert nine_paris.next_after(_at("2026-03-27T12:00:00")) == _at("2026-03-28T08:00:00")


def test_six_field_cron_has_seconds_first() -> None:
    every_15s = Schedule("s", "health_score", "*/15 * * * * *")
    start = _at("2026-11-26T10:00:01")
    assert list(every_15s.fire_times(start, start + 30)) == [start + 14, start + 29]
    assert every_15s.latest_at_or_before(start + 14) == start + 14


@settings(max_examples=50)
@given(st.integers(min_value=1_700_000_000, max_value=1_900_000_000))
def test_latest_fire_at_or_before_is_the_one_before_the_next(moment: int) -> None:
    schedule = Schedule("s", "retention", "*/7 3-5 * * *")
    latest = schedule.latest_at_or_before(moment)
    assert latest <= moment < schedule.next_after(latest)


class MemoryClaims:
    """The claim rules of claims/claim.lua, in memory."""

    def __init__(self, now: float, last_fired: int | None) -> None:
        self.clock = now
        self.last: int | None = last_fired
        self.claimed: set[int] = set()
        self.runs: list[Run] = []
        self.skipped: list[int] = []

    def now(self) -> float:
        return self.clock

    def last_fired(self, schedule: str) -> int | None:
        return self.last

    def set_baseline(self, schedule: str, fire: int, next_fire: int) -> None:
        if self.last is None:
            self.last = fire

    def _take(self, run: Run) -> bool:
        if (self.last is not None and run.fire <= self.last) or run.fire in self.claimed:
            return False
        self.claimed.add(run.fire)
        self.last = run.fire
        return True

    def claim(self, run: Run, next_fire: int) -> bool:
        if self._take(run):
            self.runs.append(run)  # claiming queues the run in the same step
            return True
        return False

    def skip(self, run: Run, next_fire: int) -> bool:
        if self._take(run):
            self.skipped.append(run.fire)
            return True
        return False

    def lapsed(self, now: float) -> list[Run]:
        return []


def _dispatch(schedule: Schedule, claims: MemoryClaims) -> list[Run]:
    """The runs one tick queues."""
    before = len(claims.runs)
    dispatcher = Dispatcher(
        claims,  # type: ignore[arg-type]
        [schedule],
        misfire_grace=10,
        redispatch_after=5,
    )
    dispatcher.tick()
    return claims.runs[before:]


def test_first_start_sets_a_baseline_and_owes_nothing() -> None:
    claims = MemoryClaims(_at("2026-11-26T10:00:30"), None)
    assert _dispatch(Schedule("s", "retention", "* * * * *"), claims) == []
    assert claims.last == _at("2026-11-26T10:00:00")


def test_due_fire_times_within_grace_are_each_enqueued_in_order() -> None:
    now = _at("2026-11-26T10:00:05.5")
    claims = MemoryClaims(now, int(now) - 4)
    enqueued = _dispatch(Schedule("s", "cache_health", "* * * * * *"), claims)
    assert [r.fire for r in enqueued] == [int(now) - 3, int(now) - 2, int(now) - 1, int(now)]


def test_missed_fire_times_are_caught_up_once_under_the_once_policy() -> None:
    claims = MemoryClaims(_at("2026-11-26T10:30:00"), int(_at("2026-11-26T07:00:00")))
    enqueued = _dispatch(Schedule("s", "retention", "0 * * * *"), claims)
    assert [r.run_id for r in enqueued] == ["s@2026-11-26T10:00:00Z"]
    assert claims.skipped == []


def test_missed_fire_times_are_skipped_under_the_skip_policy() -> None:
    claims = MemoryClaims(_at("2026-11-26T10:30:00"), int(_at("2026-11-26T07:00:00")))
    schedule = Schedule("s", "retention", "0 * * * *", catch_up=CatchUp.SKIP)
    assert _dispatch(schedule, claims) == []
    assert claims.skipped == [int(_at("2026-11-26T10:00:00"))]
    # The next tick owes nothing either.
    assert _dispatch(schedule, claims) == []


def test_a_fire_time_already_claimed_elsewhere_is_not_enqueued_again() -> None:
    now = _at("2026-11-26T10:00:00")
    claims = MemoryClaims(now, int(now) - 1)
    claims.claimed.add(int(now))
    assert _dispatch(Schedule("s", "cache_health", "* * * * * *"), claims) == []


def test_run_id_names_the_schedule_and_the_fire_time_in_utc() -> None:
    schedule = Schedule("nightly", "retention", "0 3 * * *", timezone="Europe/Paris")
    assert run_for(schedule, int(_at("2026-11-26T02:00:00"))).run_id == (
        "nightly@2026-11-26T02:00:00Z"
    )


def test_duration_stats_use_the_nearest_rank_p95() -> None:
    values = [float(v) for v in range(1, 21)]
    assert duration_stats(values) == {"count": 20, "mean_seconds": 10.5, "p95_seconds": 19.0}
    assert duration_stats([]) == {"count": 0, "mean_seconds": None, "p95_seconds": None}


def test_frame_time_reads_the_event_time_or_gives_none() -> None:
    assert frame_time(json.dumps({"data": {"received_at": 12.5}})) == 12.5
    assert frame_time(json.dumps({"data": {"alert": {"updated_ts": 7}}})) == 7.0
    assert frame_time(json.dumps({"data": {"type": "health.changed"}})) is None
    assert frame_time(b"not json") is None


def test_catch_up_runs_the_latest_missed_time_then_the_fire_time_that_is_due() -> None:
    # 08:00 and 09:00 were missed; 10:00 is five seconds old, within the grace: due.
    claims = MemoryClaims(_at("2026-11-26T10:00:05"), int(_at("2026-11-26T07:00:00")))
    enqueued = _dispatch(Schedule("s", "retention", "0 * * * *"), claims)
    assert [r.run_id for r in enqueued] == ["s@2026-11-26T09:00:00Z", "s@2026-11-26T10:00:00Z"]
