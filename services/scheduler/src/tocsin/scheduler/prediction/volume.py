"""The hourly alert-volume forecast per service, and the storm flag it gives.

Each service's incidents opened per hour (kept by `episodes`) over the last
days are fitted with an additive exponential-smoothing (ETS) model with a
24-hour season, from statsmodels. The fit leaves out the last complete hour;
the model's prediction interval for that hour is the storm test: a count
above its upper bound (and at least `storm_min_alerts`) is a likely storm.
The same fit then forecasts the next 24 hours.

statsmodels rather than statsforecast: statsforecast depends on statsmodels
itself plus numba and llvmlite (more weight in the image, and seconds of JIT
compilation when a worker first forecasts), while one ETS fit of two weeks of
hours takes statsmodels well under a second.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "HOUR",
    "MIN_HISTORY_HOURS",
    "HourForecast",
    "forecast_hours",
    "hourly_series",
    "is_storm",
]

HOUR = 3600
SEASON = 24
# Two seasons initialise the seasonal terms; a third lets the fit see a repeat.
MIN_HISTORY_HOURS = 3 * SEASON


@dataclass(frozen=True, slots=True)
class HourForecast:
    """Expected count of one hour and its prediction interval (never below 0)."""

    expected: float
    lower: float
    upper: float


def hourly_series(counts: Mapping[int, int], first_hour: int, end_hour: int) -> list[float]:
    """Counts of every hour from `first_hour` up to (not including) `end_hour`, 0 where none."""
    return [float(counts.get(hour, 0)) for hour in range(first_hour, end_hour, HOUR)]


def forecast_hours(
    history: Sequence[float], steps: int, interval: float = 0.99
) -> list[HourForecast]:
    """The `steps` hours after `history` (hourly counts, oldest first)."""
    if len(history) < MIN_HISTORY_HOURS:
        raise ValueError(f"need at least {MIN_HISTORY_HOURS} hours of history")
    # Imported here: the scheduler's other jobs need none of numpy/statsmodels.
    import pandas as pd
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    # A Series: statsmodels' ETS prediction results need an index to label rows.
    series = pd.Series(history, dtype=float)
    model = ETSModel(
        series,
        error="add",
        trend=None,
        seasonal="add",
        seasonal_periods=SEASON,
        initialization_method="heuristic",
    )
    with warnings.catch_warnings():
        # Convergence chatter on flat series; the forecast is still usable.
        warnings.simplefilter("ignore")
        fitted = model.fit(disp=False)
        frame = fitted.get_prediction(start=len(series), end=len(series) + steps - 1)
        summary = frame.summary_frame(alpha=1.0 - interval)
    return [
        HourForecast(max(0.0, float(mean)), max(0.0, float(low)), max(0.0, float(high)))
        for mean, low, high in zip(
            summary["mean"], summary["pi_lower"], summary["pi_upper"], strict=True
        )
    ]


def is_storm(count: float, hour: HourForecast, min_alerts: int) -> bool:
    """Whether `count` alerts in an hour leave its forecast's interval upwards enough to matter."""
    return count > hour.upper and count >= min_alerts
