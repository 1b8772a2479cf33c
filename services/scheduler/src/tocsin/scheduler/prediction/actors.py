"""The `prediction` queue's work: per-incident predictions, the episode history, the forecast.

`predict_incident(alert_id)` is enqueued by the processor after an incident
opens or resolves (never before its event is published); it writes the
incident's episode to the history and, while it is open, stores its prediction at
`tocsin:prediction:alert:{id}`, a key of its own so the processor stays the
single writer of the alert record, and publishes `alert.predicted` on the
alert's channels. A prediction that fails or comes late changes nothing else.

The scheduled jobs `prediction_history` (keeps the episode history) and
`volume_forecast` (hourly) run on the same queue, in the scheduler's worker
pool: the scheduler already runs low-traffic Dramatiq workers for Redis-reading
jobs with time limits and retries, while the processor and notifier pools are
sized and tuned for the hot path that predictions must stay off.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dramatiq
import msgspec
from dramatiq.brokers.redis import RedisBroker
from redis import Redis

from tocsin.common import keys
from tocsin.common.broker import PREDICT_INCIDENT_ACTOR, PREDICTION_QUEUE
from tocsin.common.events import SYSTEM_CHANNEL, EventPublisher, alert_channels
from tocsin.common.prediction import (
    PREDICTED_EVENT,
    VOLUME_EVENT,
    IncidentPrediction,
    ServiceForecast,
    VolumeForecast,
)
from tocsin.scheduler import alertdata
from tocsin.scheduler.prediction.episodes import EpisodeHistory
from tocsin.scheduler.prediction.incidents import (
    DEFAULT_MIN_EPISODES,
    DEFAULT_WINDOW_SECONDS,
    predict_incident,
)
from tocsin.scheduler.prediction.metrics import PREDICTION_SECONDS, VOLUME_STORMS
from tocsin.scheduler.prediction.volume import (
    HOUR,
    MIN_HISTORY_HOURS,
    forecast_hours,
    hourly_series,
    is_storm,
)
from tocsin.scheduler.schedule import utc_text

__all__ = ["PredictionRules", "Predictor", "declare_prediction_actors"]

log = logging.getLogger(__name__)

FORECAST_HOURS = 24
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class PredictionRules:
    """The knobs of predictions, from the scheduler's settings."""

    window_seconds: float = DEFAULT_WINDOW_SECONDS
    min_episodes: int = DEFAULT_MIN_EPISODES
    history_cap: int = 200
    ttl_seconds: int = 30 * 86_400
    volume_lookback_hours: int = 14 * 24
    volume_interval: float = 0.99
    storm_min_alerts: int = 20


