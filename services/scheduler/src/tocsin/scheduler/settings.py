"""Scheduler settings."""

from __future__ import annotations

import dataclasses

from tocsin.common.config import CommonSettings

__all__ = ["DEFAULT_PORT", "SchedulerSettings"]

DEFAULT_PORT = 8084


@dataclasses.dataclass(frozen=True)
class SchedulerSettings(CommonSettings):
    """Settings of the scheduler service."""
