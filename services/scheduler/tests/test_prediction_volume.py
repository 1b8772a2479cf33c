"""The volume forecast on synthetic seasonal series with a known shape."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tocsin.scheduler.prediction.volume import (
    MIN_HISTORY_HOURS,
    forecast_hours,
    hourly_series,
    is_storm,
)

DAYS = 14


def daily_mean(hour: int) -> float:
    """20 alerts an hour on average, 5 at night, 35 in the afternoon."""
    return 20 + 15 * math.sin(2 * math.pi * (hour % 24) / 24)


def poisson_hours(count: int, seed: int, start: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    return [float(rng.poisson(daily_mean(h))) for h in range(start, start + count)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_forecast_follows_the_daily_shape_within_three_alerts_an_hour(seed: int) -> None:
    history = poisson_hours(DAYS * 24, seed)
    ahead = forecast_hours(history, 24)
    errors = [abs(h.expected - daily_mean(DAYS * 24 + n)) for n, h in enumerate(ahead)]
    # The stated bound: mean absolute error against the true mean under 2 alerts an
    # hour, none over 5 (Poisson noise alone has a standard deviation of 2-6).
    assert sum(errors) / len(errors) < 2.0
    assert max(errors) < 5.0
    assert all(h.lower <= h.expected <= h.upper for h in ahead)


def test_an_injected_storm_is_flagged_and_no_hour_of_a_normal_day_is() -> None:
    series = poisson_hours((DAYS + 1) * 24, seed=11)
    flagged = []
    for hour in range(DAYS * 24, (DAYS + 1) * 24):
        [judged] = forecast_hours(series[:hour], 1)
        if is_storm(series[hour], judged, min_alerts=20):
            flagged.append(hour)
    assert flagged == []
    [judged] = forecast_hours(series[: DAYS * 24 + 14], 1)
    storm = 5 * daily_mean(DAYS * 24 + 14)
    assert is_storm(storm, judged, min_alerts=20)


def test_a_small_excess_below_the_minimum_is_not_a_storm() -> None:
    quiet = [1.0 if h % 24 == 3 else 0.0 for h in range(DAYS * 24)]
    [judged] = forecast_hours(quiet, 1)
    assert not is_storm(12, judged, min_alerts=20)
    assert is_storm(25, judged, min_alerts=20)


def test_too_short_a_history_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        forecast_hours([1.0] * (MIN_HISTORY_HOURS - 1), 24)


def test_hourly_series_fills_missing_hours_with_zero() -> None:
    assert hourly_series({0: 3, 7200: 1}, 0, 4 * 3600) == [3.0, 0.0, 1.0, 0.0]