class Predictor:
    """Predictions over one Redis: what the actors and jobs call."""

    def __init__(self, redis: Redis, rules: PredictionRules, clock: Callable[[], float]) -> None:
        self._redis = redis
        self._rules = rules
        self._clock = clock  # Redis's clock in service: every replica reads the same time
        self._publisher = EventPublisher(redis)
        self.history = EpisodeHistory(
            redis,
            cap=rules.history_cap,
            ttl_seconds=rules.ttl_seconds,
            lookback_seconds=rules.volume_lookback_hours * HOUR,
        )

    def predict(self, alert_id: str, now: float | None = None) -> IncidentPrediction | None:
        """Record incident `alert_id`'s episode; while it is open, predict, store and publish.

        None when the incident is gone or already over.
        """
        started = time.perf_counter()
        raw = self._redis.get(keys.alert(alert_id))
        record = None if raw is None else alertdata.decode_alert(raw)
        if record is None:
            return None
        self.history.record([record])
        if record.status == "resolved":
            return None
        now = self._clock() if now is None else now
        prediction = predict_incident(
            alert_id,
            self.history.history(record.fingerprint, record.name, record.service),
            now,
            utc_text(now),
            window_seconds=self._rules.window_seconds,
            min_episodes=self._rules.min_episodes,
        )
        body = _encoder.encode(prediction)
        event = b'{"type":"' + PREDICTED_EVENT.encode() + b'","alert_id":'
        event += json.dumps(alert_id).encode() + b',"prediction":' + body + b"}"
        # Stored, then published, in one round trip.
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(keys.prediction(alert_id), body, ex=self._rules.ttl_seconds)
        self._publisher.publish(
            alert_channels(record.service, record.severity, record.team),
            event.decode(),
            pipeline=pipe,
        )
        pipe.execute()
        PREDICTION_SECONDS.observe(time.perf_counter() - started)
        return prediction

    def refresh_history(self) -> dict[str, Any]:
        return dict(self.history.refresh(self._clock()).as_dict())

    def forecast_volume(self, now: float | None = None) -> VolumeForecast:
        """Forecast every counted service, store the result and publish it on `system`."""
        now = self._clock() if now is None else now
        current_hour = int(now // HOUR * HOUR)
        first_hour = current_hour - self._rules.volume_lookback_hours * HOUR
        members: set[bytes] = self._redis.smembers(  # type: ignore[assignment]
            keys.prediction_counted_services()
        )
        services = sorted(member.decode() for member in members)
        forecasts: list[ServiceForecast] = []
        skipped: dict[str, str] = {}
        for service in services:
            raw: dict[bytes, bytes] = self._redis.hgetall(  # type: ignore[assignment]
                keys.prediction_counts(service)
            )
            counts = {int(hour): int(count) for hour, count in raw.items()}
            stale = [str(hour) for hour in counts if hour < first_hour]
            if stale:
                self._redis.hdel(keys.prediction_counts(service), *stale)
            seen = [hour for hour in counts if hour >= first_hour]
            if not seen:
                self._redis.srem(keys.prediction_counted_services(), service)
                continue
            start = min(seen)
            if (current_hour - start) // HOUR < MIN_HISTORY_HOURS + 1:
                skipped[service] = f"fewer than {MIN_HISTORY_HOURS} hours of history"
                continue
            series = hourly_series(counts, start, current_hour)
            forecast = forecast_volume_of(
                service, series, current_hour, self._rules.volume_interval,
                self._rules.storm_min_alerts,
            )  # fmt: skip
            forecasts.append(forecast)
        result = VolumeForecast(
            forecast_at=utc_text(now),
            interval=self._rules.volume_interval,
            services=forecasts,
            storms=[f.service for f in forecasts if f.storm],
            skipped=skipped,
        )
        VOLUME_STORMS.set(len(result.storms))
        body = _encoder.encode(result)
        self._redis.set(keys.prediction_volume(), body)
        event = b'{"type":"' + VOLUME_EVENT.encode() + b'","forecast":' + body + b"}"
        self._publisher.publish([SYSTEM_CHANNEL], event.decode())
        return result


def forecast_volume_of(
    service: str, series: list[float], current_hour: int, interval: float, storm_min_alerts: int
) -> ServiceForecast:
    """One service's forecast from its hourly counts up to (not including) `current_hour`.

    The last complete hour is left out of the fit and judged against it.
    """
    hours = forecast_hours(series[:-1], FORECAST_HOURS + 1, interval)
    last, ahead = hours[0], hours[1:]
    return ServiceForecast(
        service=service,
        hours=[utc_text(current_hour + n * HOUR) for n in range(FORECAST_HOURS)],
        expected=[round(h.expected, 2) for h in ahead],
        lower=[round(h.lower, 2) for h in ahead],
        upper=[round(h.upper, 2) for h in ahead],
        last_hour=utc_text(current_hour - HOUR),
        last_hour_count=int(series[-1]),
        last_hour_upper=round(last.upper, 2),
        storm=is_storm(series[-1], last, storm_min_alerts),
    )


def declare_prediction_actors(broker: RedisBroker, predictor: Predictor) -> None:
    """Declare `predict_incident` on the `prediction` queue of `broker`."""

    def perform(alert_id: str) -> None:
        predictor.predict(alert_id)

    perform.__name__ = PREDICT_INCIDENT_ACTOR
    dramatiq.actor(
        actor_name=PREDICT_INCIDENT_ACTOR,
        queue_name=PREDICTION_QUEUE,
        broker=broker,
        # A late prediction is worth little: few quick retries, then give up.
        time_limit=10_000,
        max_retries=2,
        min_backoff=500,
        max_backoff=2_000,
    )(perform)
