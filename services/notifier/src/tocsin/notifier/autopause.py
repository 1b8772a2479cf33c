"""Auto-pause: hold the page of an incident predicted to resolve by itself.

A route with `pause_if_transient: {probability: 0.8, for: 5m}` holds the
firing page of an incident whose prediction (written by the scheduler at
`tocsin:prediction:alert:{id}`, docs/prediction.md) says it ends by itself
within the prediction window with at least that probability. If it resolves
within the pause, nothing is paged and its notification log says "paused,
resolved during pause"; otherwise the page goes out when the pause ends,
listing the alert in the notification's `paused` ids.

Never paused: an incident with no prediction yet or with too little history
(the prediction's `enough_history`), a severity in `skip_severities`, or a
route that sets `pause_if_transient: false` (children inherit the parent's).

`decide_firing` is the decision, pure; `PauseGate` applies it in a group
flush and keeps, per paused alert, the end of its pause
(`tocsin:notify:pause:{alert_id}`) so a later flush and the resolve agree.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from redis import Redis

from tocsin.common import keys as common_keys
from tocsin.common.prediction import IncidentPrediction
from tocsin.notifier.message import GroupedAlert

__all__ = [
    "GateResult",
    "PauseDecision",
    "PauseGate",
    "PausePolicy",
    "Verdict",
    "decide_firing",
    "parse_pause_policy",
]

_prediction_decoder = msgspec.json.Decoder(IncidentPrediction)
RESOLVED_DURING_PAUSE = "paused, resolved during pause"


@dataclass(frozen=True)
class PausePolicy:
    """A route's `pause_if_transient` option."""

    probability: float
    hold_seconds: float
    skip_severities: frozenset[str] = frozenset()


def parse_pause_policy(raw: Any, parse_duration: Callable[[str], float]) -> PausePolicy | None:
    """The policy from its YAML value: a mapping, or `false` to opt a route out (None)."""
    if raw is False or raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError("pause_if_transient: expected {probability, for} or false")
    unknown = set(raw) - {"probability", "for", "skip_severities"}
    if unknown:
        raise ValueError(f"pause_if_transient: unknown keys {sorted(unknown)}")
    try:
        probability = float(raw.get("probability", 0.8))
    except (TypeError, ValueError):
        raise ValueError("pause_if_transient.probability: expected a number") from None
    if not 0.5 <= probability <= 1.0:
        raise ValueError("pause_if_transient.probability: expected 0.5 to 1")
    hold = parse_duration(str(raw.get("for", "5m")))
    if not 0 < hold <= 3600:
        raise ValueError("pause_if_transient.for: expected more than 0 and at most 1h")
    skip = raw.get("skip_severities", [])
    if not isinstance(skip, list) or not all(isinstance(s, str) for s in skip):
        raise ValueError("pause_if_transient.skip_severities: expected a list of severities")
    return PausePolicy(probability, hold, frozenset(skip))


class Verdict(enum.StrEnum):
    """What a flush does with one firing alert's page."""

    SEND = "send"
    HOLD = "hold"
    SEND_AFTER_PAUSE = "send-after-pause"


@dataclass(frozen=True)
class PauseDecision:
    """A verdict, why, and (for a hold) when the pause ends."""

    verdict: Verdict
    reason: str
    until: float | None = None


def decide_firing(
    policy: PausePolicy | None,
    prediction: IncidentPrediction | None,
    severity: str,
    opened_at: float,
    now: float,
) -> PauseDecision:
    """Whether a firing alert's first page may be held, from its prediction (pure)."""
    if policy is None:
        return PauseDecision(Verdict.SEND, "no pause on this route")
    if severity in policy.skip_severities:
        return PauseDecision(Verdict.SEND, f"severity {severity} is never paused")
    if prediction is None:
        return PauseDecision(Verdict.SEND, "no prediction yet")
    if not prediction.enough_history or prediction.transient_probability is None:
        return PauseDecision(Verdict.SEND, "too little history to predict")
    if prediction.transient_probability < policy.probability:
        return PauseDecision(
            Verdict.SEND, f"transient probability {prediction.transient_probability:.2f} too low"
        )
    until = opened_at + policy.hold_seconds
    if now >= until:
        return PauseDecision(Verdict.SEND, "its pause would already be over")
    reason = (
        f"predicted transient (p={prediction.transient_probability:.2f} from "
        f"{prediction.episodes} episodes, {prediction.level})"
    )
    return PauseDecision(Verdict.HOLD, reason, until)


