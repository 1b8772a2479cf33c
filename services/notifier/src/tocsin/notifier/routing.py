"""The routing configuration: a tree of routes, receivers, inhibit rules and time intervals.

Loaded from one YAML file and validated whole; every error names the line it
concerns (from PyYAML's marks), so a bad ConfigMap is fixed in one look. The
shape follows Alertmanager's, which users already know:

    route:                      # the root matches every alert
      receiver: default
      group_by: [alertname, service]
      group_wait: 30s           # defaults: 30s, 5m, 4h
      group_interval: 5m
      repeat_interval: 4h
      routes:
        - matchers: ['severity="critical"', 'team=~"db|infra"']
          receiver: pager
          continue: true
          mute_time_intervals: [nights]
    receivers:
      - name: pager
        type: pagerduty
        routing_key: ...
    inhibit_rules:
      - source_matchers: [severity=critical]
        target_matchers: [severity=warning]
        equal: [service]
    time_intervals:
      - name: nights
        times: [{start_time: "22:00", end_time: "06:00"}]
        weekdays: ["monday:friday"]
        location: Europe/Paris

Over 400 lines: one configuration's schema and its validation; the parts are
checked against each other (receivers named by routes, intervals named by mutes).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from tocsin.common.errors import ConfigError
from tocsin.common.regex import LabelRegex, UnsupportedRegexError, compile_label_regex
from tocsin.notifier.autopause import PausePolicy, parse_pause_policy

__all__ = [
    "InhibitRule",
    "Matcher",
    "Receiver",
    "Route",
    "RoutesError",
    "RoutingConfig",
    "TimeInterval",
    "alert_labels",
    "load_routing",
    "parse_duration",
]

RECEIVER_TYPES = ("webhook", "slack", "email", "pagerduty", "msteams")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_MATCHER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")
_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


class RoutesError(ConfigError):
    """The routing file is invalid; the message names the line (and the file, when known)."""


def parse_duration(text: str) -> float:
    """`30s`, `5m`, `4h`, `1h30m`, `250ms` -> seconds."""
    text = text.strip()
    if not text or _DURATION.sub("", text):
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 5m, 4h, 250ms)")
    return sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(text))


def alert_labels(alert: Any) -> dict[str, str]:
    """An alert's labels plus `alertname`, `severity`, `service` and `source`, for routing."""
    labels = {
        "alertname": alert.name,
        "severity": alert.severity,
        "service": alert.service,
        "source": alert.source,
    }
    labels.update(alert.labels)
    return labels


@dataclass(frozen=True)
class Matcher:
    """One label matcher: `name = value`, `!=`, `=~` (full-match RE2 regex) or `!~`."""

    name: str
    op: str
    value: str
    pattern: LabelRegex | None = None

    @classmethod
    def parse(cls, text: str) -> Matcher:
        match = _MATCHER.match(text)
        if match is None:
            raise ValueError(f"not a matcher: {text!r} (use name=value, !=, =~ or !~)")
        name, op, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        pattern = None
        if op in ("=~", "!~"):
            try:
                pattern = compile_label_regex(value)
            except UnsupportedRegexError as exc:
                raise ValueError(f"bad regular expression {value!r}: {exc}") from None
        return cls(name, op, value, pattern)

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self.pattern is not None
        found = self.pattern.fullmatch(actual)
        return found if self.op == "=~" else not found


