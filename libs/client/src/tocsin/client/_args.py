"""Argument readers the `tocsin` subcommands share."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from tocsin.client._exceptions import ConfigurationError

__all__ = [
    "format_time",
    "parse_duration",
    "parse_labels",
    "parse_matcher",
    "relative_time",
]

# amtool's syntax: name=value, name!=value, name=~regex, name!~regex; the value may be quoted.
_MATCHER = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(?:"(.*)"|(.*?))\s*$')
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(w|d|h|m|s)")
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_labels(pairs: list[str]) -> dict[str, str]:
    """`key=value` arguments as a label map."""
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigurationError(f"labels are key=value, got {pair!r}")
        labels[key] = value
    return labels


def parse_matcher(text: str) -> tuple[str, str, str]:
    """`name=value`, `name!=value`, `name=~regex` or `name!~regex` as (name, op, value)."""
    match = _MATCHER.match(text)
    if match is None:
        raise ConfigurationError(
            f"matchers are name=value, name!=value, name=~regex or name!~regex, got {text!r}"
        )
    name, op, quoted, bare = match.groups()
    return name, op, quoted if quoted is not None else bare


def parse_duration(text: str) -> float:
    """`2h`, `90m`, `1h30m`, `1d`, `1w` as seconds."""
    cleaned = text.strip()
    if not cleaned or _DURATION.sub("", cleaned) or not _DURATION.search(cleaned):
        raise ConfigurationError(f"not a duration: {text!r} (use e.g. 30m, 2h, 1h30m, 1d)")
    seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(cleaned))
    if seconds <= 0:
        raise ConfigurationError(f"a duration must be positive, got {text!r}")
    return seconds


def format_time(timestamp: float | str | bytes | None) -> str:
    """An epoch time as RFC 3339 UTC to the second, or `-` when there is none."""
    if not timestamp:
        return "-"
    return datetime.fromtimestamp(float(timestamp), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def relative_time(when: str | float | None, now: datetime | None = None) -> str:
    """`5m ago` / `in 2h` for an RFC 3339 string or epoch seconds; `-` for none."""
    if not when:
        return "-"
    try:
        moment = (
            datetime.fromtimestamp(float(when), UTC)
            if isinstance(when, (int, float))
            else datetime.fromisoformat(str(when).replace("Z", "+00:00"))
        )
    except ValueError:
        return str(when)
    delta = ((now or datetime.now(UTC)) - moment).total_seconds()
    magnitude = abs(delta)
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    amount = f"{int(magnitude)}s"
    for index, (unit, size) in enumerate(units[:-1]):
        if magnitude >= size:
            # Two units, as people say it: 1h59m, 2d3h.
            rest_unit, rest_size = units[index + 1]
            rest = int(magnitude % size // rest_size)
            amount = f"{int(magnitude // size)}{unit}" + (f"{rest}{rest_unit}" if rest else "")
            break
    return f"{amount} ago" if delta >= 0 else f"in {amount}"
