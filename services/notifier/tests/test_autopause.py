"""Auto-pause's decision and its routing option, as pure logic."""

from __future__ import annotations

import pytest

from tocsin.common.prediction import IncidentPrediction
from tocsin.notifier.autopause import (
    PausePolicy,
    Verdict,
    decide_firing,
    parse_pause_policy,
)
from tocsin.notifier.routing import RoutesError, load_routing, parse_duration

POLICY = PausePolicy(probability=0.8, hold_seconds=300)
OPENED = 1_800_000_000.0


def prediction(p: float | None = 0.95, *, enough: bool = True) -> IncidentPrediction:
    return IncidentPrediction(
        alert_id="a", predicted_at="t", level="fingerprint" if enough else "none",
        episodes=30 if enough else 2, resolved_episodes=30 if enough else 2,
        enough_history=enough, min_episodes=5, window_seconds=300,
        transient_probability=p if enough else None,
    )  # fmt: skip


def test_a_likely_transient_incident_is_held_until_the_pause_ends() -> None:
    decision = decide_firing(POLICY, prediction(0.95), "critical", OPENED, OPENED + 30)
    assert decision.verdict is Verdict.HOLD
    assert decision.until == OPENED + 300
    assert "30 episodes" in decision.reason


@pytest.mark.parametrize(
    ("policy", "predicted", "severity", "why"),
    [
        (None, prediction(0.99), "critical", "no pause"),
        (POLICY, None, "critical", "no prediction"),
        (POLICY, prediction(enough=False), "critical", "too little history"),
        (POLICY, prediction(0.5), "critical", "too low"),
        (PausePolicy(0.8, 300, frozenset({"critical"})), prediction(0.99), "critical", "never"),
    ],
)
def test_pages_go_out_at_once_without_a_confident_prediction_or_when_opted_out(
    policy: PausePolicy | None, predicted: IncidentPrediction | None, severity: str, why: str
) -> None:
    decision = decide_firing(policy, predicted, severity, OPENED, OPENED + 1)
    assert decision.verdict is Verdict.SEND
    assert why in decision.reason


def test_a_pause_that_would_already_be_over_does_not_hold() -> None:
    decision = decide_firing(POLICY, prediction(0.99), "critical", OPENED, OPENED + 301)
    assert decision.verdict is Verdict.SEND


def test_policy_parsing_accepts_the_documented_shape_and_refuses_nonsense() -> None:
    policy = parse_pause_policy(
        {"probability": 0.9, "for": "2m", "skip_severities": ["critical"]}, parse_duration
    )
    assert policy == PausePolicy(0.9, 120.0, frozenset({"critical"}))
    assert parse_pause_policy(False, parse_duration) is None
    for bad, message in [
        ({"probability": 0.2}, "0.5 to 1"),
        ({"for": "2h"}, "at most 1h"),
        ({"every": "5m"}, "unknown keys"),
        ("yes", "expected"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_pause_policy(bad, parse_duration)


def test_routes_inherit_the_pause_and_a_child_can_opt_out() -> None:
    config = load_routing(
        """
route:
  receiver: pager
  pause_if_transient: {probability: 0.8, for: 5m}
  routes:
    - matchers: [team=db]
    - matchers: [team=web]
      pause_if_transient: false
receivers:
  - {name: pager, type: webhook, url: "http://127.0.0.1:9/"}
"""
    )
    root = config.root
    assert root.pause_if_transient == PausePolicy(0.8, 300.0)
    assert root.routes[0].pause_if_transient == root.pause_if_transient
    assert root.routes[1].pause_if_transient is None


def test_a_bad_pause_option_is_refused_with_its_line() -> None:
    with pytest.raises(RoutesError, match=r"4: pause_if_transient.probability"):
        load_routing(
            """
route:
  receiver: pager
  pause_if_transient: {probability: 3}
receivers:
  - {name: pager, type: webhook, url: "http://127.0.0.1:9/"}
"""
        )
