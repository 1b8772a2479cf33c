"""Schedules: a job, a cron expression in a time zone, and a catch-up policy.

Cron expressions have five fields (minute precision) or six with the seconds
first (`*/15 * * * * *` fires every 15 seconds). Fire times are computed in the
schedule's time zone, so `0 9 * * *` in `Europe/Paris` follows daylight saving,
and handled as Unix seconds everywhere else.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from tocsin.common.errors import ConfigError
from tocsin.scheduler.jobs import JOB_QUEUES

__all__ = [
    "DEFAULT_SCHEDULES",
    "JOB_KINDS",
    "CatchUp",
    "InvalidScheduleError",
    "Schedule",
    "load_schedules",
    "parse_schedules",
    "utc_text",
]

# The jobs a schedule may name; each runs on its queue in `tocsin.scheduler.jobs`.
JOB_KINDS = frozenset(JOB_QUEUES)


class InvalidScheduleError(ConfigError):
    """A schedule definition that cannot be used; the message names the schedule."""


class CatchUp(enum.StrEnum):
    """What to do with fire times that passed while no replica was running."""

    ONCE = "once"  # run the latest missed fire time, once
    SKIP = "skip"  # run none of them; wait for the next fire time


@dataclass(frozen=True)
class Schedule:
    """One configured schedule."""

    name: str
    job: str
    cron: str
    timezone: str = "UTC"
    catch_up: CatchUp = CatchUp.ONCE
    params: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "_-." for c in self.name):
            raise InvalidScheduleError(f"schedule name {self.name!r}: letters, digits, _-. only")
        if self.job not in JOB_KINDS:
            raise InvalidScheduleError(
                f"schedule {self.name}: unknown job {self.job!r} (one of {sorted(JOB_KINDS)})"
            )
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidScheduleError(
                f"schedule {self.name}: unknown time zone {self.timezone!r}"
            ) from None
        if not croniter.is_valid(self.cron, second_at_beginning=self._with_seconds):
            raise InvalidScheduleError(f"schedule {self.name}: invalid cron {self.cron!r}")
        try:
            self.next_after(time.time())
        except CroniterError:
            # Valid syntax that never matches, such as February 31st.
            raise InvalidScheduleError(
                f"schedule {self.name}: cron {self.cron!r} never fires"
            ) from None

    @property
    def _with_seconds(self) -> bool:
        return len(self.cron.split()) == 6

    def _iter(self, start: float, *, backwards: bool = False) -> croniter:
        moment = datetime.fromtimestamp(start, ZoneInfo(self.timezone))
        return croniter(
            self.cron, moment, is_prev=backwards, second_at_beginning=self._with_seconds
        )

    def next_after(self, moment: float) -> float:
        """The first fire time strictly after `moment`."""
        return float(self._iter(moment).get_next(float))

    def latest_at_or_before(self, moment: float) -> float:
        """The last fire time at or before `moment`."""
        # croniter's get_prev is strictly before its start, so start just after.
        return float(self._iter(moment + 0.000_001, backwards=True).get_prev(float))

    def fire_times(self, after: float, until: float) -> Iterator[float]:
        """Fire times in `(after, until]`, in order."""
        times = self._iter(after)
        while True:
            fire = float(times.get_next(float))
            if fire > until:
                return
            yield fire

    def describe(self) -> dict[str, Any]:
        """The schedule as published for `GET /v1/schedules`."""
        return {
            "name": self.name,
            "job": self.job,
            "cron": self.cron,
            "timezone": self.timezone,
            "catch_up": str(self.catch_up),
        }


DEFAULT_SCHEDULES: tuple[Schedule, ...] = (
    # Yesterday's figures, shortly after midnight UTC; a missed night is caught up.
    Schedule("daily_analytics", "daily_analytics", "10 0 * * *"),
    Schedule("pattern_detection", "pattern_detection", "*/5 * * * *", catch_up=CatchUp.SKIP),
    Schedule("cache_health", "cache_health", "* * * * *", catch_up=CatchUp.SKIP),
    Schedule("health_score", "health_score", "*/15 * * * * *", catch_up=CatchUp.SKIP),
    Schedule("retention", "retention", "20 * * * *"),
    # The episode history's backstop (resolves by people and the sweep; the processor's
    # hook brings the rest at once); the volume forecast just after each hour.
    Schedule("prediction_history", "prediction_history", "*/30 * * * * *", catch_up=CatchUp.SKIP),
    Schedule("volume_forecast", "volume_forecast", "2 * * * *", catch_up=CatchUp.SKIP),
)


def parse_schedules(text: str) -> tuple[Schedule, ...]:
    """Schedules from JSON: a list of objects with name, job, cron, timezone, catch_up, params."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidScheduleError(f"schedules are not valid JSON: {exc}") from None
    if not isinstance(raw, list):
        raise InvalidScheduleError("schedules must be a JSON list of objects")
    schedules: list[Schedule] = []
    for item in raw:
        if not isinstance(item, dict) or "cron" not in item or "job" not in item:
            raise InvalidScheduleError(f"a schedule needs at least `job` and `cron`: {item!r}")
        unknown = set(item) - {"name", "job", "cron", "timezone", "catch_up", "params"}
        if unknown:
            raise InvalidScheduleError(f"unknown schedule fields {sorted(unknown)}")
        try:
            catch_up = CatchUp(item.get("catch_up", "once"))
        except ValueError:
            raise InvalidScheduleError(
                f"catch_up must be `once` or `skip`, got {item.get('catch_up')!r}"
            ) from None
        schedules.append(
            Schedule(
                name=str(item.get("name", item["job"])),
                job=str(item["job"]),
                cron=str(item["cron"]),
                timezone=str(item.get("timezone", "UTC")),
                catch_up=catch_up,
                params=dict(item.get("params", {})),
            )
        )
    names = [s.name for s in schedules]
    if len(set(names)) != len(names):
        raise InvalidScheduleError(f"schedule names must be unique: {names}")
    return tuple(schedules)


def load_schedules(setting: str) -> tuple[Schedule, ...]:
    """The schedules named by the `TOCSIN_SCHEDULES` setting: JSON, a file path, or empty."""
    text = setting.strip()
    if not text:
        return DEFAULT_SCHEDULES
    if not text.startswith("["):
        text = Path(text).read_text()
    return parse_schedules(text)


def utc_text(moment: float) -> str:
    """`moment` as RFC 3339 UTC with seconds precision."""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
