"""Property tests: the matcher parser and the group-timer state machine."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from tocsin.notifier.grouping import GroupState, plan_flush
from tocsin.notifier.routing import Matcher

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)
values = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30).filter(
    lambda v: v == v.strip() and '"' not in v
)


@given(names, st.sampled_from(["=", "!="]), values, values)
def test_equality_matchers_parse_back_and_decide_like_python(
    name: str, op: str, value: str, actual: str
) -> None:
    matcher = Matcher.parse(f'{name}{op}"{value}"')
    assert (matcher.name, matcher.op, matcher.value) == (name, op, value)
    assert matcher.matches({name: actual}) == ((actual == value) == (op == "="))


@given(names, values, values)
def test_regex_matchers_are_anchored_and_negation_is_the_complement(
    name: str, value: str, actual: str
) -> None:
    pattern = re.escape(value)
    positive = Matcher.parse(f'{name}=~"{pattern}"')
    negative = Matcher.parse(f'{name}!~"{pattern}"')
    assert positive.matches({name: actual}) == (actual == value)
    assert negative.matches({name: actual}) != positive.matches({name: actual})


hashes = st.sampled_from(["", "h1", "h2"])


@given(hashes, hashes, st.integers(0, 5), st.floats(0, 1e6), st.floats(0, 1e5), st.booleans())
def test_group_timer_invariants(
    firing: str, last: str, resolved: int, sent_at: float, elapsed: float, notified: bool
) -> None:
    state = GroupState(seq=1, last_firing=last, last_sent_at=sent_at if notified else 0.0)
    repeat_interval = 3600.0
    now = state.last_sent_at + elapsed
    plan = plan_flush(
        state, firing_hash=firing, resolved=resolved, now=now, repeat_interval=repeat_interval
    )
    if not firing and not (resolved and state.notified):
        assert not plan.send  # nothing firing and nothing news: silence
    if plan.repeat:
        assert firing == last  # a repeat is of an unchanged state...
        assert elapsed >= repeat_interval  # ...never before repeat_interval
    if firing and firing != last:
        assert plan.send  # a changed firing set is always notified