@dataclass(frozen=True)
class GateResult:
    """What a flush may send now, which alerts were paged late, and when to look again."""

    firing: list[GroupedAlert]
    resolved: list[GroupedAlert]
    paused: list[str]  # alert ids whose page was held and goes out now
    resume_at: float | None


class PauseGate:
    """Applies a route's pause policy to a group's alerts in a flush."""

    def __init__(self, redis: Redis, retention_seconds: int = 7 * 86_400) -> None:
        self._redis = redis
        self._retention = retention_seconds

    def apply(
        self,
        policy: PausePolicy | None,
        receiver: str,
        firing: Sequence[GroupedAlert],
        resolved: Sequence[GroupedAlert],
        now: float,
    ) -> GateResult:
        """Hold paused pages; drop the resolve of an alert whose page never went out."""
        everyone = [*firing, *resolved]
        if not everyone:
            return GateResult(list(firing), list(resolved), [], None)
        pipe = self._redis.pipeline(transaction=False)
        for item in everyone:
            pipe.get(common_keys.notify_pause(item.alert.id))
        if policy is not None:
            for item in firing:
                pipe.get(common_keys.prediction(item.alert.id))
        replies = pipe.execute()
        pauses = {
            item.alert.id: float(raw)
            for item, raw in zip(everyone, replies[: len(everyone)], strict=True)
            if raw is not None
        }
        predictions = replies[len(everyone) :]
        send: list[GroupedAlert] = []
        late: list[str] = []
        resume_at: float | None = None
        for n, item in enumerate(firing):
            until = pauses.get(item.alert.id)
            if until is None and policy is not None:
                raw = predictions[n]
                prediction = None
                if raw is not None:
                    try:
                        prediction = _prediction_decoder.decode(raw)
                    except msgspec.DecodeError:
                        prediction = None
                decision = decide_firing(
                    policy, prediction, item.alert.severity, item.alert.first_seen_ts, now
                )
                if decision.verdict is Verdict.HOLD and decision.until is not None:
                    until = decision.until
                    self._hold(item.alert.id, receiver, until, decision.reason, now)
            if until is None:
                send.append(item)
            elif now < until:
                resume_at = until if resume_at is None else min(resume_at, until)
            else:
                send.append(item)
                late.append(item.alert.id)
        told: list[GroupedAlert] = []
        for item in resolved:
            until = pauses.get(item.alert.id)
            if until is not None and item.at <= until:
                self._note(item.alert.id, receiver, RESOLVED_DURING_PAUSE, now, once=True)
            else:
                told.append(item)
        return GateResult(send, told, late, resume_at)

    def _hold(self, alert_id: str, receiver: str, until: float, reason: str, now: float) -> None:
        if self._redis.set(
            common_keys.notify_pause(alert_id), repr(until), nx=True, ex=self._retention
        ):
            self._note(alert_id, receiver, f"paused until {until:.0f}: {reason}", now)

    def _note(
        self, alert_id: str, receiver: str, outcome: str, now: float, *, once: bool = False
    ) -> None:
        if once and not self._redis.set(
            common_keys.notify_pause_told(alert_id), "1", nx=True, ex=self._retention
        ):
            return
        entry = json.dumps(
            {"receiver": receiver, "outcome": outcome, "status": "paused", "at": now}
        )
        log_key = common_keys.notification_log(alert_id)
        pipe = self._redis.pipeline(transaction=False)
        pipe.lpush(log_key, entry)
        pipe.ltrim(log_key, 0, 99)
        pipe.expire(log_key, self._retention)
        pipe.execute()
