"""Silence matchers and states, as Alertmanager defines them."""

from __future__ import annotations

import pytest

from tocsin.common.errors import UnsupportedRegexError
from tocsin.common.silences import Matcher, Silence, SilenceSet, silence_state


def silence(*matchers: Matcher, starts: float = 0.0, ends: float = 100.0) -> Silence:
    return Silence(
        id="s", matchers=list(matchers), startsAt="", endsAt="", starts_ts=starts, ends_ts=ends
    )


@pytest.mark.parametrize(
    ("matcher", "labels", "expected"),
    [
        (Matcher(name="env", value="prod"), {"env": "prod"}, True),
        (Matcher(name="env", value="prod"), {"env": "production"}, False),
        (Matcher(name="env", value="prod", isEqual=False), {"env": "dev"}, True),
        (Matcher(name="env", value="prod", isEqual=False), {}, True),
        (Matcher(name="env", value="prod|stag.*", isRegex=True), {"env": "staging"}, True),
        # Regexes are anchored at both ends.
        (Matcher(name="env", value="prod", isRegex=True), {"env": "preprod"}, False),
        (Matcher(name="env", value="prod", isRegex=True), {"env": "prod-2"}, False),
        (Matcher(name="env", value="de.*", isRegex=True, isEqual=False), {"env": "prod"}, True),
        # A missing label is the empty string.
        (Matcher(name="env", value="", isRegex=False), {}, True),
        (Matcher(name="env", value=".*", isRegex=True), {}, True),
    ],
)
def test_matcher_ops_follow_alertmanager(
    matcher: Matcher, labels: dict[str, str], expected: bool
) -> None:
    assert matcher.matches(labels) is expected


def test_matcher_op_is_derived_from_the_alertmanager_flags() -> None:
    assert Matcher(name="a", value="b").op == "="
    assert Matcher(name="a", value="b", isEqual=False).op == "!="
    assert Matcher(name="a", value="b", isRegex=True).op == "=~"
    assert Matcher(name="a", value="b", isRegex=True, isEqual=False).op == "!~"


def test_invalid_regex_is_refused_naming_the_matcher_as_invalid_input() -> None:
    with pytest.raises(UnsupportedRegexError, match=r"matcher a: .*invalid regex"):
        Matcher(name="a", value="(", isRegex=True).check()


def test_a_silence_mutes_only_while_active_and_only_when_all_matchers_match() -> None:
    muting = silence(
        Matcher(name="env", value="prod"), Matcher(name="team", value="web", isEqual=False),
        starts=10.0, ends=20.0,
    )  # fmt: skip
    labels = {"env": "prod", "team": "db"}
    assert [silence_state(muting, t) for t in (5.0, 15.0, 20.0)] == [
        "pending",
        "active",
        "expired",
    ]
    assert not muting.mutes(labels, 5.0)
    assert muting.mutes(labels, 15.0)
    assert not muting.mutes(labels, 20.0)
    assert not muting.mutes({"env": "prod", "team": "web"}, 15.0)
    assert SilenceSet([muting]).mutes(labels, 15.0)
    assert not SilenceSet().mutes(labels, 15.0)
