"""The hand-written Kaplan-Meier estimator agrees with lifelines' on random censored samples.

`tocsin.scheduler.prediction.survival` exists for speed and image weight; this
differential test is where the well-kept library is the reference.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tocsin.scheduler.prediction.survival import kaplan_meier

lifelines = pytest.importorskip("lifelines", reason="lifelines is a test dependency")

samples = st.lists(
    st.tuples(
        # Rounded so that ties (several ends or censorings at one time) are common.
        st.integers(min_value=0, max_value=40).map(lambda n: n * 15.0),
        st.booleans(),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=60)
@pytest.mark.filterwarnings("ignore::lifelines.exceptions.ApproximationWarning")
@given(samples)
def test_survival_matches_lifelines_at_every_time(sample: list[tuple[float, bool]]) -> None:
    durations = [d for d, _ in sample]
    observed = [o for _, o in sample]
    ours = kaplan_meier(durations, observed)
    fitter = lifelines.KaplanMeierFitter().fit(durations, event_observed=observed)
    for t in [*sorted(set(durations)), 7.5, 300.0, 1000.0]:
        expected = float(fitter.survival_function_at_times(t).iloc[0])
        assert ours.survival_at(t) == pytest.approx(expected, abs=1e-9), t


@settings(max_examples=60)
@pytest.mark.filterwarnings("ignore::lifelines.exceptions.ApproximationWarning")
@given(samples, st.sampled_from([0.5, 0.9]))
def test_quantiles_match_lifelines(sample: list[tuple[float, bool]], share: float) -> None:
    durations = [d for d, _ in sample]
    observed = [o for _, o in sample]
    ours = kaplan_meier(durations, observed).quantile(share)
    fitter = lifelines.KaplanMeierFitter().fit(durations, event_observed=observed)
    theirs = float(fitter.percentile(1.0 - share))
    curve = fitter.survival_function_["KM_estimate"]
    if not any(abs(value - (1.0 - share)) < 1e-9 for value in curve):
        assert ours == (None if math.isinf(theirs) else pytest.approx(theirs))
    else:
        # lifelines computes 1 - 3/6 as 0.5000000000000001 and so steps past a
        # curve that lands exactly on the threshold; the definition, first t
        # with S(t) <= 1 - share, is checked on its curve with a tolerance.
        first = next(t for t, value in curve.items() if value <= 1.0 - share + 1e-9)
        assert ours == pytest.approx(first)
