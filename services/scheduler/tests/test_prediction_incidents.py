"""Incident predictions from seeded histories whose answers are known."""

from __future__ import annotations

import random

import pytest

from tocsin.scheduler.prediction.incidents import Episode, Level, predict_incident
from tocsin.scheduler.prediction.survival import kaplan_meier

NOW = 1_800_000_000.0


def closed(durations: list[float], *, self_resolved: bool = True) -> list[Episode]:
    return [
        Episode(f"past-{n}", NOW - 86_400 + n * 600, NOW - 86_400 + n * 600 + d, self_resolved)
        for n, d in enumerate(durations)
    ]


def around(seconds: float, count: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [seconds * rng.uniform(0.8, 1.2) for _ in range(count)]


def test_thirty_two_minute_episodes_predict_two_minutes_and_transient() -> None:
    p = predict_incident("current", {Level.FINGERPRINT: closed(around(120, 30, 1))}, NOW, "t")
    assert p.level == "fingerprint"
    assert p.episodes == 30
    assert p.resolved_episodes == 30
    assert p.enough_history
    assert p.median_seconds is not None
    assert 110 <= p.median_seconds <= 130
    assert p.p90_seconds is not None
    assert p.median_seconds < p.p90_seconds <= 144
    assert p.transient_probability == 1.0


def test_hour_long_episodes_are_not_transient() -> None:
    p = predict_incident("current", {Level.FINGERPRINT: closed(around(3600, 30, 2))}, NOW, "t")
    assert p.transient_probability == 0.0
    assert p.median_seconds is not None
    assert 3000 <= p.median_seconds <= 4200


def test_mixed_history_gives_the_share_resolved_within_the_window() -> None:
    durations = [60.0] * 12 + [7200.0] * 28  # 30% end within 5 minutes
    p = predict_incident("current", {Level.FINGERPRINT: closed(durations)}, NOW, "t")
    assert p.transient_probability == pytest.approx(0.3)
    assert p.median_seconds == 7200.0


def test_window_is_honoured() -> None:
    durations = [60.0] * 10 + [240.0] * 10
    history = {Level.FINGERPRINT: closed(durations)}
    narrow = predict_incident("current", history, NOW, "t", window_seconds=120)
    wide = predict_incident("current", history, NOW, "t", window_seconds=300)
    assert narrow.transient_probability == pytest.approx(0.5)
    assert wide.transient_probability == pytest.approx(1.0)
    assert narrow.window_seconds == 120


def test_open_incidents_are_censored_and_lower_the_transient_probability() -> None:
    # 10 short episodes ended by themselves; 10 more opened an hour ago and are still open.
    short = closed([60.0] * 10)
    still_open = [Episode(f"open-{n}", NOW - 3600) for n in range(10)]
    ignored_open = predict_incident("current", {Level.FINGERPRINT: short}, NOW, "t")
    censored = predict_incident("current", {Level.FINGERPRINT: short + still_open}, NOW, "t")
    assert ignored_open.transient_probability == pytest.approx(1.0)
    # Kaplan-Meier: at 60 s, 10 of 20 at risk end -> S = 0.5; the open ones never end.
    assert censored.transient_probability == pytest.approx(0.5)
    assert censored.median_seconds == 60.0
    assert censored.p90_seconds is None  # only known to be longer than an hour
    assert censored.episodes == 20
    assert censored.resolved_episodes == 10


def test_censoring_differs_from_dropping_and_from_counting_as_ended() -> None:
    # Ends at 100, 200, 300, 400; one open incident aged 150 s is at risk until then.
    ended = closed([100.0, 200.0, 300.0, 400.0, 500.0])
    young = [Episode("open", NOW - 150)]
    p = predict_incident(
        "current", {Level.FINGERPRINT: ended + young}, NOW, "t", window_seconds=250
    )
    # S(250) = (1 - 1/6)(1 - 1/4) = 0.625 (the open one left the risk set at 150 s).
    assert p.transient_probability == pytest.approx(1 - 0.625)
    dropped = predict_incident("current", {Level.FINGERPRINT: ended}, NOW, "t", window_seconds=250)
    assert dropped.transient_probability == pytest.approx(0.4)


def test_a_person_resolving_is_censored_not_a_self_resolution() -> None:
    by_people = closed([30.0] * 10, self_resolved=False)
    by_itself = closed([3600.0] * 10)
    p = predict_incident("current", {Level.FINGERPRINT: by_people + by_itself}, NOW, "t")
    assert p.transient_probability == 0.0
    assert p.resolved_episodes == 10


def test_falls_back_to_alertname_and_service_then_alertname() -> None:
    few = closed([60.0] * 3)
    many = closed(around(600, 8, 3))
    p = predict_incident("current", {Level.FINGERPRINT: few, Level.NAME_SERVICE: many}, NOW, "t")
    assert p.level == "alertname+service"
    assert p.episodes == 8
    q = predict_incident(
        "current",
        {Level.FINGERPRINT: few, Level.NAME_SERVICE: few, Level.NAME: many},
        NOW,
        "t",
    )
    assert q.level == "alertname"


def test_too_little_history_gives_no_estimate() -> None:
    p = predict_incident("current", {Level.FINGERPRINT: closed([60.0] * 4)}, NOW, "t")
    assert not p.enough_history
    assert p.level == "none"
    assert p.episodes == 4
    assert p.transient_probability is None
    assert p.median_seconds is None
    assert p.min_episodes == 5


def test_the_incident_itself_is_left_out_of_its_history() -> None:
    history = [*closed([60.0] * 4), Episode("current", NOW - 5)]
    p = predict_incident("current", {Level.FINGERPRINT: history}, NOW, "t")
    assert p.episodes == 4
    assert not p.enough_history


def test_kaplan_meier_by_hand() -> None:
    # Textbook example: ends at 1, 3, 3 (two), censored at 2 and 4, end at 5.
    curve = kaplan_meier([1, 2, 3, 3, 4, 5], [True, False, True, True, False, True])
    assert curve.times == (1, 3, 5)
    assert curve.survival == pytest.approx((5 / 6, 5 / 6 * (1 - 2 / 4), 0.0))
    assert curve.survival_at(0.5) == 1.0
    assert curve.survival_at(3) == pytest.approx(5 / 12)
    assert curve.quantile(0.5) == 3
    assert curve.quantile(1.0) == 5


def test_kaplan_meier_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="differ"):
        kaplan_meier([1.0], [])
