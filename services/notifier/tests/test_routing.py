"""The routing file: matchers, the tree with `continue`, inheritance, time intervals, errors."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tocsin.notifier.routing import Matcher, RoutesError, load_routing, parse_duration

ROUTES = """
route:
  receiver: default
  group_by: [alertname]
  group_wait: 10s
  routes:
    - matchers: ['severity=~"critical|error"']
      receiver: pager
      group_wait: 1s
      continue: true
      routes:
        - matchers: [team=db]
          receiver: db-pager
    - matchers: ['team!="db"', 'env!~"dev|test"']
      receiver: chat
      mute_time_intervals: [weekend]
receivers:
  - {name: default, type: webhook, url: "http://127.0.0.1:9/"}
  - {name: pager, type: pagerduty, routing_key: rk}
  - {name: db-pager, type: pagerduty, routing_key: rk2}
  - {name: chat, type: slack, url: "http://127.0.0.1:9/"}
time_intervals:
  - name: weekend
    weekdays: ["saturday:sunday"]
inhibit_rules:
  - source_matchers: [severity=critical]
    target_matchers: [severity=warning]
    equal: [service]
"""


def receivers(labels: dict[str, str]) -> list[str]:
    return [route.receiver for route in load_routing(ROUTES).routes_for(labels)]


def test_matchers_cover_equal_not_equal_and_full_match_regexes() -> None:
    labels = {"team": "db", "env": "prod"}
    assert Matcher.parse('team="db"').matches(labels)
    assert Matcher.parse("team!=web").matches(labels)
    assert Matcher.parse('env=~"pr.*"').matches(labels)
    assert not Matcher.parse('env=~"pr"').matches(labels)  # full match, not search
    assert Matcher.parse('env!~"dev|test"').matches(labels)
    assert Matcher.parse("missing=").matches(labels)  # an absent label is empty


def test_deepest_matching_route_wins_and_continue_reaches_the_next_sibling() -> None:
    assert receivers({"severity": "critical", "team": "db"}) == ["db-pager"]
    assert receivers({"severity": "critical", "team": "web", "env": "prod"}) == ["pager", "chat"]
    assert receivers({"severity": "info", "team": "db"}) == ["default"]


def test_children_inherit_timers_and_group_by_unless_they_set_their_own() -> None:
    config = load_routing(ROUTES)
    [pager] = config.routes_for({"severity": "critical", "team": "web", "env": "dev"})
    assert (pager.group_wait, pager.group_by, pager.repeat_interval) == (1.0, ("alertname",), 14400)
    [db] = config.routes_for({"severity": "critical", "team": "db"})
    assert db.group_wait == 1.0
    assert config.root.group_interval == 300


def test_mute_time_interval_mutes_its_route_only_inside_the_interval() -> None:
    config = load_routing(ROUTES)
    [chat] = config.routes_for({"severity": "info", "team": "web"})
    saturday = datetime(2026, 1, 3, 12, 0, tzinfo=UTC)
    monday = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    assert config.muted_by_time(chat, saturday)
    assert not config.muted_by_time(chat, monday)


def test_inhibit_rule_mutes_a_target_while_an_equal_source_fires_but_never_itself() -> None:
    [rule] = load_routing(ROUTES).inhibit_rules
    source = {"severity": "critical", "service": "db"}
    assert rule.mutes({"severity": "warning", "service": "db"}, [source])
    assert not rule.mutes({"severity": "warning", "service": "web"}, [source])
    assert not rule.mutes(source, [source])


# Two lines declaring receiver `a`, put before the cases that need it.
A = "receivers:\n  - {name: a, type: webhook, url: x}\n"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("route:\n  receiver: nobody\n", 2, "unknown receiver 'nobody'"),
        ("receivers:\n  - {name: a, type: fax}\nroute: {receiver: a}\n", 2, "receiver type"),
        (A + "route:\n  receiver: a\n  routes:\n    - matchers: [team~db]\n", 6, "not a matcher"),
        ("route: [\n", 2, "expected"),
        (A + "route:\n  receiver: a\n  colour: red\n", 5, "unknown key 'colour'"),
        (A + "route:\n  receiver: a\n  group_wait: soon\n", 5, "group_wait: not a duration"),
        (A + "route:\n  receiver: a\n  mute_time_intervals: [x]\n", 5, "unknown time interval"),
    ],
)
def test_invalid_routing_is_refused_with_the_line_of_the_mistake(
    text: str, line: int, message: str
) -> None:
    with pytest.raises(RoutesError, match=rf"^routes.yaml:{line}: .*{message}"):
        load_routing(text, "routes.yaml")


def test_without_a_file_name_the_error_still_names_the_line() -> None:
    with pytest.raises(RoutesError, match=r"^line 5: group_wait: not a duration"):
        load_routing(A + "route:\n  receiver: a\n  group_wait: soon\n")


@given(st.integers(0, 10_000), st.sampled_from(["ms", "s", "m", "h"]))
def test_durations_parse_in_every_unit(amount: int, unit: str) -> None:
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    assert parse_duration(f"{amount}{unit}") == pytest.approx(amount * scale)


def test_compound_duration_adds_up() -> None:
    assert parse_duration("1h30m") == 5400


def test_a_receivers_retry_budget_replaces_the_global_one_and_a_bad_one_names_its_line() -> None:

    from tocsin.notifier.routesource import activate
    from tocsin.notifier.templating import Templates

    def receivers(budget: str) -> str:
        return f"""
route:
  receiver: hook
receivers:
  - {{name: hook, type: webhook, url: "http://127.0.0.1:9/", retry_budget: {budget}}}
  - {{name: plain, type: webhook, url: "http://127.0.0.1:9/"}}
"""

    active = activate(receivers("30m"), "routes.yaml", Templates(), 5.0)
    assert active.retry_budgets == {"hook": 1800.0}
    with pytest.raises(RoutesError, match=r"routes.yaml:5: receiver 'hook': not a duration"):
        activate(receivers("soon"), "routes.yaml", Templates(), 5.0)
