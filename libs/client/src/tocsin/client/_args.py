"""Argument readers the `tocsin` subcommands share."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from tocsin.client._devstate import read_dev_state
from tocsin.client._exceptions import ConfigurationError

__all__ = ["format_time", "parse_labels", "redis_url"]


def parse_labels(pairs: list[str]) -> dict[str, str]:
    """`key=value` arguments as a label map."""
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigurationError(f"labels are key=value, got {pair!r}")
        labels[key] = value
    return labels


def redis_url(flag: str | None) -> str:
    """The Redis URL from `--redis-url`, else `REDIS_URL`, else the running `tocsin dev`."""
    url = flag or os.environ.get("REDIS_URL") or read_dev_state().get("redis_url", "")
    if not isinstance(url, str) or not url:
        raise ConfigurationError("no Redis: pass --redis-url, set REDIS_URL, or run `tocsin dev`")
    return url


def format_time(timestamp: float | str | bytes | None) -> str:
    """An epoch time as RFC 3339 UTC to the second, or `-` when there is none."""
    if not timestamp:
        return "-"
    return datetime.fromtimestamp(float(timestamp), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
