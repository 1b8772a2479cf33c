"""Kaplan-Meier survival curves for right-censored durations.

An incident that is still open, or that a person resolved, did not show when
it would have resolved by itself: its duration is *censored* (it lasted at
least that long). Dropping such incidents would bias every estimate towards
short incidents; counting them as resolved would too. The Kaplan-Meier
estimator uses them exactly as far as they go.

This is a small pure-Python estimator rather than a call into `lifelines`: a
prediction fits a few hundred durations per incident within a 5 ms budget, and
`lifelines` (with pandas, scipy, matplotlib, autograd and formulaic) adds
hundreds of MB to the image and milliseconds of DataFrame overhead per fit.
Its results are pinned to `lifelines` by a differential test
(`tests/test_survival_against_lifelines.py`), which is where the library is used.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["SurvivalCurve", "kaplan_meier"]


@dataclass(frozen=True, slots=True)
class SurvivalCurve:
    """S(t), the probability of still being open after t, as a right-continuous step function.

    `times` are the distinct durations at which at least one incident ended
    (ascending); `survival[i]` is S(t) for `times[i] <= t < times[i + 1]`.
    Before the first time S is 1.
    """

    times: tuple[float, ...]
    survival: tuple[float, ...]

    def survival_at(self, t: float) -> float:
        """S(t): the probability that an incident is still open after `t` seconds."""
        position = bisect.bisect_right(self.times, t)
        return 1.0 if position == 0 else self.survival[position - 1]

    def quantile(self, share: float) -> float | None:
        """The first time by which `share` of incidents have ended (S(t) <= 1 - share).

        None when the curve never gets there: too many incidents outlived the
        longest observed end, so the time is only known to be longer.
        """
        threshold = 1.0 - share
        for time, survival in zip(self.times, self.survival, strict=True):
            # A hair of tolerance: 1 - 15/30 is exactly 0.5 but products of
            # floats may land a bit above it.
            if survival <= threshold + 1e-12:
                return time
        return None


def kaplan_meier(durations: Sequence[float], observed: Sequence[bool]) -> SurvivalCurve:
    """The Kaplan-Meier estimate from `durations`, `observed[i]` False for a censored one.

    A duration censored at the same time as an end counts as still at risk at
    that time (the usual convention, and lifelines').
    """
    if len(durations) != len(observed):
        raise ValueError("durations and observed differ in length")
    pairs = sorted(zip(durations, observed, strict=True))
    at_risk = len(pairs)
    times: list[float] = []
    survival: list[float] = []
    current = 1.0
    index = 0
    while index < len(pairs):
        time = pairs[index][0]
        ended = 0
        leaving = 0
        while index < len(pairs) and pairs[index][0] == time:
            ended += pairs[index][1]
            leaving += 1
            index += 1
        if ended:
            current *= 1.0 - ended / at_risk
            times.append(time)
            survival.append(current)
        at_risk -= leaving
    return SurvivalCurve(tuple(times), tuple(survival))
