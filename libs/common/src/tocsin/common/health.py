"""The stored health report: the shape the scheduler writes and the gateway serves.

The scheduler computes the 0-100 score (`tocsin.scheduler.healthscore`, formula
in docs/health.md) and stores the report as JSON at `tocsin:health`; the
gateway's `GET /v1/health` reads it back with `load_report`. The inputs every
process counts are `tocsin.common.metrics.health_signals`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["ComponentScore", "HealthReport", "load_report"]


@dataclass(frozen=True)
class ComponentScore:
    """One component's value, its 0-1 score, its weight and its contribution to the total."""

    name: str
    value: float | None
    unit: str
    score: float
    weight: float
    contribution: float


@dataclass(frozen=True)
class HealthReport:
    """The score and how it was made; `pulled_down_by` says, per component that costs
    points, how many and why, worst first (empty at 100)."""

    score: int
    computed_at: float
    window_seconds: int
    components: tuple[ComponentScore, ...]
    pulled_down_by: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


def load_report(raw: bytes | str | None) -> dict[str, Any] | None:
    """The stored report as a dict, or None when none was stored yet."""
    if raw is None:
        return None
    loaded: dict[str, Any] = json.loads(raw)
    return loaded
