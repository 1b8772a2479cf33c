"""Per-receiver rate limits, shared by every replica through Redis; they delay, never drop."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from redis import Redis

from tocsin.common import keys
from tocsin.notifier.routing import parse_duration

__all__ = ["Rate", "RateLimiter"]

_GCRA = (Path(__file__).parent / "ratelimit" / "gcra.lua").read_text()


@dataclass(frozen=True)
class Rate:
    """`count` sends per `period` seconds."""

    count: int
    period: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        """`10/s`, `30/1m`, `100/5m`."""
        count, sep, per = str(text).partition("/")
        try:
            number = int(count)
            period = parse_duration(per if per[:1].isdigit() else f"1{per}")
        except ValueError:
            raise ValueError(
                f"rate_limit is COUNT/PERIOD (e.g. 10/s, 30/1m), got {text!r}"
            ) from None
        if not sep or number <= 0 or period <= 0:
            raise ValueError(f"rate_limit is COUNT/PERIOD (e.g. 10/s, 30/1m), got {text!r}")
        return cls(number, period)


class RateLimiter:
    """Books send slots per receiver; `acquire` says how long to wait when none is free."""

    def __init__(self, redis: Redis) -> None:
        self._script = redis.register_script(_GCRA)

    def acquire(self, receiver: str, rate: Rate) -> float:
        interval_ms = max(1, int(rate.period * 1000 / rate.count))
        wait_ms = self._script(
            keys=[keys.notify_rate(receiver)], args=[interval_ms, interval_ms * rate.count]
        )
        return int(wait_ms) / 1000
