"""The stored shape of predictions, shared by their writer and their readers.

The scheduler's prediction jobs write an `IncidentPrediction` at
`tocsin:prediction:{alert_id}` and a `VolumeForecast` at
`tocsin:prediction:volume`; the gateway serves them and the notifier's
auto-pause reads the first. Times are seconds; `None` means unknown (too
little history, or the incidents seen so far all outlived the estimate).
"""

from __future__ import annotations

import msgspec

__all__ = [
    "PREDICTED_EVENT",
    "VOLUME_EVENT",
    "IncidentPrediction",
    "ServiceForecast",
    "VolumeForecast",
]

PREDICTED_EVENT = "alert.predicted"
VOLUME_EVENT = "volume.forecast"


class IncidentPrediction(msgspec.Struct, kw_only=True):
    """How long one incident is expected to last, from the episodes before it.

    `level` names the history it rests on: `fingerprint` (the same alert's
    past episodes), `alertname+service`, `alertname`, or `none` when no level
    had `min_episodes` episodes; then `enough_history` is false and no
    estimate is given.
    """

    alert_id: str
    predicted_at: str
    level: str
    episodes: int
    resolved_episodes: int
    enough_history: bool
    min_episodes: int
    window_seconds: float
    transient_probability: float | None = None
    median_seconds: float | None = None
    p90_seconds: float | None = None


class ServiceForecast(msgspec.Struct, kw_only=True):
    """One service's expected alert counts for the next hours, and its storm verdict."""

    service: str
    hours: list[str]  # RFC 3339 start of each forecast hour
    expected: list[float]
    lower: list[float]
    upper: list[float]
    last_hour: str
    last_hour_count: int
    last_hour_upper: float
    storm: bool


class VolumeForecast(msgspec.Struct, kw_only=True):
    """The latest hourly volume forecast of every service with enough history."""

    forecast_at: str
    interval: float  # the prediction interval's coverage, e.g. 0.99
    services: list[ServiceForecast]
    storms: list[str]
    skipped: dict[str, str] = msgspec.field(default_factory=dict)  # service -> why