def _all_match(matchers: Sequence[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


@dataclass(frozen=True)
class TimeInterval:
    """Named periods (times of day within weekdays, in a time zone) for mute/active routes."""

    name: str
    times: tuple[tuple[time, time], ...] = ()
    weekdays: frozenset[int] = frozenset()
    location: ZoneInfo | None = None

    def contains(self, moment: datetime) -> bool:
        local = moment.astimezone(self.location) if self.location else moment
        if self.weekdays and local.weekday() not in self.weekdays:
            return False
        if not self.times:
            return True
        now = local.time()
        for start, end in self.times:
            # An interval whose end is before its start wraps past midnight.
            inside = start <= now < end if start <= end else (now >= start or now < end)
            if inside:
                return True
        return False


@dataclass(frozen=True)
class Receiver:
    """A named receiver: its type and its type-specific options (validated by the type)."""

    name: str
    type: str
    options: Mapping[str, Any]
    line: int


@dataclass(frozen=True)
class Route:
    """One node of the routing tree, with the settings it inherits resolved."""

    path: str
    receiver: str
    matchers: tuple[Matcher, ...]
    group_by: tuple[str, ...]
    group_wait: float
    group_interval: float
    repeat_interval: float
    continue_: bool
    mute_time_intervals: tuple[str, ...]
    active_time_intervals: tuple[str, ...]
    routes: tuple[Route, ...] = ()
    # Hold likely-transient pages (tocsin.notifier.autopause); inherited, `false` opts out.
    pause_if_transient: PausePolicy | None = None

    def group_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        # `...` groups by every label, as in Alertmanager.
        if "..." in self.group_by:
            return dict(sorted(labels.items()))
        return {name: labels.get(name, "") for name in self.group_by}

    def match(self, labels: Mapping[str, str]) -> list[Route]:
        """The deepest matching routes below (and including) this one, honouring `continue`."""
        if not _all_match(self.matchers, labels):
            return []
        found: list[Route] = []
        for child in self.routes:
            reached = child.match(labels)
            if reached:
                found.extend(reached)
                if not child.continue_:
                    break
        return found or [self]


@dataclass(frozen=True)
class InhibitRule:
    """While a `source` alert fires, `target` alerts with the same `equal` labels are muted."""

    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...]

    def mutes(self, target: Mapping[str, str], firing: Sequence[Mapping[str, str]]) -> bool:
        if not _all_match(self.target, target):
            return False
        for source in firing:
            # An alert never mutes itself, even when it matches both sides.
            if source == target or not _all_match(self.source, source):
                continue
            if all(source.get(n, "") == target.get(n, "") for n in self.equal):
                return True
        return False


@dataclass(frozen=True)
class RoutingConfig:
    """The whole validated routing file."""

    root: Route
    receivers: Mapping[str, Receiver]
    inhibit_rules: tuple[InhibitRule, ...] = ()
    time_intervals: Mapping[str, TimeInterval] = field(default_factory=dict)

    def routes_for(self, labels: Mapping[str, str]) -> list[Route]:
        return self.root.match(labels)

    def muted_by_time(self, route: Route, moment: datetime) -> bool:
        if any(self.time_intervals[n].contains(moment) for n in route.mute_time_intervals):
            return True
        active = route.active_time_intervals
        return bool(active) and not any(self.time_intervals[n].contains(moment) for n in active)


# -- loading -------------------------------------------------------------------------------


class _Loader:
    """Walks the composed YAML node tree, so each error can carry the node's line."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, node: yaml.Node, message: str) -> RoutesError:
        where = f"{self.source}:" if self.source else "line "
        return RoutesError(f"{where}{node.start_mark.line + 1}: {message}")

    def mapping(self, node: yaml.Node, what: str) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{what} must be a mapping")
        result: dict[str, yaml.Node] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                raise self.error(key, f"{what}: keys must be strings")
            result[str(key.value)] = value
        return result

    def check_keys(
        self, node: yaml.Node, items: Mapping[str, yaml.Node], allowed: set[str], what: str
    ) -> None:
        for key, value in items.items():
            if key not in allowed:
                raise self.error(value, f"{what}: unknown key {key!r}")

    def scalar(self, node: yaml.Node, what: str) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, f"{what} must be a single value")
        return str(node.value)

    def strings(self, node: yaml.Node, what: str) -> list[str]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, f"{what} must be a list")
        return [self.scalar(item, what) for item in node.value]

    def duration(self, node: yaml.Node, what: str) -> float:
        try:
            return parse_duration(self.scalar(node, what))
        except ValueError as exc:
            raise self.error(node, f"{what}: {exc}") from None

    def matchers(self, node: yaml.Node, what: str) -> tuple[Matcher, ...]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, f"{what} must be a list")
        result = []
        for item in node.value:
            try:
                result.append(Matcher.parse(self.scalar(item, what)))
            except ValueError as exc:
                raise self.error(item, f"{what}: {exc}") from None
        return tuple(result)

    def to_python(self, node: yaml.Node) -> Any:
        if isinstance(node, yaml.MappingNode):
            return {str(k.value): self.to_python(v) for k, v in node.value}
        if isinstance(node, yaml.SequenceNode):
            return [self.to_python(v) for v in node.value]
        return yaml.safe_load(yaml.serialize(node))

    def route(
        self,
        node: yaml.Node,
        parent: Route | None,
        path: str,
        intervals: set[str],
        receivers: set[str],
    ) -> Route:
        items = self.mapping(node, "route")
        allowed = {
            "receiver",
            "matchers",
            "group_by",
            "group_wait",
            "group_interval",
            "repeat_interval",
            "continue",
            "mute_time_intervals",
            "active_time_intervals",
            "routes",
            "pause_if_transient",
        }
        self.check_keys(node, items, allowed, "route")
        if parent is None and "matchers" in items:
            raise self.error(items["matchers"], "the root route matches every alert: no matchers")
        receiver = self.scalar(items["receiver"], "receiver") if "receiver" in items else None
        if receiver is None:
            if parent is None:
                raise self.error(node, "the root route needs a receiver")
            receiver = parent.receiver
        elif receiver not in receivers:
            raise self.error(items["receiver"], f"unknown receiver {receiver!r}")
        names: dict[str, tuple[str, ...]] = {}
        for key in ("mute_time_intervals", "active_time_intervals"):
            names[key] = tuple(self.strings(items[key], key)) if key in items else ()
            for name in names[key]:
                if name not in intervals:
                    raise self.error(items[key], f"{key}: unknown time interval {name!r}")
        cont = False
        if "continue" in items:
            raw = self.scalar(items["continue"], "continue").lower()
            if raw not in ("true", "false"):
                raise self.error(items["continue"], "continue must be true or false")
            cont = raw == "true"

        def timer(key: str, default: float) -> float:
            if key in items:
                value = self.duration(items[key], key)
                if value <= 0:
                    raise self.error(items[key], f"{key} must be positive")
                return value
            return default

        route = Route(
            path=path,
            receiver=receiver,
            matchers=self.matchers(items["matchers"], "matchers") if "matchers" in items else (),
            group_by=tuple(self.strings(items["group_by"], "group_by"))
            if "group_by" in items
            else (parent.group_by if parent else ("alertname",)),
            group_wait=timer("group_wait", parent.group_wait if parent else 30.0),
            group_interval=timer("group_interval", parent.group_interval if parent else 300.0),
            repeat_interval=timer(
                "repeat_interval", parent.repeat_interval if parent else 4 * 3600.0
            ),
            continue_=cont,
            mute_time_intervals=names["mute_time_intervals"],
            active_time_intervals=names["active_time_intervals"],
            pause_if_transient=self.pause_policy(items, parent),
        )
        if "routes" in items:
            children = items["routes"]
            if not isinstance(children, yaml.SequenceNode):
                raise self.error(children, "routes must be a list")
            subroutes = tuple(
                self.route(child, route, f"{path}.{index}", intervals, receivers)
                for index, child in enumerate(children.value)
            )
            route = Route(**{**route.__dict__, "routes": subroutes})
        return route

    def pause_policy(self, items: dict[str, yaml.Node], parent: Route | None) -> PausePolicy | None:
        if "pause_if_transient" not in items:
            return parent.pause_if_transient if parent else None
        node = items["pause_if_transient"]
        try:
            return parse_pause_policy(self.to_python(node), parse_duration)
        except ValueError as exc:
            raise self.error(node, str(exc)) from None

    def receiver(self, node: yaml.Node) -> Receiver:
        items = self.mapping(node, "receiver")
        if "name" not in items:
            raise self.error(node, "a receiver needs a name")
        if "type" not in items:
            raise self.error(node, f"receiver needs a type (one of {', '.join(RECEIVER_TYPES)})")
        kind = self.scalar(items["type"], "type")
        if kind not in RECEIVER_TYPES:
            raise self.error(items["type"], f"unknown receiver type {kind!r}")
        options = {k: self.to_python(v) for k, v in items.items() if k not in ("name", "type")}
        return Receiver(self.scalar(items["name"], "name"), kind, options, node.start_mark.line + 1)

    def time_interval(self, node: yaml.Node) -> TimeInterval:
        items = self.mapping(node, "time interval")
        self.check_keys(node, items, {"name", "times", "weekdays", "location"}, "time interval")
        if "name" not in items:
            raise self.error(node, "a time interval needs a name")
        times: list[tuple[time, time]] = []
        if "times" in items:
            if not isinstance(items["times"], yaml.SequenceNode):
                raise self.error(items["times"], "times must be a list")
            for item in items["times"].value:
                span = self.mapping(item, "times entry")
                try:
                    start = time.fromisoformat(self.scalar(span["start_time"], "start_time"))
                    end = time.fromisoformat(self.scalar(span["end_time"], "end_time"))
                except (KeyError, ValueError):
                    raise self.error(item, "times need start_time and end_time as HH:MM") from None
                times.append((start, end))
        weekdays: set[int] = set()
        for text in self.strings(items["weekdays"], "weekdays") if "weekdays" in items else []:
            first, _, last = text.lower().partition(":")
            try:
                a = _WEEKDAYS.index(first)
                b = _WEEKDAYS.index(last) if last else a
            except ValueError:
                raise self.error(items["weekdays"], f"unknown weekday in {text!r}") from None
            weekdays.update(range(a, b + 1))
        location = None
        if "location" in items:
            try:
                location = ZoneInfo(self.scalar(items["location"], "location"))
            except (ZoneInfoNotFoundError, ValueError):
                raise self.error(items["location"], "unknown time zone") from None
        return TimeInterval(
            self.scalar(items["name"], "name"), tuple(times), frozenset(weekdays), location
        )


def load_routing(text: str, source: str = "") -> RoutingConfig:
    """Parse and validate a routing file; raises `RoutesError` naming the line."""
    loader = _Loader(source)
    try:
        document = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else 0
        where = f"{source}:" if source else "line "
        raise RoutesError(f"{where}{line}: {exc.problem}") from None
    if document is None:
        raise RoutesError(f"{source or 'routing file'}: empty")
    top = loader.mapping(document, "the routing file")
    loader.check_keys(
        document, top, {"route", "receivers", "inhibit_rules", "time_intervals"}, "the routing file"
    )
    receivers: dict[str, Receiver] = {}
    if "receivers" in top:
        if not isinstance(top["receivers"], yaml.SequenceNode):
            raise loader.error(top["receivers"], "receivers must be a list")
        for node in top["receivers"].value:
            receiver = loader.receiver(node)
            if receiver.name in receivers:
                raise loader.error(node, f"duplicate receiver {receiver.name!r}")
            receivers[receiver.name] = receiver
    intervals: dict[str, TimeInterval] = {}
    if "time_intervals" in top:
        if not isinstance(top["time_intervals"], yaml.SequenceNode):
            raise loader.error(top["time_intervals"], "time_intervals must be a list")
        for node in top["time_intervals"].value:
            interval = loader.time_interval(node)
            intervals[interval.name] = interval
    if "route" not in top:
        raise loader.error(document, "the routing file needs a `route`")
    root = loader.route(top["route"], None, "0", set(intervals), set(receivers))
    rules: list[InhibitRule] = []
    if "inhibit_rules" in top:
        if not isinstance(top["inhibit_rules"], yaml.SequenceNode):
            raise loader.error(top["inhibit_rules"], "inhibit_rules must be a list")
        for node in top["inhibit_rules"].value:
            items = loader.mapping(node, "inhibit rule")
            loader.check_keys(
                node, items, {"source_matchers", "target_matchers", "equal"}, "inhibit rule"
            )
            if "source_matchers" not in items or "target_matchers" not in items:
                raise loader.error(node, "an inhibit rule needs source_ and target_matchers")
            rules.append(
                InhibitRule(
                    loader.matchers(items["source_matchers"], "source_matchers"),
                    loader.matchers(items["target_matchers"], "target_matchers"),
                    tuple(loader.strings(items["equal"], "equal")) if "equal" in items else (),
                )
            )
    return RoutingConfig(root, receivers, tuple(rules), intervals)
