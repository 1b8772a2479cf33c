"""One incident's prediction from the episodes that came before it (pure).

An episode is one incident of an alert: from its first firing to its
resolution. An episode resolved by its producer (or by Tocsin's auto-resolve
when the producer went quiet) ended by itself: an *observed* end. One still
open, or resolved by a person, is *censored* at its age or at the person's
resolve: it lasted at least that long, and would have lasted an unknown time
more. The estimate is a Kaplan-Meier curve over those durations.

History is looked up from the most specific level to the least: the same
fingerprint, then the same alertname and service, then the alertname; the
first level with `min_episodes` episodes is used and named in the prediction.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tocsin.common.prediction import IncidentPrediction
from tocsin.scheduler.prediction.survival import kaplan_meier

__all__ = [
    "DEFAULT_MIN_EPISODES",
    "DEFAULT_WINDOW_SECONDS",
    "Episode",
    "Level",
    "predict_incident",
]

DEFAULT_WINDOW_SECONDS = 300.0
DEFAULT_MIN_EPISODES = 5


class Level(enum.StrEnum):
    """Which past episodes a prediction rests on, most specific first."""

    FINGERPRINT = "fingerprint"
    NAME_SERVICE = "alertname+service"
    NAME = "alertname"


@dataclass(frozen=True, slots=True)
class Episode:
    """One past incident: when it opened, when it ended (None: still open) and how."""

    alert_id: str
    start: float
    end: float | None = None
    self_resolved: bool = True  # False: a person resolved it, so its end is censored

    def duration(self, now: float) -> tuple[float, bool]:
        """(seconds it lasted or has lasted so far, whether its end was observed)."""
        if self.end is None:
            return max(0.0, now - self.start), False
        return max(0.0, self.end - self.start), self.self_resolved


def predict_incident(
    alert_id: str,
    history: Mapping[Level, Sequence[Episode]],
    now: float,
    predicted_at: str,
    *,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
    min_episodes: int = DEFAULT_MIN_EPISODES,
) -> IncidentPrediction:
    """The prediction for incident `alert_id` (which is left out of its own history)."""
    level: Level | None = None
    episodes: list[Episode] = []
    for candidate in Level:
        found = [e for e in history.get(candidate, ()) if e.alert_id != alert_id]
        if len(found) >= min_episodes:
            level, episodes = candidate, found
            break
        if len(found) > len(episodes):
            episodes = found  # reported with `none`: what the best level had
    outcomes = [e.duration(now) for e in episodes]
    if level is None:
        return IncidentPrediction(
            alert_id=alert_id,
            predicted_at=predicted_at,
            level="none",
            episodes=len(episodes),
            resolved_episodes=sum(1 for _, ended in outcomes if ended),
            enough_history=False,
            min_episodes=min_episodes,
            window_seconds=window_seconds,
        )
    curve = kaplan_meier([d for d, _ in outcomes], [ended for _, ended in outcomes])
    return IncidentPrediction(
        alert_id=alert_id,
        predicted_at=predicted_at,
        level=str(level),
        episodes=len(episodes),
        resolved_episodes=sum(1 for _, ended in outcomes if ended),
        enough_history=True,
        min_episodes=min_episodes,
        window_seconds=window_seconds,
        transient_probability=round(1.0 - curve.survival_at(window_seconds), 4),
        median_seconds=curve.quantile(0.5),
        p90_seconds=curve.quantile(0.9),
    )
